"""Detection metrics: PASCAL VOC AP (devkit matching, 11-point and area) and COCO AP (pycocotools).

Expected values are worked by hand in the comments, or come from pycocotools run independently.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssd import SSD300_VOC, Detection
from ssd.evaluation import evaluate_detector
from ssd.evaluation.coco import evaluate_coco
from ssd.evaluation.voc import evaluate_voc, voc_ap

ROOT = Path(__file__).resolve().parents[1]


def boxes(*rows):
    return np.array(rows, dtype=float).reshape(-1, 4)


# ---------------------------------------------------------------------------------------------- voc_ap
def test_voc_ap_of_a_hand_worked_curve():
    # Points (recall, precision): (1/3, 1), (1/3, 1/2), (2/3, 2/3), (2/3, 1/2).
    # Area: the envelope is 1 up to recall 1/3 and 2/3 up to 2/3, 0 after: 1/3*1 + 1/3*2/3 = 5/9.
    # 11-point: t = 0, .1, .2, .3 reach precision 1; t = .4, .5, .6 reach 2/3; t >= .7 nothing: (4 + 2)/11.
    rec, prec = [1 / 3, 1 / 3, 2 / 3, 2 / 3], [1, 1 / 2, 2 / 3, 1 / 2]
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(5 / 9, abs=1e-12)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(6 / 11, abs=1e-12)


def test_11_point_ap_counts_a_recall_of_exactly_three_tenths():
    # 3 of 10 objects found at precision 1: recall 0.3 reaches t = 0, .1, .2 and .3 -> 4/11. (With the
    # thresholds np.arange(0, 1.1, 0.1) t = 0.30000000000000004 is missed and AP drops to 3/11.)
    assert voc_ap([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], use_07_metric=True) == pytest.approx(4 / 11, abs=1e-12)
    # Area: recall 0.3 at precision 1.
    assert voc_ap([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], use_07_metric=False) == pytest.approx(0.3, abs=1e-12)


def test_voc_ap_of_no_detections_is_zero():
    assert voc_ap([], [], True) == 0.0
    assert voc_ap([], [], False) == 0.0


# ----------------------------------------------------------------------------------- VOC hand cases
# One image, one class. Three ground-truth boxes count; a fourth is difficult.
GT_BOXES = boxes([0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10])
GT_ONE_IMAGE = [(GT_BOXES, np.array([1, 1, 1, 1]), np.array([False, False, False, True]))]


def test_duplicate_miss_difficult_and_a_score_tie():
    # score 0.9  [0,0,10,10]      IoU 1 with box 0                  -> TP (box 0 claimed)
    # score 0.8  [0,0,10,11]      IoU 100/110 with box 0, claimed   -> FP (duplicate)
    # score 0.7  [60,0,70,10]     IoU 1 with the difficult box 3    -> ignored (neither TP nor FP)
    # score 0.6  [20,0,30,10]     IoU 1 with box 1                  -> TP
    # score 0.6  [100,100,110,110] overlaps nothing                 -> FP
    # Box 2 is never found (a miss). npos = 3 (the difficult box does not count).
    # Equal scores keep input order, so the TP at 0.6 ranks before the FP at 0.6:
    #   TP FP TP FP -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2 -> area 5/9, 11-point 6/11.
    dets = [(boxes([0, 0, 10, 10], [0, 0, 10, 11], [60, 0, 70, 10], [20, 0, 30, 10], [100, 100, 110, 110]),
             np.array([0.9, 0.8, 0.7, 0.6, 0.6]), np.array([1, 1, 1, 1, 1]))]
    r = evaluate_voc(dets, GT_ONE_IMAGE, num_classes=1)
    c = r.per_class[1]
    assert (c.npos, c.ndet) == (3, 5)
    np.testing.assert_allclose(c.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(c.precision, [1, 1 / 2, 2 / 3, 1 / 2])
    assert c.ap_area == pytest.approx(5 / 9, abs=1e-12)
    assert c.ap_11pt == pytest.approx(6 / 11, abs=1e-12)
    assert (r.map_area, r.map_11pt) == (c.ap_area, c.ap_11pt)

    # The same detections with the two 0.6 scores listed the other way round: TP FP FP TP ->
    # recall 1/3 1/3 1/3 2/3, precision 1 1/2 1/3 1/2. Area: 1/3*1 + 1/3*1/2 = 1/2.
    # 11-point: t <= .3 -> 1 (4 points), t = .4 .. .6 -> 1/2 (3 points): (4 + 1.5)/11 = 1/2.
    b, s, lab = dets[0]
    swapped = [(b[[0, 1, 2, 4, 3]], s[[0, 1, 2, 4, 3]], lab)]
    r = evaluate_voc(swapped, GT_ONE_IMAGE, num_classes=1)
    np.testing.assert_allclose(r.per_class[1].precision, [1, 1 / 2, 1 / 3, 1 / 2])
    assert r.map_area == pytest.approx(1 / 2, abs=1e-12)
    assert r.map_11pt == pytest.approx(1 / 2, abs=1e-12)


def test_iou_of_exactly_the_threshold_is_a_match():
    # GT [0,0,10,10] (area 100); detection [0,0,10,20] (area 200) contains it: IoU = 100/200 = 0.5 -> TP.
    # [0,0,10,21]: IoU = 100/210 < 0.5 -> FP.
    gt = [(boxes([0, 0, 10, 10]), np.array([1]))]
    hit = evaluate_voc([(boxes([0, 0, 10, 20]), [0.9], [1])], gt, 1)
    miss = evaluate_voc([(boxes([0, 0, 10, 21]), [0.9], [1])], gt, 1)
    assert hit.map_area == 1.0 and hit.map_11pt == 1.0
    assert miss.map_area == 0.0 and miss.map_11pt == 0.0
    # The threshold is a parameter: at IoU 0.75 the first detection is a miss as well.
    assert evaluate_voc([(boxes([0, 0, 10, 20]), [0.9], [1])], gt, 1, iou_threshold=0.75).map_area == 0.0


def test_a_detection_takes_its_best_box_even_when_already_claimed_as_the_devkit_does():
    # Two overlapping boxes of one class: A = [0,0,10,10] (area 100), B = [0,0,10,12] (area 120).
    # d1 (0.9) = [0,0,10,10]: IoU(A) = 1, IoU(B) = 100/120       -> TP on A.
    # d2 (0.8) = [0,0,10,10.5]: IoU(A) = 100/105, IoU(B) = 105/120 -> best box A, already claimed -> FP,
    #   although B (IoU 0.875) is free. (COCO would give it B.)
    # TP FP, npos 2: recall 1/2 1/2, precision 1 1/2 -> area 1/2; 11-point t <= .5 -> 1: 6/11.
    gt = [(boxes([0, 0, 10, 10], [0, 0, 10, 12]), np.array([1, 1]))]
    dets = [(boxes([0, 0, 10, 10], [0, 0, 10, 10.5]), [0.9, 0.8], [1, 1])]
    r = evaluate_voc(dets, gt, 1)
    assert r.map_area == pytest.approx(1 / 2, abs=1e-12)
    assert r.map_11pt == pytest.approx(6 / 11, abs=1e-12)


def test_ranking_spans_images_and_classes_are_averaged():
    # Class 1 ("cat"). Image 0: GT a; det 0.9 on a (TP). Image 1: GT b, c; det 0.8 on nothing (FP),
    # det 0.7 on b (TP). Image 2: no GT; det 0.95 (FP). Detections on another image's box never match:
    # image 2's 0.95 detection sits exactly where image 0's box is.
    # Ranked: 0.95 FP, 0.9 TP, 0.8 FP, 0.7 TP; npos 3 -> recall 0 1/3 1/3 2/3, precision 0 1/2 1/3 1/2.
    # Envelope 1/2 up to recall 2/3: area = 2/3 * 1/2 = 1/3. 11-point: t = 0 .. .6 -> 1/2 (7 points): 7/22.
    # Class 2 ("dog"): one box in image 0, found exactly -> 1 and 1.
    # Class 3 ("owl"): detections but no ground truth anywhere -> nan, left out of the mean.
    # mAP area = (1/3 + 1)/2 = 2/3; 11-point = (7/22 + 1)/2 = 29/44.
    gts = [
        (boxes([0, 0, 10, 10], [50, 50, 80, 80]), np.array([1, 2]), np.array([False, False])),
        (boxes([0, 0, 20, 20], [30, 30, 40, 40]), np.array([1, 1]), np.array([False, False])),
        (boxes(), np.array([], dtype=np.int64), np.array([], dtype=bool)),
    ]
    dets = [
        (boxes([0, 0, 10, 10], [50, 50, 80, 80]), np.array([0.9, 0.5]), np.array([1, 2])),
        (boxes([100, 100, 120, 120], [0, 0, 20, 20], [1, 1, 5, 5]), np.array([0.8, 0.7, 0.6]), np.array([1, 1, 3])),
        (boxes([0, 0, 10, 10]), np.array([0.95]), np.array([1])),
    ]
    r = evaluate_voc(dets, gts, 3, class_names=("cat", "dog", "owl"))
    assert list(r.per_class) == ["cat", "dog", "owl"]
    cat, dog, owl = r.per_class["cat"], r.per_class["dog"], r.per_class["owl"]
    assert (cat.npos, cat.ndet, dog.npos, owl.npos, owl.ndet) == (3, 4, 1, 0, 1)
    assert cat.ap_area == pytest.approx(1 / 3, abs=1e-12)
    assert cat.ap_11pt == pytest.approx(7 / 22, abs=1e-12)
    assert (dog.ap_area, dog.ap_11pt) == (1.0, 1.0)
    assert math.isnan(owl.ap_area) and math.isnan(owl.ap_11pt)
    assert r.map_area == pytest.approx(2 / 3, abs=1e-12)
    assert r.map_11pt == pytest.approx(29 / 44, abs=1e-12)
    assert r.num_images == 3
    # The JSON form turns nan into null and keeps every number.
    d = json.loads(json.dumps(r.to_dict()))
    assert d["per_class"]["owl"]["ap_area"] is None
    assert d["per_class"]["cat"]["npos"] == 3
    # All classes pooled, by score: .95 FP, .9 TP, .8 FP, .7 TP, .6 FP (owl), .5 TP (dog); 4 boxes in all.
    # F1 = 2 TP / (detections + boxes): 0, 2/6, 2/7, 4/8, 4/9, 6/10 -> best at score 0.5, P 3/6, R 3/4.
    assert r.best_f1_threshold() == pytest.approx({"score": 0.5, "precision": 0.5, "recall": 0.75, "f1": 0.6})
    # Without the dog's detection the best threshold is 0.7: F1 4/8 beats 4/9.
    dets[0] = (boxes([0, 0, 10, 10]), np.array([0.9]), np.array([1]))
    best = evaluate_voc(dets, gts, 3).best_f1_threshold()
    assert best == pytest.approx({"score": 0.7, "precision": 0.5, "recall": 0.5, "f1": 0.5})


def test_detections_as_ssd_detection_objects_or_tensors_give_the_same_result():
    # The first hand case (area 5/9) in the two other accepted forms.
    b = [(0, 0, 10, 10), (0, 0, 10, 11), (60, 0, 70, 10), (20, 0, 30, 10), (100, 100, 110, 110)]
    s = [0.9, 0.8, 0.7, 0.6, 0.6]
    objects = [[Detection("a", sc, bx, 1, 0, "conv4_3") for bx, sc in zip(b, s, strict=True)]]
    tensors = [(torch.tensor(b, dtype=torch.float32), torch.tensor(s), torch.ones(5, dtype=torch.int64))]
    gt_tensors = [tuple(torch.as_tensor(x) for x in GT_ONE_IMAGE[0])]
    for dets, gts in ((objects, GT_ONE_IMAGE), (tensors, gt_tensors)):
        r = evaluate_voc(dets, gts, 1)
        assert r.map_area == pytest.approx(5 / 9, abs=1e-6)
        assert r.map_11pt == pytest.approx(6 / 11, abs=1e-6)


def test_no_detections_and_no_ground_truth_are_handled():
    empty_gt = (boxes(), np.zeros(0, np.int64), np.zeros(0, bool))
    empty_det = (boxes(), np.zeros(0), np.zeros(0, np.int64))
    # No images at all: nothing can be evaluated.
    r = evaluate_voc([], [], 2)
    assert math.isnan(r.map_area) and math.isnan(r.map_11pt) and r.num_images == 0
    # Objects but no detections: every class with objects scores 0.
    r = evaluate_voc([empty_det, []], [(boxes([0, 0, 5, 5]), [1]), (boxes([1, 1, 4, 4]), [2])], 2)
    assert (r.map_area, r.map_11pt) == (0.0, 0.0)
    assert r.per_class[1].recall.size == 0
    # Detections but no objects: nan, not a crash.
    r = evaluate_voc([(boxes([0, 0, 5, 5]), [0.5], [1])], [empty_gt], 2)
    assert math.isnan(r.map_area) and r.per_class[1].ndet == 1
    # Both empty.
    r = evaluate_voc([empty_det], [empty_gt], 2)
    assert math.isnan(r.map_11pt)


def test_bad_inputs_name_the_problem():
    gt = [(boxes([0, 0, 5, 5]), [1])]
    with pytest.raises(ValueError, match="label 0 outside 1..2"):
        evaluate_voc([(boxes([0, 0, 5, 5]), [0.5], [0])], gt, 2)
    with pytest.raises(ValueError, match="2 images of detections but 1"):
        evaluate_voc([[], []], gt, 2)
    with pytest.raises(ValueError, match=r"detections\[0\]: boxes must be \[K, 4\]"):
        evaluate_voc([(np.zeros((1, 3)), [0.5], [1])], gt, 2)


# ------------------------------------------------------------------------------ against pycocotools
def _random_scene(seed, n_images=30, num_classes=3):
    """Boxes of one image lie in distinct cells of a 4x4 grid of 100-px cells, so they never overlap; the
    detections are jittered copies (some good, some poor), duplicates, wrong classes and random boxes."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(n_images):
        m = int(rng.integers(0, 7))
        cells = rng.choice(16, size=m, replace=False)
        size = rng.uniform(20, 90, (m, 2))
        corner = np.stack([cells % 4, cells // 4], 1) * 100 + rng.uniform(0, 1, (m, 2)) * (100 - size)
        gb = np.concatenate([corner, corner + size], 1)
        gl = rng.integers(1, num_classes + 1, m)
        gts.append((gb, gl, np.zeros(m, bool)))
        k = int(rng.integers(0, 3 * m + 3))
        src = rng.integers(0, max(m, 1), k)
        if m:
            wh = np.concatenate([size[src], size[src]], 1)
            db = gb[src] + rng.normal(0, 1, (k, 4)) * wh * rng.choice([0.03, 0.15, 0.3], (k, 1))
            dl = np.where(rng.random(k) < 0.85, gl[src], rng.integers(1, num_classes + 1, k))
        else:
            db, dl = np.zeros((k, 4)), rng.integers(1, num_classes + 1, k)
        rand = rng.random(k) < 0.2  # some detections anywhere
        xy = rng.uniform(0, 350, (k, 2))
        db[rand] = np.concatenate([xy, xy + rng.uniform(10, 80, (k, 2))], 1)[rand]
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dets.append((db, rng.random(k), dl))
    return dets, gts


def _pycocotools_area_ap(dets, gts, category, npos):
    """pycocotools' AP of one class at IoU 0.5, with recall thresholds k/npos (k = 1..npos)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def coco(anns):
        c = COCO()
        c.dataset = {"images": [{"id": i + 1} for i in range(len(gts))], "categories": [{"id": category}],
                     "annotations": anns}
        with contextlib.redirect_stdout(io.StringIO()):
            c.createIndex()
        return c

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    g, d = [], []  # annotation ids must be unique and >= 1 (COCOeval records matches by id)
    for i, ((gb, gl, _), (db, ds, dl)) in enumerate(zip(gts, dets, strict=True)):
        g += [{"id": len(g) + k + 1, "image_id": i + 1, "category_id": category, "bbox": xywh(b),
               "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0}
              for k, b in enumerate(gb[gl == category])]
        mine = zip(db[dl == category], ds[dl == category], strict=True)
        d += [{"id": len(d) + k + 1, "image_id": i + 1, "category_id": category, "bbox": xywh(b), "score": float(s),
               "area": float((b[2] - b[0]) * (b[3] - b[1]))} for k, (b, s) in enumerate(mine)]
    E = COCOeval(coco(g), coco(d), "bbox")
    E.params.catIds = [category]
    E.params.iouThrs = np.array([0.5])
    E.params.recThrs = np.arange(1, npos + 1) / npos
    E.params.areaRng, E.params.areaRngLbl = [[0, 1e10]], ["all"]
    E.params.maxDets = [10_000]
    with contextlib.redirect_stdout(io.StringIO()):
        E.evaluate()
        E.accumulate()
    return float(E.eval["precision"][0, :, 0, 0, 0].mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_area_ap_agrees_with_pycocotools(seed):
    # Why the two must agree exactly here:
    # * both use plain IoU (no +1) and accept IoU >= 0.5;
    # * a class's boxes in one image never overlap, so no detection has IoU >= 0.5 with two of them, and the
    #   devkit's "best box, even if claimed" equals COCO's "best unclaimed box";
    # * COCO ranks by score with a stable sort per image and over all images, as we do (random scores: no
    #   ties); maxDets and the area range are opened up so COCO drops nothing;
    # * COCO's precision at recall threshold r is the best precision at recall >= r (the monotone envelope);
    #   with thresholds at k/npos, the mean over k is sum_k 1/npos * envelope where recall reaches k/npos,
    #   which is the area under the envelope (recall only rises in steps of 1/npos).
    dets, gts = _random_scene(seed)
    r = evaluate_voc(dets, gts, 3)
    checked = 0
    for c in (1, 2, 3):
        npos = r.per_class[c].npos
        if npos == 0:
            continue
        assert r.per_class[c].ap_area == pytest.approx(_pycocotools_area_ap(dets, gts, c, npos), abs=1e-9)
        checked += 1
    assert checked == 3
    # And COCO's standard AP50 (101 recall points 0, 0.01, .., 1; at most 100 detections per image, which
    # these images never exceed) is a Riemann sum of the same envelope: within ~1/100 of the area AP.
    coco = evaluate_coco(dets, gts, num_classes=3)
    assert coco["AP50"] == pytest.approx(r.map_area, abs=0.015)


def _devkit_loop_ap(dets, gts, c, iou_threshold=0.5):
    """The devkit's VOCevaldet.m written out as its plain loop: one detection at a time, best first."""
    rows = [(s, i, b) for i, (db, ds, dl) in enumerate(dets) for b, s, lab in zip(db, ds, dl, strict=True)
            if lab == c]
    rows.sort(key=lambda row: -row[0])  # Python's sort is stable, like MATLAB's
    claimed, tp, fp = set(), [], []
    npos = sum(int(((gl == c) & ~gd).sum()) for _, gl, gd in gts)
    for _, i, b in rows:
        gb, gl, gd = gts[i]
        best, jmax = -np.inf, -1
        for j in np.flatnonzero(gl == c):
            iw = min(b[2], gb[j, 2]) - max(b[0], gb[j, 0])
            ih = min(b[3], gb[j, 3]) - max(b[1], gb[j, 1])
            if iw > 0 and ih > 0:
                inter = iw * ih
                ov = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (gb[j, 2] - gb[j, 0]) * (gb[j, 3] - gb[j, 1]) - inter)
                if ov > best:
                    best, jmax = ov, j
        if best >= iou_threshold:
            if gd[jmax]:
                continue  # difficult: neither
            if (i, jmax) not in claimed:
                claimed.add((i, jmax))
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec, prec = tp / npos, tp / np.maximum(tp + fp, 1e-300)
    return voc_ap(rec, prec, False), voc_ap(rec, prec, True)


def test_vectorised_matching_equals_the_devkit_loop_on_crowded_scenes():
    # Overlapping boxes of one class, difficult boxes, and scores rounded to 0.1 so that many tie.
    rng = np.random.default_rng(7)
    dets, gts = [], []
    for _ in range(60):
        m = int(rng.integers(0, 8))
        xy = rng.uniform(0, 60, (m, 2))
        gb = np.concatenate([xy, xy + rng.uniform(8, 40, (m, 2))], 1)
        gl = rng.integers(1, 3, m)
        gts.append((gb, gl, rng.random(m) < 0.2))
        k = int(rng.integers(0, 20))
        src = rng.integers(0, max(m, 1), k)
        db = (gb[src] if m else np.tile([[0.0, 0, 10, 10]], (k, 1))) + rng.normal(0, 3, (k, 4))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dets.append((db, np.round(rng.random(k), 1), rng.integers(1, 3, k)))
    r = evaluate_voc(dets, gts, 2)
    for c in (1, 2):
        area, eleven = _devkit_loop_ap(dets, gts, c)
        assert r.per_class[c].ap_area == pytest.approx(area, abs=1e-12)
        assert r.per_class[c].ap_11pt == pytest.approx(eleven, abs=1e-12)


# ------------------------------------------------------------------------------------ COCO hand cases
def test_coco_ap_of_perfect_missing_and_loose_detections():
    gts = [(boxes([0, 0, 10, 10], [20, 20, 30, 30]), np.array([1, 1]))]
    perfect = evaluate_coco([(boxes([0, 0, 10, 10], [20, 20, 30, 30]), [0.9, 0.8], [1, 1])], gts, num_classes=1)
    assert perfect["AP"] == perfect["AP50"] == perfect["AP75"] == pytest.approx(1.0)
    none = evaluate_coco([[]], gts, num_classes=1)
    assert none["AP"] == none["AP50"] == 0.0

    # Second detection [20,20,30,26.2]: IoU 62/100 = 0.62 -> a match at IoU thresholds .50 .55 .60, not above.
    # At those 3 thresholds AP = 1. At the other 7 only the first box is found: precision 1 up to recall 1/2,
    # so 51 of COCO's 101 recall points (0, .01, .., .50) score 1 -> 51/101.
    # AP = (3 + 7 * 51/101) / 10; AP50 = 1; AP75 = 51/101. Both boxes have area 100 < 32^2: all "small";
    # no medium or large objects -> nan (COCO's -1).
    loose = evaluate_coco([(boxes([0, 0, 10, 10], [20, 20, 30, 26.2]), [0.9, 0.8], [1, 1])], gts,
                          class_names=["box"])
    assert loose["AP50"] == pytest.approx(1.0)
    assert loose["AP75"] == pytest.approx(51 / 101)
    assert loose["AP"] == pytest.approx((3 + 7 * 51 / 101) / 10)
    assert loose["AP_small"] == pytest.approx(loose["AP"])
    assert math.isnan(loose["AP_medium"]) and math.isnan(loose["AP_large"])
    assert loose["per_class_AP"]["box"] == pytest.approx(loose["AP"])


def test_coco_ap_from_an_annotation_file_honours_crowd_regions_and_the_image_subset(tmp_path):
    from tests.shapes import make_shapes_coco
    from train.datasets import COCODataset

    image_dir, ann_file = make_shapes_coco(tmp_path, n=6, seed=3)
    ds = COCODataset(image_dir, ann_file)  # crowd regions are not among its boxes
    ids = [int(i) for i in ds.ids]
    # Exactly the (non-crowd) objects at score 0.9, plus the best-scored detection of all (0.99) exactly
    # on image 0's crowd region (a 'circle' crowd covering the top-left quarter of its first shape).
    crowd = next(a for a in json.loads(Path(ann_file).read_text())["annotations"] if a["iscrowd"])
    x, y, w, h = crowd["bbox"]
    circle = ds.classes.index("circle") + 1
    dets = []
    for i in range(len(ds)):
        b, lab, *_ = ds.annotation(i)
        s = np.full(len(lab), 0.9)
        if i == 0:
            b, s, lab = np.vstack([b, [[x, y, x + w, y + h]]]), np.r_[s, 0.99], np.r_[lab, circle]
        dets.append((b, s, lab))
    # From the file, the crowd region is COCO's ignore region: the detection on it is neither right nor
    # wrong, and every object is found first time -> AP 1.
    from_file = evaluate_coco(dets, ann_file=ann_file, image_ids=ids, class_names=ds.classes)
    assert from_file["AP"] == pytest.approx(1.0)
    # With ground truth that knows nothing of the crowd, the same detection is a false positive ranked
    # first: precision is below 1 at every recall of the circle class.
    gts = [ds.annotation(i)[:3] for i in range(len(ds))]
    assert evaluate_coco(dets, gts, class_names=ds.classes)["per_class_AP"]["circle"] < 0.99
    # Only the listed images count: the first three alone are still perfect, not missing the others' objects.
    subset = evaluate_coco(dets[:3], ann_file=ann_file, image_ids=ids[:3], class_names=ds.classes)
    assert subset["AP"] == pytest.approx(1.0)
    # Labels map to the file's category ids by name (ids 3, 7, 9 here, not 1, 2, 3).
    wrong = [(b, s, (lab % 3) + 1) for b, s, lab in dets]
    assert evaluate_coco(wrong, ann_file=ann_file, image_ids=ids, class_names=ds.classes)["AP"] == \
        pytest.approx(0.0)


# ------------------------------------------------------------------------------- running a detector
class OracleDetector:
    """Stands in for ssd.Detector: answers every image with its true boxes (found by hashing the pixels),
    optionally shifted right by `shift` box widths. Its class list may be ordered differently."""

    config = SSD300_VOC

    def __init__(self, dataset, class_names, shift=0.0):
        self.class_names = tuple(class_names)
        self.calls = 0
        self._truth = {}
        for i in range(len(dataset)):
            b, lab, *_ = dataset.annotation(i)
            names = [dataset.classes[k - 1] for k in lab]
            self._truth[self._key(dataset.load(i).image)] = (b, names)
        self.shift = shift

    @staticmethod
    def _key(image):
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()

    def detect_batch(self, images, score_threshold=None, nms_threshold=None, top_k=None, batch_size=16):
        # Evaluation asks for the paper's inference settings (the config's 0.01, 0.45, 200), never the card's
        # display threshold.
        cfg = self.config
        assert (score_threshold, nms_threshold, top_k) == (cfg.conf_threshold, cfg.nms_threshold, cfg.top_k)
        self.calls += 1
        out = []
        for im in images:
            b, names = self._truth[self._key(im)]
            b = b + np.array([1, 0, 1, 0]) * (b[:, 2:3] - b[:, 0:1]) * self.shift
            out.append([Detection(n, 0.9, tuple(map(float, bx)), self.class_names.index(n) + 1, 0, "conv4_3")
                        for bx, n in zip(b, names, strict=True)])
        return out


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    from tests.shapes import SHAPE_CLASSES, make_shapes_voc
    from train.datasets import VOCDataset

    root = tmp_path_factory.mktemp("shapes")
    voc = make_shapes_voc(root, n_train=2, n_val=7, seed=5)
    return VOCDataset(voc, "val", classes=SHAPE_CLASSES, keep_difficult=True), root


@pytest.mark.slow
def test_command_line_measures_a_backend(tmp_path, capsys, shapes_val):
    """--backend: what a backend's precision costs is measured on the same data (docs/library.md: bfloat16)."""
    from ssd import SSD300_VOC, build_ssd, export_weights
    from tests.shapes import SHAPE_CLASSES
    from train.evaluate import main

    ds, _ = shapes_val
    cfg = SSD300_VOC.replace(name="tiny-shapes", num_classes=3, width=0.125)
    torch.manual_seed(0)
    weights = export_weights(build_ssd(cfg), cfg, SHAPE_CLASSES, tmp_path / "tiny.safetensors")
    out = tmp_path / "eval.json"
    assert main(["--weights", str(weights), "--data-root", str(ds.root), "--image-set", "val", "--limit", "2",
                 "--device", "cpu", "--backend", "torch-bf16", "--no-progress", "--json", str(out)]) == 0
    assert "torch-bf16" in capsys.readouterr().out
    assert json.loads(out.read_text())["backend"] == "torch-bf16"


def test_evaluate_detector_scores_a_perfect_detector_1_and_a_shifted_one_0(shapes_val):
    ds, _ = shapes_val
    reordered = tuple(reversed(ds.classes))  # labels are matched by class name, not by position
    oracle = OracleDetector(ds, reordered)
    r = evaluate_detector(oracle, ds, batch_size=3, progress=False)
    assert r.num_images == 7 and oracle.calls == 3  # 3 + 3 + 1 images
    assert (r.map_11pt, r.map_area) == (1.0, 1.0)
    assert r.detect_seconds is not None and r.detect_seconds >= 0
    # Shifted by a whole box width a detection no longer overlaps its object at all.
    r = evaluate_detector(OracleDetector(ds, ds.classes, shift=1.0), ds, limit=4, progress=False)
    assert r.num_images == 4
    assert (r.map_11pt, r.map_area) == (0.0, 0.0)


@pytest.mark.slow
def test_command_line_prints_and_writes_json_and_plot(shapes_val, tmp_path):
    from ssd import SSD300_VOC, build_ssd, export_weights
    from tests.shapes import SHAPE_CLASSES, TRUTH_FILE

    ds, root = shapes_val
    cfg = SSD300_VOC.replace(name="tiny-shapes", num_classes=3, width=0.125)
    torch.manual_seed(0)
    weights = export_weights(build_ssd(cfg), cfg, SHAPE_CLASSES, tmp_path / "tiny.safetensors")
    out_json, out_png = tmp_path / "eval.json", tmp_path / "pr.png"
    cmd = [sys.executable, "-m", "train.evaluate", "--weights", str(weights), "--data-root", str(ds.root),
           "--image-set", "val", "--limit", "3", "--device", "cpu", "--no-progress", "--coco-metrics",
           "--json", str(out_json)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "VOC07 11-point mAP" in proc.stdout and "area mAP" in proc.stdout
    for name in SHAPE_CLASSES:
        assert name in proc.stdout  # the per-class table
    report = json.loads(out_json.read_text())
    voc = report["voc"]
    assert voc["num_images"] == 3
    assert list(voc["per_class"]) == list(SHAPE_CLASSES)
    # npos per class counted from the generator's own record of the first 3 val images.
    truth = json.loads((root / TRUTH_FILE).read_text())["images"]
    for name in SHAPE_CLASSES:
        expected = sum(n == name for i in ds.ids[:3] for n in truth[i]["names"])
        assert voc["per_class"][name]["npos"] == expected
    for k in ("map_11pt", "map_area"):
        assert voc[k] is None or 0.0 <= voc[k] <= 1.0
    assert "AP50" in report["coco"]
    # Evaluation writes numbers; visualize draws them (training and evaluation need no plotting library).
    from visualize.plots import main as plot

    assert plot([str(out_json), "--out", str(out_png)]) == 0 and out_png.stat().st_size > 1000


def test_command_line_names_missing_weights(tmp_path, capsys):
    from train.evaluate import main

    missing = tmp_path / "nowhere.safetensors"
    assert main(["--weights", str(missing), "--data-root", str(tmp_path), "--no-progress"]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize("module, dest, extra", [
    ("train.__main__", "data_root", ["--out", "runs/x"]),
    ("train.evaluate", "data_root", []),
    ("train.coverage", "data_root", []),
    ("train.pack", "data_root", ["--out", "x.pack"]),
    ("train.average", "data", ["a.safetensors", "--out", "b.safetensors"]),
])
def test_every_data_command_takes_both_spellings_of_the_voc_folder(module, dest, extra):
    """Training says --data and the tools beside it said --data-root: a training command's data flags can be
    pasted into evaluate, coverage, pack or average, and the other way round."""
    import importlib

    mod = importlib.import_module(module)
    parser = mod.build_parser() if module == "train.__main__" else mod._parser()
    for flag in ("--data", "--data-root"):
        assert getattr(parser.parse_args([*extra, flag, "VOCdevkit/VOC2007"]), dest) == "VOCdevkit/VOC2007"


@pytest.mark.parametrize("module, extra", [("train.__main__", ["--out", "runs/x"]), ("train.evaluate", []),
                                           ("train.coverage", [])])
def test_training_and_the_tools_beside_it_take_one_set_of_data_flags(module, extra):
    """train.sources.add_data_arguments defines them once: a COCO file by either name, an image set, a pack."""
    import importlib

    mod = importlib.import_module(module)
    parser = mod.build_parser() if module == "train.__main__" else mod._parser()
    for flag in ("--ann-file", "--coco-ann"):
        args = parser.parse_args([*extra, "--data", "images", flag, "a.json", "--image-set", "s", "--pack", "p"])
        assert (args.data_root, args.coco_ann, args.image_set, args.pack) == ("images", "a.json", "s", "p")
