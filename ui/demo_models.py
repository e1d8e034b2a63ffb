"""The models behind the page: each detector (or why there is none), what the page shows about it, the choice
between them (`DemoModels`), and the one limit on how many forward passes run at once, whatever the model."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

import ssd
import ssd.detector
from ssd.bases import base_network
from ssd.top_down import described
from visualize.numbers import counted

from .settings import CONCURRENCY
from .visitor_input import Refused, short

log = logging.getLogger("ssd.app")

NO_MODEL = ("No model weights are loaded, so there is nothing to detect with. Start the app with "
            "SSD_WEIGHTS=/path/to/weights.safetensors, or train the demo weights (README, 'Train on your own photos').")


# Background exports run one at a time: two at once would only share the same 2 cores with the visitors.
_EXPORTS = threading.Lock()
# And not before this is set: app.main clears it while the page is being built and sets it once the server
# answers. Set by default, so a model loaded anywhere else exports at once.
EXPORTS_MAY_START = threading.Event()
EXPORTS_MAY_START.set()


def warmed(detector: ssd.Detector) -> ssd.Detector:
    """`detector` after one detection of a blank picture: the first visitor does not pay for lazy initialisation
    (allocators, kernels picked on first use), which would show in the page's timings."""
    detector.detect(Image.new("RGB", (detector.config.image_size,) * 2))
    return detector


@dataclass
class DemoModel:
    """The detector the page uses, or None with `message` saying why. Without one, the teaching tabs still work
    with the paper's SSD300 config."""

    detector: ssd.Detector | None
    message: str = ""
    # Every path that runs the network (detect, hard negatives, detections as ground truth) takes one of these,
    # so at most CONCURRENCY forward passes run at once, whatever the page's events are.
    network: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(CONCURRENCY))
    weights: Path | None = None  # the file the detector came from: the Model tab reads what lies beside it
    switching: threading.Thread | None = None  # the background export, while it runs (DemoModel.load)

    @classmethod
    def load(cls, path=None, backend: str = "auto") -> DemoModel:
        """The weights at `path` (None: the shipped ones), run by onnxruntime on the CPU where it is installed
        (faster there) and else by PyTorch (`ssd.Detector`'s backends). With `auto` and no cached export yet,
        the page serves on PyTorch at once and switches to onnxruntime when a background export is ready (an
        export takes tens of seconds on 2 cores, and a Space starts with an empty cache). Never raises: a
        missing, corrupt or mismatched file leaves the teaching tabs serving, with a message."""
        weights = Path(path) if path else ssd.detector.DEFAULT_WEIGHTS
        later = backend == "auto" and weights.suffix != ".onnx" and ssd.Detector.export_missing(weights)
        try:
            detector = warmed(ssd.Detector.load(path, backend="torch" if later else backend))
        except FileNotFoundError as e:
            return cls(None, f"⚠️ **No model loaded** — {e} The *Default boxes* and *Matching* tabs work without "
                             "one.")
        except Exception as e:
            log.exception("loading weights failed")
            return cls(None, f"⚠️ **The weights could not be loaded** ({type(e).__name__}: {e}).")
        model = cls(detector, weights=weights)
        if later:
            model.switching = threading.Thread(target=model._switch_to_onnxruntime, name=f"export {weights.name}",
                                               daemon=True)
            model.switching.start()
        return model

    def _switch_to_onnxruntime(self):
        """Export in the background (one export at a time), then serve on onnxruntime. A forward pass already
        running finishes on PyTorch; the next one runs on onnxruntime."""
        log.info("%s: serving on PyTorch until its ONNX export is ready", self.weights.name)
        EXPORTS_MAY_START.wait()
        with _EXPORTS:
            try:
                detector = warmed(ssd.Detector.load(self.weights, backend="onnxruntime"))
            except Exception as e:
                log.warning("%s: the ONNX export failed (%s: %s); staying on PyTorch", self.weights.name,
                            type(e).__name__, e)
                return
            self.detector = detector
            log.info("%s: now serving on onnxruntime", self.weights.name)

    @property
    def config(self) -> ssd.SSDConfig:
        return self.detector.config if self.detector else ssd.SSD300_VOC

    @property
    def class_names(self) -> list[str]:
        return list(self.detector.class_names) if self.detector else list(ssd.VOC_CLASSES)

    @property
    def settings(self) -> ssd.InferenceSettings:
        """The detector's inference settings (`ssd.Detector.settings`); with no detector, the fallback score
        threshold and the config's NMS IoU and top-k."""
        if self.detector:
            return self.detector.settings
        cfg = self.config
        return ssd.InferenceSettings(ssd.detector.FALLBACK_SCORE_THRESHOLD, cfg.nms_threshold, cfg.top_k)

    @property
    def default_score(self) -> float:
        """The threshold the model card recommends, so a visitor sees real detections at once."""
        return self.settings.score_threshold

    @property
    def title(self) -> str:
        """A short readable name: config and base network, what its card's `status` says of it, its mAP
        (e.g. "SSD300 · EfficientNet-Lite0, ImageNet-pretrained · mAP 53.0")."""
        if self.detector is None:
            return "no model"
        cfg, card = self.detector.config, self.detector.card
        name = cfg.name.split("_")[0]  # SSD300_LITE0_VOC -> SSD300
        base = base_network(cfg.backbone).describe(cfg)
        if card.base_weights:
            base += ", ImageNet-pretrained"
        parts = [name, base]
        if card.status:  # "<tag>: <why>", e.g. the interim model's "interim: superseded by …"
            tags = [card.status.split(":")[0].strip()]
            if not card.base_weights:
                tags.append("from scratch")
            parts.append(", ".join(tags))
        if card.val:
            parts.append(f"mAP {100 * card.val.map_area:.1f}")
        return " · ".join(parts)

    def require(self) -> ssd.Detector:
        if self.detector is None:
            raise Refused(NO_MODEL)
        return self.detector

    def predict(self, image: Image.Image) -> ssd.RawPrediction:
        detector = self.require()
        with self.network:
            return detector.predict(image)

    def summary(self) -> str:
        """One paragraph about the model, for the top of the page."""
        if self.detector is None:
            return self.message
        det, cfg = self.detector, self.detector.config
        card = det.card
        device = torch.cuda.get_device_name(det.device) if det.device.type == "cuda" else det.device.type.upper()
        device += f" ({det.backend_name})"
        part = base_network(cfg.backbone)
        base = f"{part.describe(cfg)} base" + (" pretrained on ImageNet" if part.pretrained else "")
        if cfg.top_down:  # not the paper's network: say so where the network is named
            base += f", {described(cfg.top_down)}"
        parts = [f"**Model:** {cfg.name} ({cfg.num_default_boxes} default boxes, {base}), "
                 f"{counted(len(self.class_names), 'class', 'classes')}, on {device}."]
        val = card.val
        if val:
            # The threshold is the best-F1 one where training measured it; a card may say it was set otherwise.
            basis = "best F1 there" if val.best_f1 or not card.score_threshold_basis else \
                card.score_threshold_basis.split(":")[0]
            parts.append(f"Measured on {val.images} held-out images: mAP at IoU 0.5 "
                         f"{100 * val.map_area:.1f} (VOC07 11-point {100 * val.map_11pt:.1f}). Default score "
                         f"threshold {det.score_threshold:.2f} ({basis}).")
        if card.note:
            parts.append(card.note)
        return " ".join(parts)


def weights_paths(spec: str | None = None) -> list[Path]:
    """The weights the page serves, the default first. `spec` (SSD_WEIGHTS): one file, or several joined by
    os.pathsep; empty: the shipped default and every other weights file with a model card beside it in
    ssd/weights/."""
    if spec:
        paths = [Path(p) for p in spec.split(os.pathsep) if p.strip()]
    else:
        default = ssd.detector.DEFAULT_WEIGHTS
        others = sorted(p for p in ssd.detector.WEIGHTS_DIR.glob("*.safetensors")
                        if p != default and ssd.detector.card_path(p).exists())
        paths = [default, *others]
    unique = {}
    for p in paths:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


class DemoModels:
    """The models a visitor can switch between, in order, by name (the weights file's stem); the first is the
    default. Every model runs its forward passes under one semaphore (the first model's), so that at most
    CONCURRENCY run at once whatever the models. Built with one model, there is nothing to switch."""

    def __init__(self, models: dict[str, DemoModel]):
        if not models:
            raise ValueError("DemoModels needs at least one model")
        self.models = dict(models)
        first = next(iter(self.models.values()))
        for model in self.models.values():
            model.network = first.network
        titles = {name: model.title for name, model in self.models.items()}
        repeated = {t for t in titles.values() if list(titles.values()).count(t) > 1}
        # Two models that read the same (two random-weight files, say) are told apart by their file.
        self.titles = {name: f"{t} ({name})" if t in repeated else t for name, t in titles.items()}

    @classmethod
    def of(cls, model: DemoModel | DemoModels) -> DemoModels:
        """`model` itself, or one model wrapped (nothing to switch)."""
        if isinstance(model, DemoModels):
            return model
        return cls({name_of(model): model})

    @classmethod
    def load(cls, spec: str | None = None, backend: str = "auto") -> DemoModels:
        """The weights named by `spec` (`weights_paths`), each loaded by `DemoModel.load`. A model that fails to
        load is left out with a warning in the log, unless none loads: then the first one, with its message
        (the teaching tabs still serve)."""
        paths = weights_paths(spec)
        loaded, failed = {}, []
        for path in paths:
            model = DemoModel.load(path, backend)
            if model.detector is None:
                failed.append(model)
                if len(paths) > 1:
                    log.warning("left out %s: %s", path, model.message)
                continue
            name = name_of(model)
            key, n = name, 2
            while key in loaded:
                key, n = f"{name}-{n}", n + 1
            loaded[key] = model
        return cls(loaded or {name_of(failed[0]): failed[0]})

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self):
        return iter(self.models)

    def items(self):
        return self.models.items()

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def default_name(self) -> str:
        return self.names[0]

    @property
    def default(self) -> DemoModel:
        return self.models[self.default_name]

    @property
    def switchable(self) -> bool:
        """Two models or more: the page shows the choice."""
        return len(self.models) > 1

    def name(self, choice=None) -> str:
        """The name of a choice: a model's name or title; None or "" is the default; anything else a gr.Error."""
        if choice is None or choice == "":
            return self.default_name
        if isinstance(choice, str) and choice in self.models:
            return choice
        for name, title in self.titles.items():
            if choice == title:
                return name
        raise Refused(f"Unknown model {short(repr(choice))}: this app serves {', '.join(repr(n) for n in self.models)} "
                       f"(the default is {self.default_name!r}).")

    def get(self, choice=None) -> DemoModel:
        return self.models[self.name(choice)]

    def choices(self) -> list[tuple[str, str]]:
        """(title, name) for a gr.Radio or gr.Dropdown."""
        return [(self.titles[name], name) for name in self.models]

    def summary(self, choice=None) -> str:
        """The page's model line, for the chosen model."""
        return self.get(choice).summary()


def name_of(model: DemoModel) -> str:
    """A model's name: its weights file's stem (what the API's `model` argument takes)."""
    if model.weights is not None:
        return model.weights.stem
    return model.detector.config.name if model.detector is not None else "model"
