"""Detection metrics: PASCAL VOC mAP (VOC07 11-point and VOC2010+ area) and COCO AP (pycocotools).

VOC matching follows the devkit (VOCevaldet.m), vectorised:

* per class, the detections of all images are ranked by score, highest first; equal scores keep their
  input order (image order, then order within the image), as MATLAB's stable `sort` does;
* each detection is compared with the ground-truth boxes of its own image and class and takes the one of
  highest IoU (first one on ties) — *whether or not that box is already taken*, exactly as the devkit does
  (COCO instead moves on to the best free box; the two differ only where two boxes of one class overlap);
* IoU >= threshold with a box nobody higher-ranked claimed: true positive; with a box already claimed: false
  positive (a duplicate); with a `difficult` box: ignored (neither); below the threshold: false positive;
* `difficult` boxes do not count in the number of positives (npos).

Because the box a detection "takes" does not depend on earlier matches, the whole greedy loop reduces to
"the first detection in rank order pointing at each box wins": one IoU pass (torchvision's `box_iou`, chunked
over images) and one sort, no Python loop over detections.

IoU convention: boxes are continuous 0-based pixel corners (x1, y1, x2, y2), so IoU is plain area ratio. The
devkit's "+1" (inclusive integer pixel indices) is *not* applied: our datasets already subtract 1 from VOC's
1-based XML coordinates and treat them as continuous, where +1 would inflate small boxes.

A class with no (non-difficult) ground truth has AP = nan and is left out of the mean — the mean is over
classes that can be evaluated, not a score dragged down by classes absent from a subset.

`python -m train.evaluate --help` for the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = [
    "ClassAP", "VOCResult", "collect_detections", "evaluate_coco", "evaluate_detector", "evaluate_voc",
    "main", "voc_ap",
]

# Pairs of (detection, ground truth) compared per box_iou call; bounds memory, keeps calls few.
_IOU_CHUNK = 16_000
_COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


# ----------------------------------------------------------------------------------------------------------
# Average precision of one precision/recall curve
# ----------------------------------------------------------------------------------------------------------

def voc_ap(recall, precision, use_07_metric: bool = False) -> float:
    """Average precision of one class from its precision/recall points (detections in rank order).

    use_07_metric=True: VOC2007's 11-point interpolation, the mean over t = 0, 0.1, ..., 1 of the best
    precision at recall >= t (0 where recall never reaches t). The thresholds are computed as k/10, so a
    recall of exactly 3/10 counts at t = 0.3 (the often-copied `np.arange(0., 1.1, 0.1)` gives
    0.30000000000000004 and drops it).

    use_07_metric=False: VOC2010+ AP, the area under the monotone envelope of the curve (precision at
    recall r replaced by the best precision at any recall >= r), summed over the points where recall rises.
    """
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision must have equal lengths, got {rec.shape} and {prec.shape}")
    if rec.size == 0:
        return 0.0
    if use_07_metric:
        # Best precision at recall >= t, for every t: a suffix maximum over the points, then the first point
        # whose recall reaches t (recall never decreases along the ranking).
        envelope = np.maximum.accumulate(prec[::-1])[::-1]
        thresholds = np.arange(11) / 10.0
        first = np.searchsorted(rec, thresholds, side="left")
        reached = first < rec.size
        return float(np.where(reached, envelope[np.minimum(first, rec.size - 1)], 0.0).sum() / 11.0)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    rises = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[rises + 1] - mrec[rises]) * mpre[rises + 1]))


# ----------------------------------------------------------------------------------------------------------
# Inputs: per-image detections and ground truth in a few accepted forms
# ----------------------------------------------------------------------------------------------------------

def _array(x, dtype, shape_tail=()) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if a.size == 0:
        return a.reshape((0,) + shape_tail)
    return a


def _image_detections(d, i: int):
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


def _image_ground_truth(g, i: int):
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


def _flatten(per_image, convert, what: str, num_classes: int):
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


# ----------------------------------------------------------------------------------------------------------
# VOC mAP
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ClassAP:
    """One class's VOC result. precision/recall/scores: the PR curve, detections in rank order (those
    matched to a difficult box left out)."""

    ap_11pt: float
    ap_area: float
    npos: int  # non-difficult ground-truth boxes
    ndet: int  # detections of this class (ignored ones included)
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)

    def to_dict(self, curves: bool = False) -> dict:
        d = {"ap_11pt": _num(self.ap_11pt), "ap_area": _num(self.ap_area), "npos": self.npos,
             "ndet": self.ndet}
        if curves:
            d.update(precision=self.precision.tolist(), recall=self.recall.tolist(), scores=self.scores.tolist())
        return d


@dataclass
class VOCResult:
    """mAP over classes with ground truth (nan when no class has any); per_class keyed by class name (or by
    class id 1..C when no names were given)."""

    map_11pt: float
    map_area: float
    per_class: dict
    iou_threshold: float
    num_images: int
    eval_seconds: float
    detect_seconds: float | None = None  # set by evaluate_detector: time spent loading + detecting

    def to_dict(self, curves: bool = False) -> dict:
        return {
            "map_11pt": _num(self.map_11pt), "map_area": _num(self.map_area),
            "iou_threshold": self.iou_threshold, "num_images": self.num_images,
            "eval_seconds": self.eval_seconds, "detect_seconds": self.detect_seconds,
            "per_class": {str(k): v.to_dict(curves) for k, v in self.per_class.items()},
        }

    def best_f1_threshold(self) -> dict:
        """The score threshold at which all classes' detections together have the best F1 (2PR / (P + R)),
        with its precision and recall: a threshold to recommend to users who want one number to start from.
        A detection matched to a difficult box counts neither way (the PR curves leave it out)."""
        scores, tp, npos = [], [], 0
        for c in self.per_class.values():
            k = np.arange(1, len(c.precision) + 1)
            tp_cum = np.rint(c.precision * k)  # precision = tp / rank
            tp.append(np.diff(tp_cum, prepend=0.0))
            scores.append(c.scores)
            npos += c.npos
        scores, tp = np.concatenate(scores), np.concatenate(tp)
        if len(scores) == 0 or npos == 0:
            return {"score": float("nan"), "precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
        order = np.argsort(-scores, kind="stable")
        scores, tp_cum = scores[order], np.cumsum(tp[order])
        ndet = np.arange(1, len(scores) + 1)
        # Only the last detection of a run of equal scores is a threshold one can actually set.
        last = np.r_[scores[1:] != scores[:-1], True]
        f1 = np.where(last, 2 * tp_cum / (ndet + npos), -1.0)
        i = int(np.argmax(f1))
        return {"score": float(scores[i]), "precision": float(tp_cum[i] / ndet[i]),
                "recall": float(tp_cum[i] / npos), "f1": float(f1[i])}

    def table(self) -> str:
        """Per-class AP as a plain-text table (AP in percent)."""
        width = max([5] + [len(str(k)) for k in self.per_class])
        lines = [f"{'class':<{width}}  {'AP(07)':>6}  {'AP':>6}  {'npos':>6}  {'ndet':>7}"]
        for k, c in self.per_class.items():
            lines.append(f"{str(k):<{width}}  {_pct(c.ap_11pt)}  {_pct(c.ap_area)}  {c.npos:>6}  {c.ndet:>7}")
        lines.append(f"{'mAP':<{width}}  {_pct(self.map_11pt)}  {_pct(self.map_area)}")
        return "\n".join(lines)


def _num(x):
    """JSON-safe float: nan -> None."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _pct(x) -> str:
    return f"{'-':>6}" if x is None or math.isnan(x) else f"{100 * x:6.2f}"


def _best_ground_truth(det_boxes, det_labels, det_counts, gt_boxes, gt_labels, gt_counts):
    """For every detection: highest IoU with a ground-truth box of its image and class (-1 if there is none)
    and that box's row in the flattened ground truth. box_iou runs on chunks of consecutive images; pairs
    across images or classes are masked out."""
    D = len(det_labels)
    best_iou = np.full(D, -1.0)
    best_gt = np.full(D, -1, dtype=np.int64)
    if D == 0 or len(gt_labels) == 0:
        return best_iou, best_gt
    det_img = np.repeat(np.arange(len(det_counts)), det_counts)
    gt_img = np.repeat(np.arange(len(gt_counts)), gt_counts)
    det_start = np.concatenate(([0], np.cumsum(det_counts)))
    gt_start = np.concatenate(([0], np.cumsum(gt_counts)))
    db, dl, di = torch.from_numpy(det_boxes), torch.from_numpy(det_labels), torch.from_numpy(det_img)
    gb, gl, gi = torch.from_numpy(gt_boxes), torch.from_numpy(gt_labels), torch.from_numpy(gt_img)
    # Group consecutive images while (detections x ground truths) in the group stays under the budget.
    n_img = len(det_counts)
    a = 0
    while a < n_img:
        b, nd, ng = a, 0, 0
        while b < n_img and (b == a or (nd + det_counts[b]) * (ng + gt_counts[b]) <= _IOU_CHUNK):
            nd += det_counts[b]
            ng += gt_counts[b]
            b += 1
        d0, d1, g0, g1 = det_start[a], det_start[b], gt_start[a], gt_start[b]
        a = b
        if d1 == d0 or g1 == g0:
            continue
        iou = box_iou(db[d0:d1], gb[g0:g1])
        same = (di[d0:d1, None] == gi[None, g0:g1]) & (dl[d0:d1, None] == gl[None, g0:g1])
        iou = torch.where(same, iou, -1.0).numpy()
        # numpy's argmax: the first maximum on ties, like MATLAB's max (and faster than torch's small-row
        # reductions, which spread over threads).
        index = iou.argmax(axis=1)
        best_iou[d0:d1] = iou[np.arange(len(index)), index]
        best_gt[d0:d1] = index + g0
    return best_iou, best_gt


def evaluate_voc(detections, ground_truths, num_classes: int, iou_threshold: float = 0.5,
                 class_names=None) -> VOCResult:
    """PASCAL VOC AP per class and mAP, both VOC07 11-point and VOC2010+ area (see the module docstring).

    detections: per image, (boxes [K,4] pixel xyxy, scores [K], labels [K] in 1..C) — tuples, dicts with
    those keys, or lists of `ssd.Detection`. ground_truths: per image, (boxes [M,4], labels [M], difficult
    [M]) (difficult may be left out) or a dict; `dataset.annotation(i)` works as it is.
    """
    start = time.perf_counter()
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truths)} of ground truth")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
    _, det_counts, (det_boxes, det_scores, det_labels) = _flatten(
        detections, _image_detections, "detections", num_classes)
    _, gt_counts, (gt_boxes, gt_labels, gt_difficult) = _flatten(
        ground_truths, _image_ground_truth, "ground_truths", num_classes)
    if det_boxes is None:  # no images at all
        det_boxes, det_scores, det_labels = np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
        gt_boxes, gt_labels, gt_difficult = np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, bool)

    best_iou, best_gt = _best_ground_truth(det_boxes, det_labels, det_counts, gt_boxes, gt_labels, gt_counts)
    hit = best_iou >= iou_threshold
    ignored = np.zeros(len(det_labels), bool)
    ignored[hit] = gt_difficult[best_gt[hit]]
    claims = hit & ~ignored

    # Rank: by class, then score descending; np.lexsort is stable, so equal scores keep input order.
    order = np.lexsort((-det_scores, det_labels))
    claims_sorted = claims[order]
    tp_sorted = np.zeros(len(order), bool)
    claimed_rows = np.flatnonzero(claims_sorted)
    _, first = np.unique(best_gt[order][claimed_rows], return_index=True)  # first claim on each box wins
    tp_sorted[claimed_rows[first]] = True
    keep = ~ignored[order]
    labels_sorted = det_labels[order]
    scores_sorted = det_scores[order]
    class_bounds = np.searchsorted(labels_sorted, np.arange(1, num_classes + 2), side="left")
    npos_all = np.bincount(gt_labels[~gt_difficult], minlength=num_classes + 1)

    per_class = {}
    for c in range(1, num_classes + 1):
        s, e = class_bounds[c - 1], class_bounds[c]
        kept = keep[s:e]
        tp = np.cumsum(tp_sorted[s:e][kept], dtype=np.float64)
        fp = np.cumsum(~tp_sorted[s:e][kept], dtype=np.float64)
        npos = int(npos_all[c])
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
        if npos > 0:
            recall = tp / npos
            ap07, ap = voc_ap(recall, precision, True), voc_ap(recall, precision, False)
        else:
            recall = np.full_like(tp, np.nan)
            ap07 = ap = float("nan")
        key = class_names[c - 1] if class_names is not None else c
        per_class[key] = ClassAP(ap07, ap, npos, int(e - s), precision, recall, scores_sorted[s:e][kept])

    evaluable = [v for v in per_class.values() if v.npos > 0]
    map07 = float(np.mean([v.ap_11pt for v in evaluable])) if evaluable else float("nan")
    map_area = float(np.mean([v.ap_area for v in evaluable])) if evaluable else float("nan")
    return VOCResult(map07, map_area, per_class, iou_threshold, len(detections), time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------------
# COCO AP via pycocotools
# ----------------------------------------------------------------------------------------------------------

def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _coco_from_dataset(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    _quiet(coco.createIndex)
    return coco


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def evaluate_coco(detections, ground_truths=None, *, num_classes: int | None = None, class_names=None,
                  ann_file=None, coco_gt=None, image_ids=None, category_ids=None) -> dict:
    """COCO box AP (IoU 0.5:0.95), AP50, AP75, AP/AR by object size, computed by pycocotools' COCOeval
    with its standard settings (maxDets 1/10/100: at most the 100 best detections of each image count).

    Ground truth either in memory — `ground_truths` as for `evaluate_voc`; boxes marked difficult become
    COCO "iscrowd" regions (detections on them are neither right nor wrong); areas are box areas — or from a
    COCO annotation file (`ann_file`, or an already loaded `coco_gt`). With a file, `image_ids[i]` is the COCO
    image id of `detections[i]` (default: the file's sorted image ids) and label k maps to
    `category_ids[k-1]` (default: by `class_names` matched to the file's category names, else the sorted
    category ids). Only the images in `image_ids` are evaluated.

    Returns {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
    "AR_medium", "AR_large"} (nan where COCO reports -1: no ground truth in that size range) and
    "per_class_AP" (AP@[.5:.95] per class, nan for classes without ground truth).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if ann_file is not None or coco_gt is not None:
        gt = coco_gt if coco_gt is not None else _quiet(COCO, str(ann_file))
        if image_ids is None:
            image_ids = sorted(gt.getImgIds())[:len(detections)]
        image_ids = list(image_ids)
        if len(image_ids) != len(detections):
            raise ValueError(f"{len(detections)} images of detections but {len(image_ids)} image_ids")
        unknown = [i for i in image_ids if i not in gt.imgs]
        if unknown:
            raise ValueError(f"image ids {unknown[:5]} are not in the COCO annotations")
        cats = sorted(gt.getCatIds())
        if category_ids is None:
            if class_names is not None:
                by_name = {c["name"]: c["id"] for c in gt.loadCats(cats)}
                missing = [n for n in class_names if n not in by_name]
                if missing:
                    raise ValueError(f"classes {missing[:5]} are not categories of the COCO annotations "
                                     f"(which has {sorted(by_name)[:10]}...)")
                category_ids = [by_name[n] for n in class_names]
            else:
                category_ids = cats
        category_ids = list(category_ids)
        num_classes = len(category_ids)
        names = list(class_names) if class_names is not None else [gt.cats[c]["name"] for c in category_ids]
    else:
        if ground_truths is None:
            raise ValueError("evaluate_coco needs ground_truths, ann_file or coco_gt")
        if len(ground_truths) != len(detections):
            raise ValueError(f"{len(detections)} images of detections but {len(ground_truths)} of ground truth")
        if num_classes is None:
            if class_names is None:
                raise ValueError("evaluate_coco with in-memory ground truth needs num_classes or class_names")
            num_classes = len(class_names)
        names = list(class_names) if class_names is not None else [str(c) for c in range(1, num_classes + 1)]
        image_ids = list(range(1, len(ground_truths) + 1))
        category_ids = list(range(1, num_classes + 1))
        _, counts, (boxes, labels, difficult) = _flatten(ground_truths, _image_ground_truth, "ground_truths",
                                                         num_classes)
        anns = []
        if counts.sum():
            xywh = _xywh(boxes)
            img = np.repeat(image_ids, counts)
            # Annotation ids start at 1: COCOeval stores matches as ids and reads 0 as "unmatched".
            anns = [{"id": k + 1, "image_id": int(img[k]), "category_id": int(labels[k]),
                     "bbox": xywh[k].tolist(), "area": float(xywh[k, 2] * xywh[k, 3]),
                     "iscrowd": int(difficult[k])} for k in range(len(labels))]
        gt = _coco_from_dataset({
            "images": [{"id": i} for i in image_ids],
            "categories": [{"id": c, "name": n} for c, n in zip(category_ids, names, strict=True)],
            "annotations": anns,
        })

    _, counts, (boxes, scores, labels) = _flatten(detections, _image_detections, "detections", num_classes)
    results = []
    if counts.sum():
        xywh = _xywh(boxes)
        img = np.repeat(np.asarray(image_ids), counts)
        cat = np.asarray(category_ids)[labels - 1]
        results = [{"id": k + 1, "image_id": int(img[k]), "category_id": int(cat[k]), "bbox": xywh[k].tolist(),
                    "score": float(scores[k]), "area": float(xywh[k, 2] * xywh[k, 3])}
                   for k in range(len(labels))]
    # Built directly rather than with COCO.loadRes, which cannot take an empty result list.
    dt = _coco_from_dataset({"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                             "annotations": results})
    E = COCOeval(gt, dt, "bbox")
    E.params.imgIds = list(image_ids)
    E.params.catIds = list(category_ids)
    _quiet(E.evaluate)
    _quiet(E.accumulate)
    _quiet(E.summarize)
    out = {k: (float("nan") if v < 0 else float(v)) for k, v in zip(_COCO_STAT_NAMES, E.stats, strict=True)}
    # precision: [T iou, R recall, K class, A area, M maxDets]; -1 where a class has no ground truth.
    p = E.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, n in enumerate(names):
        v = p[:, :, k]
        per_class[n] = float(v[v > -1].mean()) if (v > -1).any() else float("nan")
    out["per_class_AP"] = per_class
    return out


# ----------------------------------------------------------------------------------------------------------
# Running a detector over a dataset
# ----------------------------------------------------------------------------------------------------------

def _label_map(detector_names, dataset_names) -> np.ndarray | None:
    """Detector class id -> dataset label (0 = not a dataset class); None when they are the same list."""
    detector_names, dataset_names = tuple(detector_names), tuple(dataset_names)
    if detector_names == dataset_names:
        return None
    index = {n: k for k, n in enumerate(dataset_names, start=1)}
    table = np.array([0] + [index.get(n, 0) for n in detector_names], dtype=np.int64)
    if not table.any():
        raise ValueError(f"the detector's classes {list(detector_names)[:6]}... share no name with the "
                         f"dataset's classes {list(dataset_names)[:6]}...")
    return table


def collect_detections(detector, dataset, limit: int | None = None, batch_size: int = 16, progress: bool = True,
                       score_threshold: float = 0.01, nms_threshold: float = 0.45, top_k: int = 200,
                       workers: int = 2):
    """Run `detector.detect_batch` over the first `limit` images of `dataset`.

    Returns (detections, ground_truths, seconds): per image (boxes, scores, labels) numpy arrays with labels
    in the dataset's numbering (detector classes are matched to `dataset.classes` by name), per image
    `dataset.annotation(i)[:3]`, and the wall time of loading + detecting. The next chunk of images is
    decoded on `workers` threads while the current one runs through the network.
    """
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    names = getattr(detector, "class_names", None)
    table = _label_map(names, dataset.classes) if names is not None else None
    ground_truths = [tuple(dataset.annotation(i)[:3]) for i in range(n)]
    detections = []
    chunk = max(1, int(batch_size))
    starts = range(0, n, chunk)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="evaluate", unit="img", leave=False)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def submit(s):
            return [pool.submit(lambda i: dataset.load(i).image, i) for i in range(s, min(s + chunk, n))]

        pending = submit(0) if n else []
        for s in starts:
            images = [f.result() for f in pending]
            pending = submit(s + chunk) if s + chunk < n else []
            out = detector.detect_batch(images, score_threshold=score_threshold, nms_threshold=nms_threshold,
                                        top_k=top_k, batch_size=chunk)
            for dets in out:
                boxes, scores, labels = _image_detections(dets, len(detections))
                if table is not None:
                    labels = table[labels]
                    boxes, scores, labels = boxes[labels > 0], scores[labels > 0], labels[labels > 0]
                detections.append((boxes, scores, labels))
            if bar is not None:
                bar.update(len(images))
    if bar is not None:
        bar.close()
    return detections, ground_truths, time.perf_counter() - t0


def evaluate_detector(detector, dataset, limit: int | None = None, batch_size: int = 16, progress: bool = True,
                      iou_threshold: float = 0.5, **detect_kwargs) -> VOCResult:
    """VOC mAP of `detector` on (the first `limit` images of) `dataset`, with the paper's inference settings
    (score threshold 0.01, NMS 0.45, top 200). `result.detect_seconds` is the loading + detection time."""
    detections, ground_truths, seconds = collect_detections(detector, dataset, limit, batch_size, progress,
                                                            **detect_kwargs)
    result = evaluate_voc(detections, ground_truths, len(dataset.classes), iou_threshold,
                          class_names=tuple(dataset.classes))
    result.detect_seconds = seconds
    return result


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="VOC mAP (VOC07 11-point and area) and COCO AP of SSD weights on a dataset.")
    p.add_argument("--weights", help="a .safetensors file written by training (model card beside it); "
                                     "default: the shipped demo weights")
    p.add_argument("--data-root", help="VOC folder holding Annotations/, JPEGImages/, ImageSets/Main/")
    p.add_argument("--image-set", default="val", help="VOC ImageSets/Main list (default: val)")
    p.add_argument("--pack", help="evaluate on a training pack file instead")
    p.add_argument("--coco-ann", help="COCO annotation JSON (with --image-dir); adds COCO AP from this file")
    p.add_argument("--image-dir", help="COCO image folder")
    p.add_argument("--coco-metrics", action="store_true", help="also COCO AP for VOC / pack data (slower)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--iou", type=float, default=0.5, help="VOC IoU threshold (default 0.5)")
    p.add_argument("--json", help="write every number (and the PR curves) to this JSON file")
    p.add_argument("--plot", help="save the precision-recall curves to this PNG")
    p.add_argument("--no-progress", action="store_true")
    return p


def _load(args):
    """(dataset, detector) named by the command line."""
    from ssd import Detector

    from . import datasets

    if args.pack:
        from .pack import PackDataset

        dataset = PackDataset(args.pack)
    elif args.coco_ann or args.image_dir:
        if not (args.coco_ann and args.image_dir):
            raise ValueError("--coco-ann and --image-dir go together")
        dataset = datasets.COCODataset(args.image_dir, args.coco_ann)
    elif args.data_root:
        dataset = None  # built below, with the detector's classes
    else:
        raise ValueError("name the data: --data-root DIR [--image-set val], --pack FILE, or --coco-ann/--image-dir")

    detector = Detector.load(args.weights, device=args.device)
    if dataset is None:
        # Difficult boxes are kept so that detections on them are ignored, as the devkit does.
        dataset = datasets.VOCDataset(args.data_root, args.image_set, classes=detector.class_names,
                                      keep_difficult=True)
    return dataset, detector


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        dataset, detector = _load(args)
    except (FileNotFoundError, ValueError) as e:  # missing weights, malformed data (DatasetError): say which
        print(f"error: {e}", file=sys.stderr)
        return 2

    detections, ground_truths, seconds = collect_detections(
        detector, dataset, args.limit, args.batch_size, progress=not args.no_progress)
    classes = tuple(dataset.classes)
    result = evaluate_voc(detections, ground_truths, len(classes), args.iou, class_names=classes)
    result.detect_seconds = seconds
    n = result.num_images
    print(f"{n} images, detection {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} img/s), "
          f"VOC evaluation {result.eval_seconds:.2f} s")
    print(result.table())
    print(f"VOC07 11-point mAP: {_pct(result.map_11pt).strip()}   area mAP (VOC2010+): "
          f"{_pct(result.map_area).strip()}   (IoU {args.iou})")

    report = {"weights": str(args.weights or "shipped default"), "dataset": str(args.pack or args.coco_ann
              or f"{args.data_root}:{args.image_set}"), "voc": result.to_dict(curves=bool(args.json))}
    coco = None
    if args.coco_ann:
        # COCODataset keeps image ids as strings; the annotation file has them as numbers.
        ids = [int(i) if str(i).isdigit() else i for i in dataset.ids[:n]]
        coco = evaluate_coco(detections, ann_file=args.coco_ann, image_ids=ids, class_names=classes)
    elif args.coco_metrics:
        coco = evaluate_coco(detections, ground_truths, class_names=classes)
    if coco is not None:
        print("COCO " + "  ".join(f"{k} {_pct(coco[k]).strip()}" for k in _COCO_STAT_NAMES[:6]))
        report["coco"] = {k: (_num(v) if not isinstance(v, dict) else {c: _num(a) for c, a in v.items()})
                          for k, v in coco.items()}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        # Compact: with PR curves of thousands of points an indented file would run to a million lines.
        Path(args.json).write_text(json.dumps(report) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from visualize.plots import plot_pr_curves

        plot_pr_curves(result, classes, path=args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
