"""The teaching tabs' handlers, called as the page calls them: the Augmentation tab, the Matching tab's choice of
SSD300 / SSD512 default boxes, and the Default boxes tab on an uploaded photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import ssd
from bench.app_server import export_random_weights, received_dir, settled
from visualize.matching import GroundTruth, match_ground_truth

gr = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from ui.demo_models import DemoModel

    return settled(DemoModel.load(export_random_weights(tmp_path_factory.mktemp("weights"))))


@pytest.fixture(scope="module")
def no_model(tmp_path_factory):
    from ui.demo_models import DemoModel

    return DemoModel.load(tmp_path_factory.mktemp("none") / "missing.safetensors")


# -------------------------------------------------------------------------------------------- Augmentation
def test_augmentation_tab_shows_six_steps_and_their_positives(no_model):
    from ui.augment_tab import MIN_IOU, AugmentTab

    tab = AugmentTab(no_model)
    pictures, message, rows = tab.steps("motorcycle", "SSD300", "random, as in training", False, 3.0, 7)
    assert len(pictures) == 6 and all(isinstance(p, Image.Image) for p in pictures)
    assert [r[0] for r in rows] == [*ssd.SSD300_VOC.source_layers, "total"]
    assert rows[-1][2] == sum(r[2] for r in rows[:-1]) > 0
    assert "Zoom out ×3.00" in message and "**SSD300_VOC**, seed 7" in message
    # Same seed, same pictures; the ratio slider is ignored when the zoom-out is random.
    again = tab.steps("motorcycle", "SSD300", "random, as in training", False, 3.0, 7)
    for a, b in zip(pictures, again[0]):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    random_zoom = tab.steps("motorcycle", "SSD300", "random, as in training", True, 1.0, 7)
    assert random_zoom[1] == tab.steps("motorcycle", "SSD300", "random, as in training", True, 4.0, 7)[1]
    # SSD512: its seven layers and its 512x512 input; every crop choice works.
    for choice in MIN_IOU:
        pictures, message, rows = tab.steps("cat", "SSD512", choice, False, 2.0, 1)
        assert len(rows) == 8 and "512×512" in message
    with pytest.raises(gr.Error, match="Unknown crop choice"):
        tab.steps("cat", "SSD300", "0.2", False, 2.0, 1)


def test_augmentation_tab_uses_the_matching_tabs_photo_and_ground_truth(no_model):
    from ui.augment_tab import FROM_MATCHING, AugmentTab
    from ui.matching_tab import MatchingTab

    matching = MatchingTab(no_model)
    state, rows, *_ = matching.load_example("astronaut")
    rows = rows + [["dog", 400, 300, 500, 500], ["cup", 1, 2, 3, 4]]  # one more object, one bad row
    tab = AugmentTab(no_model)
    pictures, message, table = tab.steps(FROM_MATCHING, "SSD300", "no crop (the whole picture)", False, 1.0, 0,
                                          state, rows)
    assert "its 2 objects" in message and "unknown class 'cup'" in message
    assert "No crop (as chosen)" in message
    # Without zoom-out or crop, the input step is the Matching tab's own matching.
    gt = GroundTruth(["person", "dog"], [(20, 15, 380, 512), (400, 300, 500, 500)], 512, 512)
    assert table[-1][2] == int(match_ground_truth(ssd.SSD300_VOC, gt, ssd.VOC_CLASSES).positives.sum())
    with pytest.raises(gr.Error, match="Matching tab has no photo"):
        tab.steps(FROM_MATCHING, "SSD300", "0.5", False, 1.0, 0, None, None)


def test_the_page_has_the_augmentation_tab(no_model):
    import app

    demo = app.build_demo(no_model)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"augment-step-0", "augment-step-5", "augment-table", "augment-message", "priors-upload"} <= ids


# ----------------------------------------------------------------------------------- Matching: SSD512 too
def test_config_choices_put_the_models_own_config_under_its_default_boxes():
    from ui.default_box_choices import config_choices

    assert config_choices(ssd.SSD300_VOC) == {"SSD300": ssd.SSD300_VOC, "SSD512": ssd.SSD512_VOC}
    lite = config_choices(ssd.SSD300_LITE0_VOC)
    assert lite["SSD300"] is ssd.SSD300_LITE0_VOC and lite["SSD512"] is ssd.SSD512_VOC
    coco = config_choices(ssd.SSD300_COCO)  # other scales: other default boxes, offered under its own name
    assert list(coco) == ["SSD300_COCO", "SSD300", "SSD512"]


def test_every_tab_names_the_served_models_layers_and_the_layout_choice_alike():
    """The Default boxes tab draws the served model's own config, so its feature maps carry the names the Detect
    table and Matching use (blocks.11 expand, not VGG's fc7)."""
    import gradio as gr

    from ui import priors_tab
    from ui.default_box_choices import CONFIG_LABEL, config_choices

    configs = config_choices(ssd.SSD300_LITE0_VOC)
    caption = priors_tab.priors_view("SSD300", 1, 7, 9, ["1"], False, "cat", configs=configs)[3]
    assert "of blocks.11 expand · 19×19" in caption
    with gr.Blocks() as demo:
        priors_tab.build(ssd.SSD300_LITE0_VOC)
    (layer,) = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Feature map"]
    assert [label for label, _ in layer.choices][:2] == ["blocks.5 expand · 38×38", "blocks.11 expand · 19×19"]
    (radio,) = [b for b in demo.blocks.values() if isinstance(b, gr.Radio)]
    assert radio.label == CONFIG_LABEL != "Model"


def test_the_layout_choice_has_one_label_on_the_whole_page(model):
    import gradio as gr

    import app
    from ui.default_box_choices import CONFIG_LABEL

    radios = [b.label for b in app.build_demo(model).blocks.values() if isinstance(b, gr.Radio)]
    assert sorted(radios) == sorted(["Model"] + [CONFIG_LABEL] * 3), radios  # the page; boxes, Matching, Augmentation


def test_matching_on_ssd512_and_hard_negatives_only_for_the_models_config(model):
    from ui.matching_tab import MatchingTab

    matching = MatchingTab(model)
    assert [label for label, _ in matching.config_radio().choices] == ["SSD300 (this model)", "SSD512"]
    state, rows, *_ = matching.load_example("motorcycle")
    own = matching.refresh(state, rows, 0.5, True, None, None, None, None, "SSD300")
    assert "Hard negatives: the" in own[1] and len(own[2]) == 7
    other = matching.refresh(state, rows, 0.5, True, None, None, None, None, "SSD512")
    picture, message, table = other[:3]
    assert "Hard negatives need the network's scores" in message and "24564" in message
    assert [r[0] for r in table] == [*ssd.SSD512_VOC.source_layers, "total"]
    gt, _ = matching.ground_truth(state, rows)
    expected = match_ground_truth(ssd.SSD512_VOC, gt, model.class_names, 0.5)
    assert table[-1][3] == int(expected.positives.sum())
    # The heat map and the offsets follow the choice; an index of SSD512's is no positive of SSD300's.
    assert matching.heatmap_only(state, rows, 0.5, 0, "SSD512") is not None
    pos = other[5]["value"] if isinstance(other[5], dict) else other[5].value
    text, image = matching.offsets_only(state, rows, 0.5, pos, "SSD512")
    assert "Default box #" in text and image is not None
    beyond = int(expected.positives[0].nonzero().flatten().max())
    assert beyond >= ssd.SSD300_VOC.num_default_boxes
    assert matching.offsets_only(state, rows, 0.5, beyond, "SSD512")[1] is not None
    assert matching.offsets_only(state, rows, 0.5, beyond, "SSD300") == (gr.skip(), gr.skip())


# --------------------------------------------------------------------------------- Default boxes: uploads
def test_default_boxes_on_an_uploaded_photo():
    from ui import priors_tab

    tmp_path = received_dir()
    photo = tmp_path / "red.png"
    Image.new("RGB", (320, 200), (220, 20, 20)).save(photo)
    data, dropdown = priors_tab.load_upload(str(photo))
    assert isinstance(data, bytes) and dropdown.value is None  # the examples let go of their photo
    picture, cells, summary, caption = priors_tab.priors_view("SSD300", 5, 0, 0, ["1"], False, None, data)
    r, g, b = picture.getpixel((5, 300))  # a corner of the canvas: the dimmed red photo, not the astronaut
    assert r > 100 and g < 40 and b < 40
    example = priors_tab.priors_view("SSD300", 5, 0, 0, ["1"], False, "cat", data)[0]
    assert example.getpixel((5, 300)) != picture.getpixel((5, 300))  # an example, once picked, wins
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="is not an image"):
        priors_tab.load_upload(str(bad))
    assert priors_tab.load_upload(None) == (gr.skip(), gr.skip())


def test_pictures_with_drawn_labels_carry_no_badge_over_their_corner(model):
    """Gradio's label badge sits over a picture's top-left corner, where a box's label ("cat 0.61", "GT 1: cat")
    is drawn for an object near the edge: those pictures have their title above them instead."""
    import gradio as gr

    import app

    images = {b.elem_id: b for b in app.build_demo(model).blocks.values() if isinstance(b, gr.Image)}
    for elem_id in ("detect-output", "live-output", "match-output", "priors-output"):
        assert images[elem_id].show_label is False and images[elem_id].label, elem_id
