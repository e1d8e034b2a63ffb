"""Switching models in the app (ui.demo_models.DemoModels): which weights the page serves, and the Detect and Matching
tabs run by the chosen model, in process (the tabs built around small random-weight models) and through the API
of a running app."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

import ssd
import ssd.detector
from bench.app_server import export_random_weights, running_app
from visualize.matching import match_ground_truth

gr = pytest.importorskip("gradio")

from ui.demo_models import DemoModel, DemoModels, weights_paths  # noqa: E402

A, B = "random_a", "random_b"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two random SSD300s with the same default boxes and different weights; B's card recommends another score
    threshold."""
    d = tmp_path_factory.mktemp("weights")
    return export_random_weights(d, seed=0, name=A), export_random_weights(d, seed=1, name=B, score_threshold=0.2)


@pytest.fixture(scope="module")
def models(weights):
    return DemoModels.load(os.pathsep.join(str(w) for w in weights), "torch")


@pytest.fixture(scope="module")
def photo():
    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8))


def detections(data) -> list:
    return [(d["label"], d["score"], tuple(d["box"])) for d in data["detections"]]


# ------------------------------------------------------------------------------------------ which models
def test_ssd_weights_names_one_file_or_several(weights, tmp_path, caplog):
    a, b = weights
    assert weights_paths(str(a)) == [a]
    assert weights_paths(os.pathsep.join([str(a), str(b), str(a)])) == [a, b]  # each file once
    one = DemoModels.load(str(a), "torch")
    assert one.names == [A] and not one.switchable
    with caplog.at_level(logging.WARNING, logger="ssd.app"):
        two = DemoModels.load(os.pathsep.join([str(tmp_path / "missing.safetensors"), str(b), str(a)]), "torch")
    assert two.names == [B, A] and two.default_name == B  # the first that loads is the default
    assert "left out" in caplog.text and "missing.safetensors" in caplog.text
    # Nothing loads: the first model's message, as without SSD_WEIGHTS' many files.
    none = DemoModels.load(os.pathsep.join([str(tmp_path / "x.safetensors"), str(tmp_path / "y.safetensors")]))
    assert len(none) == 1 and none.default.detector is None and "No model loaded" in none.summary()


def test_by_default_the_shipped_weights_and_every_other_carded_file():
    paths = weights_paths(None)
    assert paths[0] == ssd.detector.DEFAULT_WEIGHTS
    others = {p for p in ssd.detector.WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").exists()}
    assert set(paths[1:]) == others - {ssd.detector.DEFAULT_WEIGHTS}


@pytest.mark.slow
@pytest.mark.skipif(not (ssd.detector.WEIGHTS_DIR / "ssd300_bn_voc07.safetensors").exists()
                    or not ssd.detector.DEFAULT_WEIGHTS.exists(), reason="the shipped weights are missing")
def test_the_shipped_models_read_as_what_they_are():
    shipped = DemoModels.load(None, "torch")
    assert shipped.names[:2] == ["ssd384_lite0_voc07", "ssd300_bn_voc07"] and shipped.switchable
    measured = shipped.models["ssd384_lite0_voc07"].detector.card.val.map_area
    assert shipped.titles["ssd384_lite0_voc07"] == ("SSD384 · EfficientNet-Lite0, ImageNet-pretrained · "
                                                    f"mAP {100 * measured:.1f}")
    assert shipped.titles["ssd300_bn_voc07"] == "SSD300 · VGG16-BN ×0.25 · interim, from scratch · mAP 0.9"
    interim = shipped.summary("ssd300_bn_voc07")
    assert "SSD300_VOC" in interim and "threshold 0.15 (set by hand, not measured)" in interim
    assert "(best F1 there)" in shipped.summary()
    assert shipped.get("ssd300_bn_voc07").default_score == 0.15


def test_one_limit_for_every_model(models):
    a, b = (models.get(n) for n in (A, B))
    assert a.network is b.network
    assert DemoModels.of(a).default is a and DemoModels.of(models) is models


def test_a_model_is_named_by_its_file_or_its_title_and_an_unknown_one_is_refused(models):
    assert models.default_name == A and models.name(None) == models.name("") == A
    assert models.get(B) is models.get(models.titles[B])
    assert models.titles[A] != models.titles[B]  # the same network twice: told apart by the file
    with pytest.raises(gr.Error, match="Unknown model 'nope': this app serves 'random_a', 'random_b'"):
        models.get("nope")


# ------------------------------------------------------------------------------------------------- Detect
def test_detect_runs_the_chosen_model(models, photo):
    from ui.detect_tab import DetectTab

    tab = DetectTab(models)
    *_, default_data, _ = tab.detect(photo, 0.01, 0.45)
    a = tab.detect(photo, 0.01, 0.45, model=A)[2]
    _, _, b, summary = tab.detect(photo, 0.01, 0.45, model=B)
    assert default_data["model_name"] == a["model_name"] == A and b["model_name"] == B
    assert detections(default_data) == detections(a)
    assert detections(a) != detections(b)  # the same photo, two networks
    assert a["model"] == b["model"] == "SSD300_VOC"
    assert summary.endswith(f"model: **{models.titles[B]}**")
    with pytest.raises(gr.Error, match="Unknown model 'nope'"):
        tab.detect(photo, 0.01, 0.45, model="nope")


def test_the_sliders_post_process_with_the_model_that_ran(models, photo):
    from ui.detect_tab import DetectTab

    tab = DetectTab(models)
    *_, state_a = tab.detect_with_state(photo, 0.01, 0.45, 200, [], A)
    assert state_a.model == A
    # The choice moves to B: B's network runs on the photo, the score slider goes to B's threshold.
    switched = tab.on_model(False, None, photo, 0.45, 200, [], B)  # detect_page's outputs, then the slider
    outputs, state_b, slider = switched[:4], switched[4], switched[-1]
    assert state_b.model == B and slider.value == 0.2 == models.get(B).default_score
    assert outputs[2]["model_name"] == B and outputs[2]["score_threshold"] == 0.2
    # A slider moves afterwards: each state is post-processed from its own model's outputs, never mixed.
    moved_a, moved_b = (tab.drawn(s, tab.shown(s, 0.05, 0.45, 200, [])) for s in (state_a, state_b))
    assert moved_a[2]["model_name"] == A and moved_b[2]["model_name"] == B
    assert detections(moved_b[2]) == detections(tab.detect(photo, 0.05, 0.45, 200, [], B)[2])
    assert detections(moved_a[2]) == detections(tab.detect(photo, 0.05, 0.45, 200, [], A)[2])
    assert detections(moved_a[2]) != detections(moved_b[2])
    # No image yet: only the slider moves.
    nothing = tab.on_model(False, None, None, 0.45, 200, [], A)
    assert nothing[:-1] == (gr.skip(),) * 12 and nothing[-1].value == models.get(A).default_score


def test_a_slider_move_post_processes_once_and_a_closed_nms_view_not_at_all(models, photo, monkeypatch):
    from ui.detect_tab import NO_NMS, DetectTab

    tab = DetectTab(models)
    detector = models.get(A).require()
    real, calls = detector.postprocess, []
    monkeypatch.setattr(detector, "postprocess", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tab.detect_page(True, None, photo, 0.05, 0.45, 200, [], A)
    shown, state, (text, rows) = out[:4], out[4], out[5:7]
    assert len(calls) == 1 and "kept by NMS" in text and rows  # the picture, the table and NMS from one pass
    assert detections(shown[2]) == detections(tab.drawn(state, tab.shown(state, 0.05, 0.45, 200, []))[2])
    calls.clear()
    closed = tab.on_sliders(state, False, None, 0.1, 0.45, 200, [])
    assert len(calls) == 1 and closed[4:7] == NO_NMS and closed[2]["score_threshold"] == 0.1
    calls.clear()
    opened = tab.on_sliders(state, True, None, 0.1, 0.45, 200, [])
    assert len(calls) == 1
    assert opened[4:6] == tab.nms_view(state, None, 0.1, 0.45, 200, [])[:2]
    assert "above score 0.10" in opened[4]
    assert tab.on_sliders(None, True, None, 0.1, 0.45, 200, []) == (gr.skip(),) * 11


def test_the_live_view_runs_the_chosen_model(models):
    from ui.detect_tab import DetectTab

    tab = DetectTab(models)
    frame = np.random.default_rng(4).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    found_a = tab.live(frame, 0.01, 0.45, 5, [], A)[1].split(" · ")[0]
    found_b = tab.live(frame, 0.01, 0.45, 5, [], B)[1].split(" · ")[0]
    assert found_a == tab.live(frame, 0.01, 0.45, 5, [])[1].split(" · ")[0]  # no choice: the default
    assert found_a != found_b


# ----------------------------------------------------------------------------------------------- Matching
def test_hard_negatives_and_detections_as_ground_truth_come_from_the_chosen_model(models):
    from ui.matching_tab import MatchingTab

    matching = MatchingTab(models)
    state, rows, *_ = matching.load_example("astronaut")
    gt, _ = matching.ground_truth(state, rows)
    m = match_ground_truth(ssd.SSD300_VOC, gt, ssd.VOC_CLASSES, 0.5)
    neg_a, note_a = matching.hard_negatives(state, m, A)
    neg_b, note_b = matching.hard_negatives(state, m, B)
    assert neg_a.sum() == neg_b.sum() == 3 * m.positives.sum()  # 3:1 for both ...
    assert not torch.equal(neg_a, neg_b)  # ... but each network's own hardest background boxes
    assert set(state.background) == {A, B}  # one forward pass per model, kept for the photo
    assert models.titles[B] in note_b and models.titles[A] in note_a
    background_b = state.background[B]
    assert torch.equal(matching.hard_negatives(state, m, B)[0], neg_b) and state.background[B] is background_b
    out = matching.refresh(state, rows, 0.5, True, None, None, None, None, "SSD300", B)
    assert models.titles[B] in out[1]
    rows_a, note_a = matching.detections_as_gt(state, 0.05, 0.45, A)
    rows_b, note_b = matching.detections_as_gt(state, 0.05, 0.45, B)
    assert rows_a != rows_b and models.titles[B] in note_b
    with pytest.raises(gr.Error, match="Unknown model"):
        matching.refresh(state, rows, 0.5, True, None, None, None, None, "SSD300", "nope")


@pytest.mark.slow
def test_the_config_choice_follows_the_chosen_model(models, tmp_path):
    """A model with SSD512's default boxes: its own config is SSD512, and only there are its hard negatives."""
    from ui.matching_tab import MatchingTab

    torch.manual_seed(2)
    cfg = ssd.SSD512_VOC.replace(batch_norm=True, width=0.25)
    path = ssd.export_weights(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, tmp_path / "random_512.safetensors")
    both = DemoModels({**models.models, "random_512": DemoModel.load(path, "torch")})
    matching = MatchingTab(both)
    assert [label for label, _ in matching.config_radio(A).choices] == ["SSD300 (this model)", "SSD512"]
    radio = matching.on_model("random_512", "SSD300")
    assert [label for label, _ in radio.choices] == ["SSD300", "SSD512 (this model)"]
    assert radio.value == "SSD300"  # the visitor's choice of default boxes stays
    assert matching.config_radio("random_512").value == "SSD512"
    assert matching.config_for(None, "random_512") is both.get("random_512").config
    state, rows, *_ = matching.load_example("motorcycle")
    own = matching.refresh(state, rows, 0.5, True, None, None, None, None, "SSD512", "random_512")
    assert "Hard negatives: the" in own[1] and len(own[2]) == 8
    other = matching.refresh(state, rows, 0.5, True, None, None, None, None, "SSD300", "random_512")
    assert "Hard negatives need the network's scores" in other[1] and "scores its 24564" in other[1]
    assert "Hard negatives: the" in matching.refresh(state, rows, 0.5, True, None, None, None, None, "SSD300",
                                                     A)[1]


# --------------------------------------------------------------------------------------------------- page
def test_the_page_offers_the_choice_only_with_two_models(models, weights):
    import app

    def choice_of(demo):
        (radio,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-choice"]
        return radio

    demo = app.build_demo(models)
    radio = choice_of(demo)
    assert radio.visible and radio.value == A and [v for _, v in radio.choices] == [A, B]
    (api,) = [f for f in demo.fns.values() if f.api_name == "detect"]
    assert api.inputs[-1] is radio  # the API's optional last argument
    cards = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-card"]
    assert len(cards) == 2  # a Model tab per model, the chosen one shown
    single = choice_of(app.build_demo(DemoModel.load(weights[0], "torch")))
    assert not single.visible and [v for _, v in single.choices] == [A]


@pytest.mark.slow
def test_the_api_takes_an_optional_model(weights, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    from gradio_client.exceptions import AppError

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(photo)
    spec = os.pathsep.join(str(w) for w in weights)
    with running_app(spec, tmp_path / "app.log", SSD_BACKEND="torch") as url:
        client = gradio_client.Client(url, verbose=False)
        file = gradio_client.handle_file(str(photo))
        _, _, default, _ = client.predict(file, 0.01, 0.45, api_name="/detect")  # as clients did before
        _, _, a, _ = client.predict(file, 0.01, 0.45, api_name="/detect", model=A)
        _, _, b, _ = client.predict(file, 0.01, 0.45, api_name="/detect", model=B)
        assert default["model_name"] == A and b["model_name"] == B
        assert detections(default) == detections(a) != detections(b)
        with pytest.raises(AppError, match="Unknown model 'nope'"):
            client.predict(file, 0.01, 0.45, api_name="/detect", model="nope")
