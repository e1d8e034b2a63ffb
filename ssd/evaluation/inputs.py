"""What the metrics accept: per-image detections and ground truth in a few forms (tuples, dicts, lists of
`ssd.Detection`; numpy arrays or tensors), turned into flat numpy columns with clear errors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["flatten", "image_detections", "image_ground_truth"]


def _array(x, dtype, shape_tail=()) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if a.size == 0:
        return a.reshape((0,) + shape_tail)
    return a


def image_detections(d, i: int):
    """(boxes [K,4] float64, scores [K], labels [K] int64) from a tuple, a dict or a list of ssd.Detection."""
    if isinstance(d, dict):
        boxes, scores, labels = d["boxes"], d["scores"], d["labels"]
    elif isinstance(d, Sequence) and len(d) > 0 and hasattr(d[0], "box"):
        boxes = [x.box for x in d]
        scores = [x.score for x in d]
        labels = [x.class_id for x in d]
    elif isinstance(d, Sequence) and len(d) == 0:
        boxes, scores, labels = [], [], []
    else:
        try:
            boxes, scores, labels = d
        except (TypeError, ValueError):
            raise TypeError(f"detections[{i}]: expected (boxes, scores, labels), a dict with those keys, or a "
                            f"list of ssd.Detection; got {type(d).__name__}") from None
    boxes = _array(boxes, np.float64, (4,))
    scores = _array(scores, np.float64).ravel()
    labels = _array(labels, np.int64).ravel()
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"detections[{i}]: boxes must be [K, 4] with K scores and K labels, got boxes "
                         f"{boxes.shape}, {scores.shape[0]} scores, {labels.shape[0]} labels")
    return boxes, scores, labels


def image_ground_truth(g, i: int):
    """(boxes [M,4], labels [M], difficult bool [M]) from (boxes, labels[, difficult, ...]) or a dict."""
    if isinstance(g, dict):
        boxes, labels, difficult = g["boxes"], g["labels"], g.get("difficult")
    else:
        try:
            boxes, labels, *rest = g
        except (TypeError, ValueError):
            raise TypeError(f"ground_truths[{i}]: expected (boxes, labels[, difficult]) or a dict, "
                            f"got {type(g).__name__}") from None
        difficult = rest[0] if rest else None
    boxes = _array(boxes, np.float64, (4,))
    labels = _array(labels, np.int64).ravel()
    difficult = np.zeros(len(labels), bool) if difficult is None else _array(difficult, bool).ravel()
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not (len(boxes) == len(labels) == len(difficult)):
        raise ValueError(f"ground_truths[{i}]: boxes must be [M, 4] with M labels and M difficult flags, got "
                         f"boxes {boxes.shape}, {labels.shape[0]} labels, {difficult.shape[0]} flags")
    return boxes, labels, difficult


def flatten(per_image, convert, what: str, num_classes: int):
    parts = [convert(x, i) for i, x in enumerate(per_image)]
    counts = np.array([len(p[0]) for p in parts], dtype=np.int64)
    cols = []
    for k in range(3):
        items = [p[k] for p in parts]
        cols.append(np.concatenate(items) if items else None)
    labels = cols[-1] if what == "detections" else cols[1]
    if labels is not None and labels.size and (labels.min() < 1 or labels.max() > num_classes):
        bad = labels[(labels < 1) | (labels > num_classes)][0]
        raise ValueError(f"{what}: label {int(bad)} outside 1..{num_classes} (0 is background, not a class)")
    return parts, counts, cols
