"""The Learn tab's copies of the served networks: the network a copy starts from (`Copies.template`, one frozen
copy per model, shared by every visitor's copy), a copy's training run step by step (`Copies.run`, the library's
`ssd.learn.HeadTraining` under the run's time limit, each step on the page's network slot), and the trained copy's
detections beside the served model's (`Copies.compare_on`). The tab (`ui.learn_tab`) holds a visitor's copy
(`Learned`) in the session and shows its run."""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

import ssd
from ssd.learn import HeadTraining, LearnRecipe, LearnStep
from visualize.draw import draw_detections
from visualize.matching import GroundTruth

from .demo_models import DemoModels
from .settings import LEARN_LIMIT_S
from .visitor_input import Refused, served


@dataclass
class Learned:
    """A visitor's trained copy: its detector (whose layers under the heads are the page's frozen copy, shared),
    the name of the model it was copied from, its new classes and its steps."""

    detector: ssd.Detector
    model: str
    new_classes: list[str]
    history: list[LearnStep] = field(default_factory=list)


class Copies:
    """Copies of the networks of `models` that learn: the frozen network each starts from, made once per model."""

    def __init__(self, models: DemoModels):
        self.models = models
        self._templates: dict[str, torch.nn.Module] = {}
        self._lock = threading.Lock()

    def template(self, name: str) -> torch.nn.Module:
        """The network of model `name` to copy from: one float32 PyTorch copy on the CPU per model, made at the
        first run and shared by every visitor's copy (frozen: no parameter of it trains). The served detector
        keeps its own network, whatever runs it (onnxruntime has none: the weights file is read again)."""
        with self._lock:
            if name not in self._templates:
                chosen = self.models.get(name)
                detector = chosen.require()
                if detector.model is not None:
                    network = copy.deepcopy(detector.model)
                elif chosen.weights is not None and chosen.weights.suffix != ".onnx":
                    network = ssd.Detector.load(chosen.weights, device="cpu", backend="torch").model
                else:
                    raise Refused("This model runs from an ONNX file, which cannot train: start the app with its "
                                  ".safetensors weights to use this tab.")
                network = network.to("cpu", torch.float32).eval()
                network.requires_grad_(False)
                self._templates[name] = network
            return self._templates[name]

    def run(self, image: Image.Image, gt: GroundTruth, steps: int, model=None):
        """Train a copy of model `model` on `image` and its ground truth (in its pixels): yields (HeadTraining,
        what happened: "views" k, "step" LearnStep, or "done"/"stopped" with a message). The caller holds a run
        slot (`LearnTab.runs`)."""
        name = self.models.name(model)
        chosen = self.models.get(name)
        chosen.require()
        with chosen.network:
            template = self.template(name)
            training = HeadTraining(template, chosen.class_names, image, np.array(gt.boxes, np.float32),
                                    gt.labels, LearnRecipe(steps=steps))
        views = training.prepare()
        while True:
            with chosen.network:
                ready = next(views, None)
            if ready is None:
                break
            yield training, ("views", ready)
        started = time.perf_counter()
        while training.step_count < steps:
            if time.perf_counter() - started > LEARN_LIMIT_S:
                yield training, ("stopped", f"Stopped after {training.step_count} of {steps} steps: the run "
                                            f"reached its limit of {LEARN_LIMIT_S:.0f} s (the server is busy).")
                return
            with chosen.network:
                step = training.step()
            yield training, ("step", step)
        yield training, ("done", "")

    def detections(self, learned: Learned, image: Image.Image):
        """(the served model's detections, the copy's) on `image`, each a forward pass on the page's network
        slot, at the served model's recommended score threshold."""
        chosen = self.models.get(learned.model)
        mine = chosen.require().postprocess(chosen.predict(image), chosen.default_score)
        with chosen.network:
            theirs = learned.detector.detect(image)
        return mine, theirs

    def compare_on(self, learned: Learned, image: Image.Image):
        """(served model's picture, the copy's picture, a summary) on `image`."""
        mine, theirs = self.detections(learned, image)
        chosen = self.models.get(learned.model)

        def found(dets, classes):
            hits = [d for d in dets if d.label in classes]
            return ", ".join(f"{d.label} {d.score:.2f}" for d in hits) or "none"

        summary = ""
        if learned.new_classes:
            summary = (f"New class{'es' * (len(learned.new_classes) > 1)} detected by the copy: "
                       f"**{found(theirs, learned.new_classes)}**; the served model cannot name "
                       f"{'them' if len(learned.new_classes) > 1 else 'it'}.")
        note = f"Detections at score ≥ {chosen.default_score:.2f} (the served model's recommended threshold): " \
               f"served **{len(mine)}**, trained copy **{len(theirs)}**."
        return (served(draw_detections(image, mine)), served(draw_detections(image, theirs)),
                " ".join(filter(None, [note, summary])))
