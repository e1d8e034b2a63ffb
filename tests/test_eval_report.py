"""The evaluation report beside the weights (ssd.evaluation.report, `python -m train.evaluate --report`): the
matching's verdicts per detection, the kinds of false positive, the downsampled PR curves, and the file the
app's Model tab reads back (visualize.model_report)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssd.evaluation.report import (
    build_report,
    classify_false_positives,
    downsample_curve,
    report_path,
    write_report,
)
from ssd.evaluation.voc import DetectionOutcomes, evaluate_voc, voc_ap
from train import log
from visualize import model_report

TP, FP, IGNORED = DetectionOutcomes.TRUE_POSITIVE, DetectionOutcomes.FALSE_POSITIVE, DetectionOutcomes.IGNORED


def boxes(*rows):
    return np.array(rows, dtype=float).reshape(-1, 4)


def test_outcomes_are_the_matchings_verdicts_in_input_order():
    # The hand case of tests/test_evaluate.py: TP, duplicate, on a difficult box, TP, nothing.
    gt = [(boxes([0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]), np.array([1, 1, 1, 1]),
           np.array([False, False, False, True]))]
    dets = [(boxes([0, 0, 10, 10], [0, 0, 10, 11], [60, 0, 70, 10], [20, 0, 30, 10], [100, 100, 110, 110]),
             np.array([0.9, 0.8, 0.7, 0.6, 0.6]), np.array([1, 1, 1, 1, 1]))]
    o = evaluate_voc(dets, gt, 1).outcomes
    assert o.status.tolist() == [TP, FP, IGNORED, TP, FP]
    np.testing.assert_allclose(o.best_iou, [1, 100 / 110, 1, 1, 0])  # -1 only where the class has no box
    assert o.best_gt.tolist()[:4] == [0, 0, 3, 1]
    assert o.false_positives().tolist() == [1, 4]  # highest score first


# One 700x700 image with a cat [0,0,100,100] and a dog [200,0,300,100] (classes 1 cat, 2 dog), and one
# image without objects. Each detection below is a different verdict.
CLASSES = ("cat", "dog")
GT = [(boxes([0, 0, 100, 100], [200, 0, 300, 100]), np.array([1, 2])), (boxes(), np.array([], np.int64))]
DETS = [
    (boxes([0, 0, 100, 100],      # cat 0.95: the cat                                         -> TP
           [0, 0, 100, 98],       # cat 0.90: the cat again (IoU 0.98), already taken         -> duplicate
           [200, 0, 300, 100],    # cat 0.85: on the dog (IoU 1 with it, 0 with the cat)      -> confusion with dog
           [0, 0, 100, 40],       # cat 0.80: a third of the cat (IoU 0.4 < 0.5)              -> localisation
           [500, 500, 600, 600],  # cat 0.70: on nothing                                      -> background
           [200, 0, 300, 100],    # dog 0.60: the dog                                         -> TP
           [60, 0, 160, 100]),    # dog 0.55: IoU 0.25 with the cat, 0.25 with the dog: the cat comes first
     np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.55]), np.array([1, 1, 1, 1, 1, 2, 2])),
    (boxes([10, 10, 50, 50]), np.array([0.75]), np.array([2])),  # dog 0.75 where there is nothing -> background
]


def test_each_kind_of_false_positive_is_named():
    result = evaluate_voc(DETS, GT, 2, class_names=CLASSES)
    o = result.outcomes
    assert o.status.tolist() == [TP, FP, FP, FP, FP, TP, FP, FP]
    fps = o.false_positives()
    assert o.scores[fps].tolist() == [0.9, 0.85, 0.8, 0.75, 0.7, 0.55]
    kinds = classify_false_positives(o, fps, 0.5)
    assert [k["error"] for k in kinds] == ["duplicate", "confusion", "localisation", "background", "background",
                                           "confusion"]
    assert [k["gt"] for k in kinds] == [0, 1, 0, -1, -1, 0]
    assert [round(k["iou"], 3) for k in kinds] == [0.98, 1.0, 0.4, 0.0, 0.0, 0.25]
    with pytest.raises(ValueError, match="not a false positive"):
        classify_false_positives(o, [0], 0.5)


def test_the_report_lists_the_worst_false_positives_with_their_ground_truth():
    result = evaluate_voc(DETS, GT, 2, class_names=CLASSES)
    report = build_report(result, CLASSES, ["img_a", "img_b"], [(700, 700), (640, 480)], worst=4,
                          score_threshold=0.7, weights="w.safetensors")
    assert report["weights"] == "w.safetensors" and report["images"] == 2
    assert report["map_area"] == pytest.approx(result.map_area)
    assert set(report["per_class"]) == {"cat", "dog"}
    fp = report["false_positives"]
    assert fp["total"] == 6 and [w["rank"] for w in fp["worst"]] == [1, 2, 3, 4]
    first, second, third, fourth = fp["worst"]
    assert first == {"rank": 1, "image": "img_a", "image_size": [700, 700], "class": "cat", "score": 0.9,
                     "box": [0.0, 0.0, 100.0, 98.0], "error": "duplicate", "confused_with": None, "iou": 0.98,
                     "ground_truth": {"class": "cat", "box": [0.0, 0.0, 100.0, 100.0]}, "tide_error": "duplicate"}
    assert (second["error"], second["confused_with"], second["ground_truth"]["class"]) == ("confusion", "dog", "dog")
    assert (third["error"], third["iou"]) == ("localisation", 0.4)
    assert (fourth["image"], fourth["image_size"], fourth["error"], fourth["ground_truth"]) == \
        ("img_b", [640, 480], "background", None)
    # Counted above score 0.7: the five false positives from 0.9 down to 0.7, and the cat TP at 0.95.
    assert fp["above_threshold"] == 5 and fp["true_positives_above_threshold"] == 1
    assert fp["by_error"] == {"background": 2, "localisation": 1, "confusion": 1, "duplicate": 1}
    assert fp["confused_with"] == {"dog": 1}
    json.dumps(report, allow_nan=False)  # plain JSON: no NaN


def test_pr_curves_are_downsampled_keeping_their_ends_and_shape():
    rng = np.random.default_rng(0)
    hits = rng.random(5000) < np.linspace(0.9, 0.02, 5000)  # a ranking that gets worse down the list
    tp = np.cumsum(hits)
    recall, precision = tp / tp[-1], tp / np.arange(1, 5001)
    scores = np.linspace(1, 0.01, 5000)
    small = downsample_curve(recall, precision, scores, max_points=200)
    r, p = np.array(small["recall"]), np.array(small["precision"])
    assert len(r) <= 200 and len(r) == len(p) == len(small["scores"])
    assert (r[0], p[0], r[-1], p[-1]) == (round(recall[0], 4), round(precision[0], 4), 1.0, round(precision[-1], 4))
    assert (np.diff(r) >= 0).all()
    # The area under it is the full curve's to within a point of AP.
    assert voc_ap(r, p) == pytest.approx(voc_ap(recall, precision), abs=0.01)
    short = downsample_curve([0.5, 1.0], [1.0, 0.5], [0.9, 0.1])
    assert short == {"recall": [0.5, 1.0], "precision": [1.0, 0.5], "scores": [0.9, 0.1]}


def test_train_and_the_apps_reader_agree_on_the_files_beside_the_weights(tmp_path):
    weights = tmp_path / "model.safetensors"
    assert report_path(weights) == model_report.beside(weights, model_report.REPORT_SUFFIX) == \
        tmp_path / "model.eval.json"
    assert log.log_path(weights) == model_report.beside(weights, model_report.LOG_SUFFIX)
    result = evaluate_voc(DETS, GT, 2, class_names=CLASSES)
    report = build_report(result, CLASSES, ["a", "b"], [(700, 700), (640, 480)])
    write_report(report_path(weights), report)
    assert model_report.read_report(report_path(weights)) == report


@pytest.mark.slow
def test_command_line_writes_the_report_beside_the_weights(tmp_path):
    import torch

    from ssd import SSD300_VOC, build_ssd, export_weights
    from tests.shapes import SHAPE_CLASSES, make_shapes_voc
    from train.evaluate import main

    voc = make_shapes_voc(tmp_path / "shapes", n_train=1, n_val=3, seed=5)
    cfg = SSD300_VOC.replace(name="tiny-shapes", num_classes=3, width=0.125)
    torch.manual_seed(0)
    weights = export_weights(build_ssd(cfg), cfg, SHAPE_CLASSES, tmp_path / "model" / "tiny.safetensors")
    args = ["--weights", str(weights), "--data-root", str(voc), "--image-set", "val", "--device", "cpu",
            "--no-progress", "--report"]
    assert main(args) == 0
    files = model_report.ModelFiles.read(weights)
    assert files.problems == [] and files.card is not None and files.log is None
    report = files.report
    assert files.report_is_current is True  # the report names these weights by their SHA-256
    assert report["command"] == "python -m train.evaluate " + " ".join(args)
    assert report["weights"] == "tiny.safetensors" and report["data"] == "VOC2007 val" and report["images"] == 3
    assert report["inference"] == {"conf_threshold": 0.01, "nms_threshold": 0.45, "top_k": 200}
    assert list(report["per_class"]) == list(SHAPE_CLASSES)
    worst = report["false_positives"]["worst"]
    # Random weights: plenty of false positives, on the val images (ids 000001 to 000003).
    assert worst and all(w["image"] in ("000001", "000002", "000003") for w in worst)
    assert [w["score"] for w in worst] == sorted((w["score"] for w in worst), reverse=True)
    assert {w["error"] for w in worst} <= {"background", "localisation", "confusion", "duplicate"}
    # No default threshold in the card: the false positives are counted above this evaluation's best-F1 point.
    assert report["false_positives"]["score_threshold"] == report["best_f1"]["score"]
    # With one, above it: the threshold the app starts at and the Model tab names.
    export_weights(build_ssd(cfg), cfg, SHAPE_CLASSES, weights, score_threshold=0.07)
    assert main(args) == 0
    assert model_report.ModelFiles.read(weights).report["false_positives"]["score_threshold"] == 0.07
    # Other weights beside the same report: the reader says it is not theirs.
    export_weights(build_ssd(cfg), cfg, SHAPE_CLASSES, weights)
    assert model_report.ModelFiles.read(weights).report_is_current is False
