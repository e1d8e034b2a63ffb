"""Error analysis of one VOC evaluation, for a practitioner's "what should I fix first?": the TIDE kinds of error
and the mAP each costs (`tide`), AP by object size, the confusion matrix of the classes and background at a score
threshold, and the objects missed at that threshold, each beside the detection that came nearest it. All of it
reads the matching's verdicts (`VOCResult.outcomes`) and scores again with `evaluate_voc`; none matches anew.

Object sizes are COCO's bins of box area: small below 32² pixels, medium below 96², large from 96², in the
pixels of the photo as annotated. VOC's photos (about 500×375) are a little smaller than COCO's (640×480), so the
bins cut at nearly the same fraction of a photo, and the numbers read beside pycocotools' AP_small/medium/large
(which measure a COCO object's mask area, not its box). Every photo is resized to the network's input (300 or
384 pixels a side), so a 32-pixel object of a 500-pixel VOC photo is about 25 pixels there, smaller than the
smallest default boxes. AP by size follows COCO's rule: objects outside the bin are ignored, as VOC's difficult
ones are (a detection that matches one counts neither way), and so are false positives whose own box is
outside it.

The confusion matrix counts, at score >= the threshold, rows what is there (0: background, then the classes)
against columns what was detected (0: nothing, then the classes): a true positive on its diagonal cell, a
classification error (TIDE's Cls) in the row of the object it is on, every other false positive in row 0, and
every object without a true positive in column 0. So a class's diagonal plus its column-0 cell is its number of
objects, and a column sums to the class's detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_iou

from .tide import (
    BACKGROUND_IOU,
    CLS,
    KINDS,
    SHORT_NAMES,
    SPECIAL,
    ErrorKinds,
    KindCost,
    class_arguments,
    error_kinds,
    kind_costs,
    rescore,
)
from .voc import DetectionOutcomes, VOCResult, format_percent, json_number

__all__ = ["MISSED_REASONS", "SIZE_BINS", "ErrorAnalysis", "MissedObject", "SizeAP", "analyse_errors",
           "ap_by_size", "confusion_matrix", "missed_objects"]

SIZE_BINS = (("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2), ("large", 96.0 ** 2, math.inf))
# Why an object has no true positive at the threshold, by the detection nearest it:
MISSED_REASONS = (
    "below_threshold",  # its own true positive scores under the threshold
    "wrong_class",      # the nearest detection names another class
    "poor_box",         # the nearest detection has its class, at IoU < the evaluation's threshold
    "other_object",     # its class at IoU >= the threshold, but the matching gave it a neighbour it overlaps more
    "not_detected",     # no detection touches it (IoU >= 0.1)
)
LISTED = 24  # missed objects listed in a report, highest-scoring near miss first
TP, FP, IGNORED = DetectionOutcomes.TRUE_POSITIVE, DetectionOutcomes.FALSE_POSITIVE, DetectionOutcomes.IGNORED


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


@dataclass
class SizeAP:
    """mAP over the objects whose box area (pixels) is in [min_area, max_area)."""

    name: str
    min_area: float
    max_area: float
    objects: int
    map_area: float
    map_11pt: float


def ap_by_size(result: VOCResult, bins=SIZE_BINS) -> list[SizeAP]:
    """mAP per size bin (name, min area, max area), COCO's rule (see the module docstring)."""
    o = result.outcomes
    gt_area, det_area = _area(o.gt_boxes), _area(o.boxes)
    every, every_gt = np.ones(len(o.status), bool), np.ones(len(o.gt_labels), bool)
    out = []
    for name, lo, hi in bins:
        difficult = o.gt_difficult | (gt_area < lo) | (gt_area >= hi)
        marked = rescore(result, every, o.boxes, o.labels, every_gt, difficult)
        # Removing false positives changes no other verdict: none of them was first to claim an object.
        outside = (marked.outcomes.status == FP) & ((det_area < lo) | (det_area >= hi))
        scored = rescore(result, ~outside, o.boxes, o.labels, every_gt, difficult)
        out.append(SizeAP(name, lo, hi, int((~difficult).sum()), scored.map_area, scored.map_11pt))
    return out


def confusion_matrix(outcomes: DetectionOutcomes, kinds: ErrorKinds, score_threshold: float,
                     num_classes: int) -> np.ndarray:
    """[C+1, C+1] counts at score >= `score_threshold`: rows the truth (0 background), columns the detection
    (0 nothing); see the module docstring."""
    m = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    above = outcomes.scores >= score_threshold
    tp = above & (outcomes.status == TP)
    np.add.at(m, (outcomes.labels[tp], outcomes.labels[tp]), 1)
    cls = above & (kinds.kind == CLS)
    np.add.at(m, (outcomes.gt_labels[kinds.target[cls]], outcomes.labels[cls]), 1)
    rest = above & (outcomes.status == FP) & (kinds.kind != CLS)
    np.add.at(m, (np.zeros(int(rest.sum()), np.int64), outcomes.labels[rest]), 1)
    found = np.zeros(len(outcomes.gt_labels), bool)
    found[outcomes.best_gt[tp]] = True
    missed = ~outcomes.gt_difficult & ~found
    np.add.at(m, (outcomes.gt_labels[missed], np.zeros(int(missed.sum()), np.int64)), 1)
    return m


@dataclass
class MissedObject:
    """An object without a true positive at the threshold (gt: its row in outcomes.gt_*), the detection nearest
    it (near: row in outcomes, -1 when none touches it) and their IoU: its own true positive when it has one
    (under the threshold), else the highest-scoring detection at IoU >= 0.1 that is no other object's."""

    gt: int
    reason: str
    near: int
    iou: float


def _nearest(o: DetectionOutcomes, g: int, candidates, overlap, own_tp: int, iou_threshold: float,
             background_iou: float) -> MissedObject:
    if own_tp >= 0:
        return MissedObject(g, "below_threshold", own_tp, float(o.best_iou[own_tp]))
    touching = np.flatnonzero(overlap >= background_iou)
    if not len(touching):
        return MissedObject(g, "not_detected", -1, 0.0)
    best = touching[np.argmax(o.scores[candidates[touching]])]  # first of equal scores: input order
    near, iou = int(candidates[best]), float(overlap[best])
    if o.labels[near] != o.gt_labels[g]:
        reason = "wrong_class"
    else:
        reason = "poor_box" if iou < iou_threshold else "other_object"
    return MissedObject(g, reason, near, iou)


def missed_objects(outcomes: DetectionOutcomes, score_threshold: float, iou_threshold: float,
                   background_iou: float = BACKGROUND_IOU) -> list[MissedObject]:
    """The objects without a true positive scoring >= `score_threshold`, the one nearest to being found first
    (its near miss's score, then its row); those no detection touches last."""
    o = outcomes
    tp = np.flatnonzero(o.status == TP)
    own_tp = np.full(len(o.gt_labels), -1, np.int64)
    own_tp[o.best_gt[tp]] = tp
    found = np.zeros(len(o.gt_labels), bool)
    found[o.best_gt[tp[o.scores[tp] >= score_threshold]]] = True
    missed = np.flatnonzero(~o.gt_difficult & ~found)
    out = []
    for gts in np.split(missed, np.flatnonzero(np.diff(o.gt_image[missed])) + 1) if len(missed) else []:
        image = o.gt_image[gts[0]]
        d0, d1 = np.searchsorted(o.image, [image, image + 1])
        # Another object's true positive, or a detection on a difficult object, is no near miss of this one.
        candidates = d0 + np.flatnonzero(o.status[d0:d1] == FP)
        overlap = np.zeros((len(candidates), len(gts)))
        if len(candidates):
            overlap = box_iou(torch.from_numpy(o.boxes[candidates]), torch.from_numpy(o.gt_boxes[gts])).numpy()
        out += [_nearest(o, int(g), candidates, overlap[:, j], int(own_tp[g]), iou_threshold, background_iou)
                for j, g in enumerate(gts)]
    out.sort(key=lambda m: (-o.scores[m.near] if m.near >= 0 else math.inf, m.gt))
    return out


def _box(b) -> list[float]:
    return [round(float(v), 1) for v in b]


def _cost(c: KindCost) -> dict:
    return {"count": c.count, "map_area": json_number(c.map_area), "map_11pt": json_number(c.map_11pt),
            "dap_area": json_number(c.dap_area), "dap_11pt": json_number(c.dap_11pt)}


@dataclass
class ErrorAnalysis:
    """What `analyse_errors` finds; `to_dict` is the report's `error_analysis`, `table` the printed summary."""

    class_names: tuple
    iou_threshold: float
    background_iou: float
    map_area: float
    map_11pt: float
    costs: dict  # kind -> KindCost: KINDS, SPECIAL, and "all" (the six fixed together)
    by_size: list
    score_threshold: float
    confusion: np.ndarray  # [C+1, C+1], see confusion_matrix
    missed: list  # MissedObject, nearest to being found first
    kinds: ErrorKinds = field(repr=False)
    outcomes: DetectionOutcomes = field(repr=False)

    def costliest(self) -> str:
        """The kind whose fix adds the most mAP (area)."""
        return max(KINDS, key=lambda k: (np.nan_to_num(self.costs[k].dap_area, nan=-1.0), -KINDS.index(k)))

    def missed_by_reason(self) -> dict:
        return {r: sum(m.reason == r for m in self.missed) for r in MISSED_REASONS}

    def _missed_entry(self, rank: int, m: MissedObject, image_ids, image_sizes, image_files=None) -> dict:
        o, names = self.outcomes, self.class_names
        i = int(o.gt_image[m.gt])
        near = None if m.near < 0 else {
            "class": names[o.labels[m.near] - 1], "score": round(float(o.scores[m.near]), 4),
            "box": _box(o.boxes[m.near]), "iou": round(m.iou, 3)}
        return {"rank": rank, "image": str(image_ids[i]) if image_ids is not None else i,
                "image_size": [int(v) for v in image_sizes[i]] if image_sizes is not None else None,
                **({"file": str(image_files[i])} if image_files is not None else {}),
                "class": names[o.gt_labels[m.gt] - 1], "box": _box(o.gt_boxes[m.gt]), "reason": m.reason,
                "near_miss": near}

    def to_dict(self, image_ids=None, image_sizes=None, listed: int = LISTED, image_files=None) -> dict:
        """Plain JSON (no NaN): fractions of 1 for mAP and dAP, as the report's other numbers. `image_files`: each
        image's file name, given to the missed objects listed beside their image's id."""
        return {
            "method": "TIDE (Bolya et al., ECCV 2020) on the VOC matching: dAP is the mAP gained when an oracle "
                      "fixes every error of the kind and the evaluation runs again",
            "iou_threshold": self.iou_threshold, "background_iou": self.background_iou,
            "map_area": json_number(self.map_area), "map_11pt": json_number(self.map_11pt),
            "errors": {k: {"short": SHORT_NAMES[k], **_cost(self.costs[k])} for k in KINDS},
            "special": {k: {"short": SHORT_NAMES[k], **_cost(self.costs[k])} for k in SPECIAL},
            "all_fixed": {"map_area": json_number(self.costs["all"].map_area),
                          "map_11pt": json_number(self.costs["all"].map_11pt)},
            "costliest": self.costliest(),
            "by_size": {s.name: {"min_area": s.min_area, "max_area": None if math.isinf(s.max_area) else s.max_area,
                                 "objects": s.objects, "map_area": json_number(s.map_area),
                                 "map_11pt": json_number(s.map_11pt)} for s in self.by_size},
            "score_threshold": json_number(self.score_threshold),
            "confusion": {"axes": "rows: what is there (0: background), columns: what was detected (0: nothing)",
                          "labels": ["background", *self.class_names], "counts": self.confusion.tolist()},
            "missed": {"total": len(self.missed), "objects": int((~self.outcomes.gt_difficult).sum()),
                       "by_reason": self.missed_by_reason(),
                       "worst": [self._missed_entry(r, m, image_ids, image_sizes, image_files)
                                 for r, m in enumerate(self.missed[:listed], start=1)]},
        }

    def top_confusions(self, n: int = 3) -> list[tuple[str, str, int]]:
        """(object's class, detected class, count) of the largest off-diagonal cells between classes."""
        m = self.confusion[1:, 1:].copy()
        np.fill_diagonal(m, 0)
        cells = [(int(m[i, j]), i, j) for i, j in zip(*np.nonzero(m))]
        cells.sort(key=lambda c: (-c[0], c[1], c[2]))
        return [(self.class_names[i], self.class_names[j], c) for c, i, j in cells[:n]]

    def table(self) -> str:
        """The printed summary: each kind's count and dAP, AP by size, the missed objects, the top confusions."""
        lines = [f"Error analysis (TIDE): mAP points each kind of error would add if fixed "
                 f"(area mAP, IoU {self.iou_threshold:g}, background below {self.background_iou:g})",
                 f"  {'kind':<5} {'errors':>8}  {'dAP':>6}  {'dAP(07)':>7}"]
        for k in (*KINDS, *SPECIAL):
            c = self.costs[k]
            lines.append(f"  {SHORT_NAMES[k]:<5} {c.count:>8}  {format_percent(c.dap_area)}  "
                         f" {format_percent(c.dap_11pt)}")
        best = self.costliest()
        lines.append(f"  costs the most: {SHORT_NAMES[best]} ({best}), "
                     f"+{format_percent(self.costs[best].dap_area).strip()} mAP if fixed")
        lines.append(f"  (FP: every false positive removed; FN: every object found; all six kinds fixed: mAP "
                     f"{format_percent(self.costs['all'].map_area).strip()})")
        lines.append("AP by object size (box area in the photo's pixels; COCO's bins)")
        lines.append(f"  {'size':<7} {'area':<10} {'objects':>7}  {'AP(07)':>6}  {'AP':>6}")
        for s in self.by_size:
            span = (f"< {math.isqrt(int(s.max_area))}²" if s.min_area == 0 else
                    f">= {math.isqrt(int(s.min_area))}²" if math.isinf(s.max_area) else
                    f"{math.isqrt(int(s.min_area))}²-{math.isqrt(int(s.max_area))}²")
            lines.append(f"  {s.name:<7} {span:<10} {s.objects:>7}  {format_percent(s.map_11pt)}  "
                         f"{format_percent(s.map_area)}")
        why = self.missed_by_reason()
        lines.append(f"Missed at score >= {self.score_threshold:.2f}: {len(self.missed)} of "
                     f"{int((~self.outcomes.gt_difficult).sum())} objects: " +
                     ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in why.items()))
        confused = self.top_confusions()
        if confused:
            lines.append("Most confused at that score: " +
                         ", ".join(f"{a} detected as {b} {n}" for a, b, n in confused))
        return "\n".join(lines)


def analyse_errors(result: VOCResult, score_threshold: float | None = None,
                   background_iou: float = BACKGROUND_IOU, bins=SIZE_BINS) -> ErrorAnalysis:
    """The error analysis of `result` (from `evaluate_voc`, with its outcomes). score_threshold: where the
    confusion matrix and the missed objects are counted (default: `result`'s best-F1 threshold)."""
    o = result.outcomes
    if o is None:
        raise ValueError("the result carries no per-detection outcomes (evaluate_voc attaches them)")
    if score_threshold is None:
        score_threshold = result.best_f1_threshold()["score"]
    threshold = float(score_threshold) if np.isfinite(score_threshold) else math.inf
    num_classes, names = class_arguments(result)
    names = names if names is not None else tuple(str(k) for k in result.per_class)
    kinds = error_kinds(o, result.iou_threshold, background_iou)
    return ErrorAnalysis(
        names, result.iou_threshold, background_iou, result.map_area, result.map_11pt, kind_costs(result, kinds),
        ap_by_size(result, bins), threshold, confusion_matrix(o, kinds, threshold, num_classes),
        missed_objects(o, threshold, result.iou_threshold, background_iou), kinds, o)
