"""The page serving a model of one's own classes (the tutorial's `SSD_WEIGHTS=runs/mine/weights.safetensors`): the
Matching and Augmentation tabs start from an example whose objects are all of the model's classes, or, with none,
empty and asking for a photo of one's own; nothing they show at the start warns, in the page or in the log. The
page is run as Gradio's server runs a visit (`Visit`), so that the components' own checks run too."""

from __future__ import annotations

import asyncio
import logging
import warnings

import pytest

import ssd
from tests.app_server import export_random_weights
from tests.own_data import CLASSES

gr = pytest.importorskip("gradio")

from gradio.state_holder import SessionState  # noqa: E402

from ui.demo_models import DemoModel  # noqa: E402
from ui.error_analysis import missed_rows  # noqa: E402


class Visit:
    """One browser session on `demo`: each event's inputs are what the page shows at that moment, and its outputs
    change what it shows (a gr.update its value, a skip nothing), through Gradio's own `process_api`."""

    def __init__(self, demo: gr.Blocks):
        self.demo, self.session = demo, SessionState(demo)
        self.shown = {i: getattr(block, "value", None) for i, block in demo.blocks.items()}

    def run(self, fn):
        out = asyncio.run(self.demo.process_api(fn, [self.shown[c._id] for c in fn.inputs], self.session))
        for component, value in zip(fn.outputs, out["data"]):
            if not (isinstance(value, dict) and value.get("__type__") == "update"):
                self.shown[component._id] = value
            elif "value" in value:
                self.shown[component._id] = value["value"]
        return fn

    def load(self):
        """What a browser's page load runs: the load events, then what each chains with `.then`."""
        done = [self.run(fn) for fn in self.demo.fns.values() if any(e == "load" for _, e in fn.targets)]
        while done:
            after = {fn._id for fn in done}
            done = [self.run(fn) for fn in self.demo.fns.values() if fn.trigger_after in after]

    def event(self, qualname: str):
        """Runs the (first) event whose handler is `qualname`, e.g. "AugmentTab.render" (opening that tab)."""
        return self.run(next(fn for fn in self.demo.fns.values() if getattr(fn.fn, "__qualname__", "") == qualname))

    def value(self, elem_id: str):
        return next(self.shown[i] for i, b in self.demo.blocks.items() if getattr(b, "elem_id", None) == elem_id)


def own_model(directory, classes) -> DemoModel:
    """A random-weight model of `classes`, as training's export leaves it (weights and card), served on PyTorch."""
    return DemoModel.load(export_random_weights(directory, classes=classes), "torch")


def opened(model: DemoModel, caplog) -> tuple[Visit, list[str]]:
    """The page of `model` loaded and its Augmentation tab opened; and every warning that raised: Python's (Gradio
    warns so of a value that is not among a dropdown's choices) and the app's log's."""
    import app

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        # What Python leaves out of a server's log by default, as the app's log does.
        for kind in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", kind)
        visit = Visit(app.build_demo(model))
        visit.load()
        visit.event("AugmentTab.render")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return visit, [f"{w.category.__name__}: {w.message}" for w in caught] + logged


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
