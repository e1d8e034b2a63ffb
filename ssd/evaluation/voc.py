"""PASCAL VOC mAP: VOC07 11-point and VOC2010+ area.

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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_iou

from .inputs import flatten, image_detections, image_ground_truth

__all__ = ["ClassAP", "DetectionOutcomes", "VOCResult", "evaluate_voc", "voc_ap"]

# Pairs of (detection, ground truth) compared per box_iou call; bounds memory, keeps calls few.
_IOU_CHUNK = 16_000


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
        d = {"ap_11pt": json_number(self.ap_11pt), "ap_area": json_number(self.ap_area), "npos": self.npos,
             "ndet": self.ndet}
        if curves:
            d.update(precision=self.precision.tolist(), recall=self.recall.tolist(), scores=self.scores.tolist())
        return d


@dataclass
class DetectionOutcomes:
    """What the matching made of every detection, in input order (image 0's detections, then image 1's, ...),
    with the ground truth flattened the same way, so that an error analysis reads the matching's verdicts
    instead of matching again.

    status: TRUE_POSITIVE, FALSE_POSITIVE or IGNORED (matched a difficult box; neither). best_iou / best_gt:
    the highest IoU with a ground-truth box of the same image and class (-1 when there is none) and that box's
    row in gt_*. A false positive with best_iou >= the IoU threshold is a duplicate: a higher-ranked detection
    claimed that box first."""

    TRUE_POSITIVE = 1
    FALSE_POSITIVE = 0
    IGNORED = -1

    image: np.ndarray  # [D] image index
    boxes: np.ndarray  # [D, 4] pixel xyxy
    scores: np.ndarray  # [D]
    labels: np.ndarray  # [D] 1..C
    status: np.ndarray  # [D] int8
    best_iou: np.ndarray  # [D]
    best_gt: np.ndarray  # [D] row in gt_*, -1 if none
    gt_image: np.ndarray  # [G]
    gt_boxes: np.ndarray  # [G, 4]
    gt_labels: np.ndarray  # [G]
    gt_difficult: np.ndarray  # [G] bool

    def false_positives(self) -> np.ndarray:
        """Rows of the false positives, highest score first (stable: input order on ties)."""
        rows = np.flatnonzero(self.status == self.FALSE_POSITIVE)
        return rows[np.argsort(-self.scores[rows], kind="stable")]


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
    detect_seconds: float | None = None  # set by `run.score_voc`: time spent loading + detecting
    outcomes: DetectionOutcomes | None = field(default=None, repr=False)  # every detection's verdict

    def to_dict(self, curves: bool = False) -> dict:
        return {
            "map_11pt": json_number(self.map_11pt), "map_area": json_number(self.map_area),
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
            lines.append(f"{str(k):<{width}}  {format_percent(c.ap_11pt)}  {format_percent(c.ap_area)}  "
                         f"{c.npos:>6}  {c.ndet:>7}")
        lines.append(f"{'mAP':<{width}}  {format_percent(self.map_11pt)}  {format_percent(self.map_area)}")
        return "\n".join(lines)


def json_number(x):
    """JSON-safe float: nan -> None."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def format_percent(x) -> str:
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
    _, det_counts, (det_boxes, det_scores, det_labels) = flatten(
        detections, image_detections, "detections", num_classes)
    _, gt_counts, (gt_boxes, gt_labels, gt_difficult) = flatten(
        ground_truths, image_ground_truth, "ground_truths", num_classes)
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
    status = np.where(ignored, DetectionOutcomes.IGNORED, DetectionOutcomes.FALSE_POSITIVE).astype(np.int8)
    status[order[tp_sorted]] = DetectionOutcomes.TRUE_POSITIVE
    outcomes = DetectionOutcomes(np.repeat(np.arange(len(det_counts)), det_counts), det_boxes, det_scores,
                                 det_labels, status, best_iou, best_gt,
                                 np.repeat(np.arange(len(gt_counts)), gt_counts), gt_boxes, gt_labels, gt_difficult)
    return VOCResult(map07, map_area, per_class, iou_threshold, len(detections), time.perf_counter() - start,
                     outcomes=outcomes)
