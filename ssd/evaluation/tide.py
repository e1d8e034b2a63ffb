"""What each kind of error costs in mAP, after TIDE (Bolya, Foley, Hays and Hoffman, "TIDE: A General Toolbox
for Identifying Object Detection Errors", ECCV 2020).

Every false positive of the VOC matching (`VOCResult.outcomes`, never a second matching) gets one kind, and so
does every object no fix of a detection would find. With t_f the evaluation's IoU threshold (0.5), t_b = 0.1,
IoU_own a false positive's best IoU with an object of its own class and IoU_other with an object of another
class, the first that holds, in the order TIDE's toolbox (tidecv) tests them:

* localisation (Loc): t_b <= IoU_own < t_f: the right class on a poor box;
* classification (Cls): IoU_other >= t_f: a good box with the wrong class;
* duplicate (Dupl): IoU_own >= t_f with an object a higher-scoring detection already took;
* background (Bkg): IoU < t_b with every object;
* both (Cls+Loc): what is left, a poor box (t_b <= IoU_other < t_f) with the wrong class;
* missed (Miss): an object without a true positive that no Cls or Loc error is aimed at.

A kind's dAP is the mAP gained when an oracle fixes every error of that kind, and that kind only, and the same
`evaluate_voc` scores the result again (TIDE's oracles, §2.3):

* Cls takes the object's class, Loc its box: the detection becomes that object's true positive. When several
  fixes aim at one object, only the highest-scoring becomes its true positive and the others are removed; a fix
  aimed at an object that has its true positive already is removed (it would be a duplicate). The fixed
  detection takes the object's box in both cases, so that the matching, run again, is sure to pair them; AP
  sees only a true positive at the detection's score, as in TIDE.
* Both, Dupl and Bkg: the detection is removed (for Both, TIDE cannot tell which object it meant).
* Miss: the object leaves the ground truth (one positive fewer for its class).

TIDE's two special errors are here too: FP removes every false positive (perfect precision), FN every object
without a true positive (perfect recall). Fixing all six kinds leaves only true positives and objects that have
one: mAP 100.

Where tidecv differs: it picks the one detection that a Cls or Loc fix turns into an object's true positive
among both kinds together, even when it fixes one kind only; here among the kinds being fixed, so that fixing
Loc alone is not undone by a Cls error that stays. VOC's `difficult` objects take no part: detections on them
are ignored already, and they are not positives to miss.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from .voc import DetectionOutcomes, VOCResult, evaluate_voc

__all__ = ["BACKGROUND_IOU", "KINDS", "SHORT_NAMES", "SPECIAL", "ErrorKinds", "KindCost", "class_arguments",
           "error_kinds", "fixed_result", "kind_costs", "rescore"]

BACKGROUND_IOU = 0.1  # below this IoU a detection does not touch an object (TIDE's t_b)
KINDS = ("classification", "localisation", "both", "duplicate", "background", "missed")
SHORT_NAMES = {"classification": "Cls", "localisation": "Loc", "both": "Both", "duplicate": "Dupl",
               "background": "Bkg", "missed": "Miss", "false_positives": "FP", "false_negatives": "FN"}
SPECIAL = ("false_positives", "false_negatives")
CLS, LOC, BOTH, DUPL, BKG, MISS = range(6)
NO_ERROR = -1  # true positives and detections on difficult objects


@dataclass
class ErrorKinds:
    """The kind of every detection (index into KINDS, NO_ERROR for true positives and ignored ones) and of every
    object, in `outcomes`' rows.

    target: the object (row in outcomes.gt_*) a Cls, Loc or Dupl error is aimed at, or a Both error overlaps
    most; -1 for Bkg and non-errors. iou: the IoU with it. missed: the objects of kind Miss. has_true_positive:
    the objects some detection found."""

    kind: np.ndarray  # [D] int8
    target: np.ndarray  # [D] int64
    iou: np.ndarray  # [D]
    missed: np.ndarray  # [G] bool
    has_true_positive: np.ndarray  # [G] bool

    def count(self, name: str) -> int:
        if name == "missed":
            return int(self.missed.sum())
        return int((self.kind == KINDS.index(name)).sum())


def _image_kinds(outcomes: DetectionOutcomes, rows, gts, iou_threshold: float, background_iou: float):
    """(kind, target, iou) of the false positives `rows` of one image, whose objects are the rows `gts`."""
    n = len(rows)
    kind, target, iou = np.full(n, BKG, np.int8), np.full(n, -1, np.int64), np.zeros(n)
    gts = gts[~outcomes.gt_difficult[gts]]
    if not len(gts):
        return kind, target, iou
    overlap = box_iou(torch.from_numpy(outcomes.boxes[rows]), torch.from_numpy(outcomes.gt_boxes[gts])).numpy()
    same = outcomes.labels[rows][:, None] == outcomes.gt_labels[gts][None, :]
    own, other = np.where(same, overlap, -1.0), np.where(same, -1.0, overlap)
    own_gt, other_gt = own.argmax(axis=1), other.argmax(axis=1)  # first maximum on ties, as the matching
    own_iou, other_iou = own.max(axis=1), other.max(axis=1)
    tests = [  # (kind, condition, target, iou), TIDE's order: the first that holds wins
        (LOC, (own_iou >= background_iou) & (own_iou < iou_threshold), own_gt, own_iou),
        (CLS, other_iou >= iou_threshold, other_gt, other_iou),
        (DUPL, own_iou >= iou_threshold, own_gt, own_iou),
        (BKG, np.maximum(own_iou, other_iou) < background_iou, None, None),
        (BOTH, np.ones(n, bool), other_gt, other_iou),
    ]
    decided = np.zeros(n, bool)
    for k, holds, aim, value in tests:
        now = holds & ~decided
        kind[now] = k
        if aim is not None:
            target[now], iou[now] = gts[aim[now]], value[now]
        decided |= now
    return kind, target, iou


def error_kinds(outcomes: DetectionOutcomes, iou_threshold: float,
                background_iou: float = BACKGROUND_IOU) -> ErrorKinds:
    """Every false positive's kind and every object's (see the module docstring), from the matching's verdicts."""
    D, G = len(outcomes.status), len(outcomes.gt_labels)
    kind, target, iou = np.full(D, NO_ERROR, np.int8), np.full(D, -1, np.int64), np.zeros(D)
    fps = np.flatnonzero(outcomes.status == DetectionOutcomes.FALSE_POSITIVE)
    # Rows are in image order, detections and objects alike: each image is a slice of both.
    images = outcomes.image[fps]
    cuts = np.flatnonzero(np.diff(images)) + 1
    for rows in np.split(fps, cuts) if len(fps) else []:
        image = outcomes.image[rows[0]]
        g0, g1 = np.searchsorted(outcomes.gt_image, [image, image + 1])
        kind[rows], target[rows], iou[rows] = _image_kinds(outcomes, rows, np.arange(g0, g1), iou_threshold,
                                                           background_iou)
    has_tp = np.zeros(G, bool)
    has_tp[outcomes.best_gt[outcomes.status == DetectionOutcomes.TRUE_POSITIVE]] = True
    aimed = np.zeros(G, bool)
    aimed[target[(kind == CLS) | (kind == LOC)]] = True
    missed = ~outcomes.gt_difficult & ~has_tp & ~aimed
    return ErrorKinds(kind, target, iou, missed, has_tp)


@dataclass
class KindCost:
    """One kind of error: how many there are and the mAP (VOC area and 11-point) once an oracle fixes them."""

    count: int
    map_area: float
    map_11pt: float
    dap_area: float  # map_area gained
    dap_11pt: float


def _split(image: np.ndarray, n_images: int, *columns):
    """Per image, the rows of `columns` (flattened in image order) that belong to it."""
    cuts = np.searchsorted(image, np.arange(1, n_images))
    return list(zip(*(np.split(c, cuts) for c in columns))) if n_images else []


def _fixes(outcomes: DetectionOutcomes, kinds: ErrorKinds, fixed: frozenset):
    """(keep, boxes, labels) of the detections and keep of the objects once the kinds `fixed` are fixed."""
    keep, gt_keep = np.ones(len(outcomes.status), bool), np.ones(len(outcomes.gt_labels), bool)
    boxes, labels = outcomes.boxes.copy(), outcomes.labels.copy()
    for k in (BOTH, DUPL, BKG):
        if KINDS[k] in fixed:
            keep[kinds.kind == k] = False
    aims = [k for k in (CLS, LOC) if KINDS[k] in fixed]
    rows = np.flatnonzero(np.isin(kinds.kind, aims))
    if len(rows):
        keep[rows] = False  # all but one winner per object are removed
        free = rows[~kinds.has_true_positive[kinds.target[rows]]]
        # Highest score first, then input order (the matching's rank); the first row of each object wins.
        order = np.lexsort((free, -outcomes.scores[free], kinds.target[free]))
        _, first = np.unique(kinds.target[free][order], return_index=True)
        winners = free[order][first]
        keep[winners] = True
        boxes[winners] = outcomes.gt_boxes[kinds.target[winners]]
        labels[winners] = outcomes.gt_labels[kinds.target[winners]]
    if "missed" in fixed:
        gt_keep[kinds.missed] = False
    if "false_positives" in fixed:
        keep[outcomes.status == DetectionOutcomes.FALSE_POSITIVE] = False
    if "false_negatives" in fixed:
        gt_keep[~outcomes.gt_difficult & ~kinds.has_true_positive] = False
    return keep, boxes, labels, gt_keep


def class_arguments(result: VOCResult) -> tuple[int, tuple | None]:
    """(num_classes, class_names) to score with `evaluate_voc` again as `result` was scored."""
    keys = tuple(result.per_class)
    return len(keys), (keys if all(isinstance(k, str) for k in keys) else None)


def rescore(result: VOCResult, keep, boxes, labels, gt_keep, gt_difficult=None) -> VOCResult:
    """`evaluate_voc` again on `result`'s detections and objects, those kept, with the boxes, labels and difficult
    flags given (rows of `result.outcomes`)."""
    o = result.outcomes
    difficult = o.gt_difficult if gt_difficult is None else gt_difficult
    detections = _split(o.image[keep], result.num_images, boxes[keep], o.scores[keep], labels[keep])
    truths = _split(o.gt_image[gt_keep], result.num_images, o.gt_boxes[gt_keep], o.gt_labels[gt_keep],
                    difficult[gt_keep])
    num_classes, names = class_arguments(result)
    return evaluate_voc(detections, truths, num_classes, result.iou_threshold, class_names=names)


def fixed_result(result: VOCResult, kinds: ErrorKinds, fixed: Iterable[str]) -> VOCResult:
    """`result` scored again after an oracle fixed the errors of the kinds named (KINDS and SPECIAL)."""
    fixed = frozenset(fixed)
    unknown = fixed - set(KINDS) - set(SPECIAL)
    if unknown:
        raise ValueError(f"unknown kinds of error {sorted(unknown)}; known: {list(KINDS) + list(SPECIAL)}")
    return rescore(result, *_fixes(result.outcomes, kinds, fixed))


def kind_costs(result: VOCResult, kinds: ErrorKinds) -> dict[str, KindCost]:
    """Each kind's count and dAP (KINDS, then SPECIAL), and "all": the six kinds fixed together."""
    costs = {}
    for name in (*KINDS, *SPECIAL, "all"):
        fixed = fixed_result(result, kinds, KINDS if name == "all" else (name,))
        if name == "false_positives":
            count = int((result.outcomes.status == DetectionOutcomes.FALSE_POSITIVE).sum())
        elif name == "false_negatives":
            count = int((~result.outcomes.gt_difficult & ~kinds.has_true_positive).sum())
        elif name == "all":
            count = sum(kinds.count(k) for k in KINDS)
        else:
            count = kinds.count(name)
        costs[name] = KindCost(count, fixed.map_area, fixed.map_11pt, fixed.map_area - result.map_area,
                               fixed.map_11pt - result.map_11pt)
    return costs
