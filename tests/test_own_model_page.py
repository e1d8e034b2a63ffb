"""The page serving a model of one's own classes (the tutorial's `SSD_WEIGHTS=runs/mine/weights.safetensors`): the
Matching and Augmentation tabs start from an example whose objects are all of the model's classes, or, with none,
empty and asking for a photo of one's own; nothing they show at the start warns, in the page or in the log. The
page is run as Gradio's server runs a visit (`tests.page_visit.Visit`), so that the components' own checks run too."""

from __future__ import annotations

import pytest

import ssd
from bench.app_server import export_random_weights
from tests.own_data import CLASSES

gr = pytest.importorskip("gradio")

from tests.page_visit import opened  # noqa: E402
from ui.demo_models import DemoModel  # noqa: E402
from ui.error_analysis import missed_rows  # noqa: E402


def own_model(directory, classes) -> DemoModel:
    """A random-weight model of `classes`, as training's export leaves it (weights and card), served on PyTorch."""
    return DemoModel.load(export_random_weights(directory, classes=classes), "torch")


def test_only_examples_whose_every_object_is_of_the_models_classes_fit():
    from visualize.examples import example_for, examples_for

    assert examples_for(ssd.VOC_CLASSES) == ["astronaut", "cat", "motorcycle", "coffee"]
    assert examples_for(CLASSES) == ["cat"] and examples_for(["widget"]) == []
    assert example_for(ssd.VOC_CLASSES, "motorcycle") == "motorcycle"
    assert example_for(CLASSES, "motorcycle") == "cat" and example_for(["widget"], "motorcycle") is None


@pytest.mark.slow
def test_a_model_of_other_classes_starts_from_an_example_of_its_classes(tmp_path, caplog):
    visit, said = opened(own_model(tmp_path, CLASSES), caplog)
    assert said == []
    match = visit.value("match-message")
    assert "⚠️" not in match and "unknown class" not in match
    assert [row[0] for row in visit.value("match-gt")["data"]] == ["cat"]
    assert int(match.split("**")[1]) > 0  # "**N** positives for 1 ground-truth box"
    augment = visit.value("augment-message")
    assert "⚠️" not in augment and "No ground truth" not in augment
    assert visit.value("augment-photo") == "cat" and visit.value("augment-step-0") is not None


@pytest.mark.slow
def test_with_no_example_of_its_classes_the_tabs_start_empty_and_ask_for_a_photo(tmp_path, caplog):
    visit, said = opened(own_model(tmp_path, ("widget",)), caplog)
    assert said == []
    match = visit.value("match-message")
    assert "upload a photo of your own" in match and "(widget)" in match and "⚠️" not in match
    assert visit.value("match-gt")["data"] == [] and visit.value("match-output") is None
    augment = visit.value("augment-message")
    assert "upload a photo of your own on the Matching tab" in augment and "⚠️" not in augment
    assert all(visit.value(f"augment-step-{i}") is None for i in range(6))


@pytest.mark.slow
def test_a_voc_model_still_starts_on_the_motorcycle(tmp_path, caplog):
    visit, said = opened(own_model(tmp_path, ssd.VOC_CLASSES), caplog)
    assert said == []
    assert [row[0] for row in visit.value("match-gt")["data"]] == ["motorbike", "bicycle"]
    assert visit.value("augment-photo") == "motorcycle" and "⚠️" not in visit.value("augment-message")


@pytest.mark.slow
def test_the_model_tab_lists_a_coco_models_images_by_file_name(tmp_path):
    """COCO names an image by a number (1, 2 …) that is no file: the Model tab's false positives and missed
    objects name the photo's file, as the evaluation report now records it beside the id."""
    from tests.own_data import photos, write_coco
    from train.evaluate import main
    from ui.model_tab import ModelTab

    images, ann = write_coco(tmp_path / "coco", photos(6))
    weights = export_random_weights(tmp_path, classes=CLASSES)
    assert main(["--weights", str(weights), "--data", str(images), "--ann-file", str(ann), "--device", "cpu",
                 "--no-progress", "--report"]) == 0
    tab = ModelTab(DemoModel.load(weights, "torch"))
    files = {f"photo_{i}.jpg" for i in range(6)}
    listed = [row[1] for row in tab.fp_rows()] + [row[1] for row in missed_rows(tab.report)]
    assert tab.fp_rows() and missed_rows(tab.report) and set(listed) <= files
    fp = tab.report["false_positives"]["worst"][0]
    assert fp["file"] == f"photo_{int(fp['image']) - 1}.jpg"  # the id stays beside it
