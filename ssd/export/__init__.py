"""ONNX export of the inference graph (`ssd.graph.InferenceGraph`), as a file that is usable on its own.

    python -m ssd.export --out model.onnx [--weights W]      # default: the shipped demo weights
    python -m ssd.export --cache [--weights W]               # into the cache Detector.load() reads

The file's graph:
  input  `images`  uint8   [B, S, S, 3]  RGB, already resized to the network size S (the batch is dynamic)
  output `boxes`   float32 [B, N, 4]    (x1, y1, x2, y2) normalised to 0-1, one row per default box
  output `scores`  float32 [B, N, C+1]  softmax, background at index 0
NMS is not in the graph: per class, keep scores above the threshold, NMS, then the best top_k of all classes
(`ssd.postprocess.select_detections`; `Detector.load("model.onnx")` does all of it). The metadata says what the
numbers mean: config name, classes, recommended score threshold, NMS IoU and top k, and the whole model card.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..card import VERSION_KEY, ModelCard
from ..config import SSDConfig
from ..graph import INPUT, OUTPUTS, InferenceGraph

OPSET = 18
# Part of the cache key: bump when the exported graph changes for the same weights.
GRAPH_VERSION = "1"
CARD_KEY = "ssd_model_card"

log = logging.getLogger("ssd")


def metadata(cfg: SSDConfig, class_names, card: ModelCard | None) -> dict[str, str]:
    """The ONNX file's metadata_props: what a user of the bare file needs, and the model card for `Detector`."""
    mine = {"config": cfg.to_dict(), "classes": list(class_names)}
    card = dataclasses.replace(card, **mine) if card else ModelCard(**mine)
    return {
        "config_name": cfg.name,
        "image_size": str(cfg.image_size),
        "classes": json.dumps(list(class_names)),
        "score_threshold": "" if card.score_threshold is None else str(card.score_threshold),
        "nms_threshold": str(cfg.nms_threshold),
        "top_k": str(cfg.top_k),
        "input": f"{INPUT}: uint8 [B, {cfg.image_size}, {cfg.image_size}, 3] RGB, resized to the network size",
        "outputs": f"boxes: float32 [B, {cfg.num_default_boxes}, 4] normalised x1 y1 x2 y2; scores: float32 "
                   f"[B, {cfg.num_default_boxes}, {cfg.num_classes + 1}] softmax, background at index 0",
        "nms": "not in the graph: per-class NMS after a score threshold, then the top_k best of all classes",
        CARD_KEY: json.dumps(card.to_dict()),
    }


def card_from_metadata(props: dict[str, str], where) -> ModelCard:
    """The model card an exported file carries (config and classes included)."""
    if CARD_KEY not in props:
        raise ValueError(f"{where}: not an SSD export (no {CARD_KEY!r} in its metadata); export with ssd.export")
    return ModelCard.from_dict(json.loads(props[CARD_KEY]), where=f"{where}'s metadata")


def export_bytes(network: nn.Module, cfg: SSDConfig, class_names, card: ModelCard | None = None) -> bytes:
    """The serialised ONNX model of `network`'s inference graph (float32, CPU) with `metadata`."""
    import onnx

    network = copy.deepcopy(network).float().cpu().eval()
    graph = InferenceGraph(network, cfg).eval()
    # Batch 2: an example batch of 1 would be specialised to a fixed size.
    example = torch.zeros(2, cfg.image_size, cfg.image_size, 3, dtype=torch.uint8)
    with torch.no_grad():
        program = torch.onnx.export(graph, (example,), None, dynamo=True, opset_version=OPSET, verbose=False,
                                    input_names=[INPUT], output_names=list(OUTPUTS),
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata(cfg, class_names, card))
    proto.doc_string = __doc__.split("\n\n")[1].strip()
    return proto.SerializeToString()


def export_onnx(detector, path) -> Path:
    """Write `detector`'s graph (a PyTorch-backed `ssd.Detector`) as an ONNX file at `path`."""
    if detector.model is None:
        raise ValueError("this detector has no PyTorch network to export (it runs an ONNX file already)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(export_bytes(detector.model, detector.config, detector.class_names, detector.card))
    return path


def cache_dir() -> Path:
    root = os.environ.get("SSD_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ssd"
    return Path(root) / "onnx"


def export_cache_path(weights: Path, card: ModelCard) -> Path:
    """Where the export of these weights (and card, torch, exporter) lies in the cache, whether or not it does."""
    import onnx

    # The card's content without its schema version, as the card file had it before the version was written:
    # the exports cached for those cards (and the INT8 records beside them) keep their names.
    content = {k: v for k, v in card.to_dict().items() if k != VERSION_KEY}
    key = hashlib.sha256()
    for part in (Path(weights).read_bytes(), json.dumps(content, sort_keys=True).encode(), torch.__version__.encode(),
                 onnx.__version__.encode(), f"{OPSET}/{GRAPH_VERSION}".encode()):
        key.update(part)
    return cache_dir() / f"{Path(weights).stem}-{key.hexdigest()[:16]}.onnx"


def is_cached(weights) -> bool:
    """Whether the export of a weights file (with its model card beside it) is in the cache already."""
    from ..weights_files import card_beside

    try:
        return export_cache_path(Path(weights), card_beside(weights)).exists()
    except (OSError, ValueError):
        return False


def cached_export(weights: Path, network: nn.Module, cfg: SSDConfig, class_names, card: ModelCard) -> Path | bytes:
    """The export of a weights file, from the cache when these weights (and card, torch, exporter) were exported
    before. Exporting takes seconds (tens of them on 2 cores), so it says when it starts and ends; it happens
    once per weights file. Bytes when the cache is not writable."""
    path = export_cache_path(weights, card)
    if path.exists():
        return path
    log.info("exporting %s to ONNX for onnxruntime (once; cached in %s)", Path(weights).name, path.parent)
    start = time.perf_counter()
    data = export_bytes(network, cfg, class_names, card)
    log.info("exported %s in %.1f s", Path(weights).name, time.perf_counter() - start)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as f:
            f.write(data)
        os.replace(f.name, path)  # atomic: concurrent processes never read half a file
        return path
    except OSError:
        return data
