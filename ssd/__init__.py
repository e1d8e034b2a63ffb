"""SSD: Single Shot MultiBox Detector (Liu et al., ECCV 2016) — the detector as a library."""

import os

# OpenMP threads that have nothing to do sleep instead of spinning. By default PyTorch's spin-wait for each
# other, and when another process takes one of the cores (the app's server, a DataLoader worker, a test run) a
# step waits for the thread that lost its core: spinning gains little on an idle machine and loses much on a busy
# one (docs/benchmarks.md). libgomp reads this once, when PyTorch loads it, so it must be set before the first
# `import torch`; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .boxes import decode, encode
from .config import (
    PRESETS,
    SSD300_COCO,
    SSD300_LITE0_VOC,
    SSD300_LITE1_VOC,
    SSD300_LITE2_VOC,
    SSD300_VOC,
    SSD384_LITE0_VOC,
    SSD384_LITE1_VOC,
    SSD384_LITE2_VOC,
    SSD512_COCO,
    SSD512_LITE0_VOC,
    SSD512_VOC,
    VOC_CLASSES,
    SSDConfig,
)
from .detector import Detection, Detections, Detector, RawPrediction, export_weights
from .export import export_onnx
from .graph import InferenceGraph
from .loss import MultiBoxLoss, confidence_loss, hard_negatives, multibox_loss
from .matching import MatchResult, match
from .model import SSD, build_ssd
from .postprocess import InferenceSettings
from .priors import PriorLayout, default_boxes, prior_layout

__all__ = [
    "PRESETS", "SSD", "SSD300_COCO", "SSD300_LITE0_VOC", "SSD300_LITE1_VOC", "SSD300_LITE2_VOC", "SSD300_VOC",
    "SSD384_LITE0_VOC", "SSD384_LITE1_VOC", "SSD384_LITE2_VOC", "SSD512_COCO", "SSD512_LITE0_VOC", "SSD512_VOC",
    "VOC_CLASSES",
    "Detection", "Detections", "Detector", "MatchResult", "MultiBoxLoss", "PriorLayout", "RawPrediction",
    "InferenceGraph", "InferenceSettings", "SSDConfig", "build_ssd", "confidence_loss", "decode", "default_boxes",
    "encode", "export_onnx",
    "export_weights",
    "hard_negatives", "match", "multibox_loss", "prior_layout",
]
