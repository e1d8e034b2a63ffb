"""The model behind the page: the detector (or why there is none), what the page shows about it, and the one
limit on how many forward passes run at once."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

import ssd

from .settings import CONCURRENCY

log = logging.getLogger("ssd.app")

NO_MODEL = ("No model weights are loaded, so there is nothing to detect with. Start the app with "
            "SSD_WEIGHTS=/path/to/weights.safetensors, or train the demo weights (README, 'Train your own').")


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

    @classmethod
    def load(cls, path=None, backend: str = "auto") -> DemoModel:
        """The weights at `path` (None: the shipped ones), run by onnxruntime on the CPU where it is installed
        (faster there) and else by PyTorch (`ssd.Detector`'s backends). Never raises: a missing, corrupt or
        mismatched file leaves the teaching tabs serving, with a message."""
        try:
            return cls(ssd.Detector.load(path, backend=backend),
                       weights=Path(path) if path else ssd.detector.DEFAULT_WEIGHTS)
        except FileNotFoundError as e:
            return cls(None, f"⚠️ **No model loaded** — {e} The *Default boxes* and *Matching* tabs work without "
                             "one.")
        except Exception as e:
            log.exception("loading weights failed")
            return cls(None, f"⚠️ **The weights could not be loaded** ({type(e).__name__}: {e}).")

    @property
    def config(self) -> ssd.SSDConfig:
        return self.detector.config if self.detector else ssd.SSD300_VOC

    @property
    def class_names(self) -> list[str]:
        return list(self.detector.class_names) if self.detector else list(ssd.VOC_CLASSES)

    @property
    def default_score(self) -> float:
        """The threshold the model card recommends, so a visitor sees real detections at once."""
        return self.detector.score_threshold if self.detector else 0.5

    def require(self) -> ssd.Detector:
        if self.detector is None:
            raise gr.Error(NO_MODEL)
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
        if cfg.backbone == "vgg16":
            base = f"VGG16 base{' with BatchNorm' if cfg.batch_norm else ''}, width ×{cfg.width:g}"
        else:
            base = "EfficientNet-Lite0 base pretrained on ImageNet"
        parts = [f"**Model:** {cfg.name} ({cfg.num_default_boxes} default boxes, {base}), "
                 f"{len(self.class_names)} classes, on {device}."]
        val = card.get("val") or {}
        if isinstance(val.get("map_area"), int | float):
            parts.append(f"Measured on {val.get('images', '?')} held-out images: mAP at IoU 0.5 "
                         f"{100 * val['map_area']:.1f} (VOC07 11-point {100 * val['map_11pt']:.1f}). Default score "
                         f"threshold {det.score_threshold:.2f} (best F1 there).")
        if card.get("note"):
            parts.append(str(card["note"]))
        return " ".join(parts)
