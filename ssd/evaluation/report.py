"""The evaluation report that sits beside the weights (`<weights stem>.eval.json`), written by
`python -m train.evaluate --report`: what the app's Model tab shows about how good a model is, measured once
instead of at every start of the app.

It holds mAP and per-class AP, each class's precision-recall curve downsampled to a few hundred points, and the
highest-scoring false positives, each with the kind of error it is. Every verdict (true positive, false
positive, duplicate) comes from `ssd.evaluation.voc`'s matching (`VOCResult.outcomes`); this module only reads
them and, for a false positive, looks up which ground-truth box it overlaps most.

Kinds of false positive, after Hoiem, Chodpathumwan and Dai, "Diagnosing error in object detectors" (ECCV 2012):
* duplicate: its own class's box at IoU >= the threshold, already claimed by a higher-scoring detection;
* otherwise, by the ground-truth box of any class it overlaps most:
  * background: no box at IoU >= 0.1;
  * localisation: that box is of its own class (0.1 <= IoU < the threshold: the right object, a poor box);
  * confusion: that box is of another class (it calls that object by the wrong name).
Hoiem et al. let "localisation" win whenever the detection's own class overlaps it by 0.1 or more; here the box
it overlaps most decides, so that the kind always agrees with the ground truth (and best IoU) listed beside it.
Each listed false positive also carries its TIDE kind (`tide_error`), the one the error analysis counts.

`error_analysis` is `ssd.evaluation.analysis`'s: the TIDE kinds of error and the mAP each costs, AP by object size,
the confusion matrix at the report's score threshold and the objects missed there, each with its nearest
detection. Every image listed (a false positive, a missed object) carries its id (`image`) and, where the data
has file names, its file (`file`). The report's format number stays 1: these are fields added, and readers of the
others are unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from ..weights_files import REPORT_FORMAT, REPORT_SUFFIX, beside, sha256
from .analysis import ErrorAnalysis, analyse_errors
from .tide import BACKGROUND_IOU, KINDS
from .voc import DetectionOutcomes, VOCResult, json_number

__all__ = ["ERRORS", "REPORT_SUFFIX", "build_report", "classify_false_positives", "downsample_curve",
           "report_path", "sha256", "write_report"]

ERRORS = ("background", "localisation", "confusion", "duplicate")
OVERLAP_IOU = BACKGROUND_IOU  # below this IoU a detection does not touch an object (Hoiem et al., TIDE)
PR_POINTS = 200  # per class, in the report
WORST = 24  # false positives listed, highest score first


def report_path(weights) -> Path:
    """Where the report of `weights` goes: beside them, `<stem>.eval.json`."""
    return beside(weights, REPORT_SUFFIX)


def downsample_curve(recall, precision, scores, max_points: int = PR_POINTS) -> dict:
    """At most `max_points` points of a PR curve (detections in rank order), spread evenly along the curve's
    length in the (recall, precision) plane, so that steep drops and long flat runs both keep their shape.
    The first and last points are always kept; recall never decreases along the result."""
    rec, prec, sc = (np.asarray(a, np.float64).ravel() for a in (recall, precision, scores))
    n = len(rec)
    if n > max_points:
        step = np.hypot(np.diff(rec, prepend=rec[0]), np.diff(prec, prepend=prec[0]))
        length = np.cumsum(step)
        # Points at evenly spaced lengths, and evenly spaced ranks as a fallback where the curve barely moves.
        by_length = np.searchsorted(length, np.linspace(0, length[-1], max_points // 2), side="left")
        by_rank = np.linspace(0, n - 1, max_points - max_points // 2).round().astype(np.int64)
        keep = np.unique(np.concatenate([[0, n - 1], np.minimum(by_length, n - 1), by_rank]))
        rec, prec, sc = rec[keep], prec[keep], sc[keep]

    def r4(a):
        return [None if not np.isfinite(x) else round(float(x), 4) for x in a]

    return {"recall": r4(rec), "precision": r4(prec), "scores": r4(sc)}


def classify_false_positives(outcomes: DetectionOutcomes, rows, iou_threshold: float) -> list[dict]:
    """The kind of error of each false positive `rows` (indices into `outcomes`), with the ground-truth box
    the kind was decided by: {"error", "iou", "gt"} where gt is that box's row in outcomes.gt_* (-1 when the
    detection touches no box). For a duplicate it is the box it duplicates; otherwise the box of any class it
    overlaps most."""
    rows = np.asarray(rows, np.int64).ravel()
    out = [None] * len(rows)
    wrong = rows[outcomes.status[rows] != DetectionOutcomes.FALSE_POSITIVE]
    if len(wrong):
        raise ValueError(f"detection {int(wrong[0])} is not a false positive")
    # One IoU matrix per image: its false positives against all of its ground truth, any class.
    images = outcomes.image[rows]
    for image in np.unique(images):
        mine = np.flatnonzero(images == image)
        gts = np.flatnonzero(outcomes.gt_image == image)
        if len(gts):
            iou = box_iou(torch.from_numpy(outcomes.boxes[rows[mine]]), torch.from_numpy(outcomes.gt_boxes[gts]))
            iou = iou.numpy()
        for j, k in enumerate(mine):
            r = rows[k]
            same_iou, same_gt = float(outcomes.best_iou[r]), int(outcomes.best_gt[r])
            if same_iou >= iou_threshold:  # the matching says its box was taken: a duplicate
                out[k] = {"error": "duplicate", "iou": same_iou, "gt": same_gt}
                continue
            if not len(gts):
                out[k] = {"error": "background", "iou": 0.0, "gt": -1}
                continue
            best = int(iou[j].argmax())
            best_iou = float(iou[j, best])
            gt = int(gts[best]) if best_iou > 0 else -1  # touching no box: no box to show
            if best_iou < OVERLAP_IOU:
                error = "background"
            elif outcomes.gt_labels[gt] == outcomes.labels[r]:
                error = "localisation"
            else:
                error = "confusion"
            out[k] = {"error": error, "iou": best_iou, "gt": gt}
    return out


def _box(b) -> list[float]:
    return [round(float(v), 1) for v in b]


def build_report(result: VOCResult, class_names, image_ids, image_sizes, *, worst: int = WORST,
                 pr_points: int = PR_POINTS, score_threshold: float | None = None,
                 analysis: ErrorAnalysis | None = None, image_files=None, **about) -> dict:
    """The report of one evaluation: `result` from `evaluate_voc` (with its outcomes), the dataset's
    `image_ids` and (width, height) per image (the pixels the boxes are in), in evaluation order.
    `image_files`: each image's file name, in the same order, given beside its id to every image listed (a COCO
    id is a number that names no file); None where the data keeps no file names (a pack).

    score_threshold: the false positives scoring at least this much are counted by kind, and the error analysis's
    confusion matrix and missed objects are counted there (default: the best-F1 threshold of `result`, the one
    the model card recommends). analysis: `analyse_errors(result, that threshold)` when already computed.
    `about`: what was evaluated and how (weights, data, command ...), stored as given."""
    outcomes = result.outcomes
    if outcomes is None:
        raise ValueError("the result carries no per-detection outcomes (evaluate_voc attaches them)")
    names = list(class_names)
    if len(image_ids) != result.num_images or len(image_sizes) != result.num_images:
        raise ValueError(f"{len(image_ids)} image ids and {len(image_sizes)} sizes for {result.num_images} images")
    if image_files is not None and len(image_files) != result.num_images:
        raise ValueError(f"{len(image_files)} file names for {result.num_images} images")

    def name(label) -> str:
        return names[int(label) - 1]

    per_class = {}
    for key, c in result.per_class.items():
        per_class[str(key)] = {**c.to_dict(), "pr": downsample_curve(c.recall, c.precision, c.scores, pr_points)}

    fps = outcomes.false_positives()
    best_f1 = result.best_f1_threshold()
    threshold = best_f1["score"] if score_threshold is None else float(score_threshold)
    if analysis is None:
        analysis = analyse_errors(result, threshold)
    elif np.isfinite(threshold) and analysis.score_threshold != threshold:
        raise ValueError(f"the error analysis counts at score {analysis.score_threshold}, the report at {threshold}")
    above = fps[outcomes.scores[fps] >= threshold] if np.isfinite(threshold) else fps[:0]
    # `fps` is sorted by score, so those above the threshold and those listed are both prefixes: classify once.
    classified = classify_false_positives(outcomes, fps[:max(len(above), worst)], result.iou_threshold)
    kinds = classified[:len(above)]
    confused = Counter(name(outcomes.gt_labels[k["gt"]]) for k in kinds if k["error"] == "confusion")
    tp_above = int(((outcomes.status == DetectionOutcomes.TRUE_POSITIVE) & (outcomes.scores >= threshold)).sum())

    listed = fps[:worst]
    worst_list = []
    for rank, (r, kind) in enumerate(zip(listed, classified), start=1):
        i, gt = int(outcomes.image[r]), kind["gt"]
        truth = None if gt < 0 else {"class": name(outcomes.gt_labels[gt]), "box": _box(outcomes.gt_boxes[gt])}
        worst_list.append({
            "rank": rank, "image": str(image_ids[i]), "image_size": [int(v) for v in image_sizes[i]],
            **({"file": str(image_files[i])} if image_files is not None else {}),
            "class": name(outcomes.labels[r]), "score": round(float(outcomes.scores[r]), 4),
            "box": _box(outcomes.boxes[r]), "error": kind["error"],
            "confused_with": truth["class"] if kind["error"] == "confusion" else None,
            "iou": round(kind["iou"], 3), "ground_truth": truth,
            "tide_error": KINDS[analysis.kinds.kind[r]],
        })

    return {
        "format": REPORT_FORMAT,
        **about,
        "images": result.num_images,
        "iou_threshold": result.iou_threshold,
        "map_area": json_number(result.map_area),
        "map_11pt": json_number(result.map_11pt),
        "best_f1": {k: json_number(v) for k, v in best_f1.items()},
        "detect_seconds": result.detect_seconds,
        "per_class": per_class,
        "false_positives": {
            "total": int(len(fps)),
            "score_threshold": json_number(threshold),
            "above_threshold": int(len(above)),
            "true_positives_above_threshold": tp_above,
            "by_error": {e: sum(k["error"] == e for k in kinds) for e in ERRORS},
            "confused_with": dict(confused.most_common()),
            "worst": worst_list,
        },
        "error_analysis": analysis.to_dict(image_ids, image_sizes, image_files=image_files),
    }


def write_report(path, report: dict) -> Path:
    """Compact JSON (a hundred KB for 20 classes), one line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, separators=(",", ":")) + "\n")
    return path
