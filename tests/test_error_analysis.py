"""Error analysis (ssd.evaluation.tide, ssd.evaluation.analysis): the TIDE kinds of error (Bolya et al., ECCV
2020) and the mAP each costs, AP by object size, the confusion matrix and the missed objects.

Every expected value is worked by hand in the comments from the definitions: which kind a detection is, what the
oracle's fix leaves, and the VOC AP of what is left (area: the envelope's area; 11-point: the mean over
t = 0, 0.1, ..., 1 of the best precision at recall >= t)."""

from __future__ import annotations

import json
from fractions import Fraction as F

import numpy as np
import pytest

from ssd.evaluation.analysis import analyse_errors, ap_by_size, confusion_matrix, missed_objects
from ssd.evaluation.report import build_report
from ssd.evaluation.tide import KINDS, error_kinds, fixed_result
from ssd.evaluation.voc import evaluate_voc
from visualize import model_report


def boxes(*rows):
    return np.array(rows, dtype=float).reshape(-1, 4)


# One photo. Cats (class 1): C1 [0,0,100,100], C2 [200,0,300,100], C3 [0,200,100,300], C4 [0,400,100,500].
# Dogs (class 2): D1 [400,0,500,100], D2 [600,0,700,100].
CLASSES = ("cat", "dog")
GT = [(boxes([0, 0, 100, 100], [200, 0, 300, 100], [0, 200, 100, 300], [0, 400, 100, 500],
             [400, 0, 500, 100], [600, 0, 700, 100]), np.array([1, 1, 1, 1, 2, 2]))]
C1, C2, C3, C4, D1, D2 = range(6)
DETS = [(boxes(
    [0, 0, 100, 100],      # a cat 0.90 on C1                                          TP
    [0, 0, 100, 90],       # b cat 0.80 on C1 again (IoU 0.9), C1 taken by a           Dupl
    [200, 0, 300, 30],     # c cat 0.70 on C2 at IoU 0.3                               Loc (C2)
    [800, 800, 900, 900],  # d cat 0.60 on nothing                                     Bkg
    [900, 0, 950, 50],     # e cat 0.55 on nothing                                     Bkg
    [0, 400, 100, 500],    # f cat 0.50 on C4                                          TP
    [400, 0, 500, 100],    # g cat 0.45 on the dog D1 (IoU 1)                          Cls (D1)
    [200, 0, 300, 40],     # h dog 0.40 on the cat C2 (IoU 0.4), no dog near           Both
    [600, 0, 700, 100]),   # i dog 0.35 on D2                                          TP
    np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35]), np.array([1, 1, 1, 1, 1, 1, 1, 2, 2]))]
ROW = {name: k for k, name in enumerate("abcdefghi")}  # the detections' rows
# C3 has no true positive and no Cls or Loc error aims at it: Miss. C2 (Loc) and D1 (Cls) can be fixed.
#
# Before any fix. Cats, npos 4, in rank order T F F F F T F (a b c d e f g): precision 1, 1/2, 1/3, 1/4, 1/5,
# 1/3, 2/7 at recall 1/4 (five times) then 1/2. Area: 1/4 * 1 + 1/4 * 1/3 = 1/3. 11-point: t = 0, .1, .2 reach
# precision 1, t = .3, .4, .5 reach 1/3: (3 + 1) / 11 = 4/11.
# Dogs, npos 2: F T (h i): precision 0, 1/2 at recall 0, 1/2. Area 1/2 * 1/2 = 1/4; 11-point 6 * 1/2 / 11 = 3/11.
# mAP: area (1/3 + 1/4) / 2 = 7/24; 11-point (4/11 + 3/11) / 2 = 7/22.
BASE = (F(7, 24), F(7, 22))
# Each kind fixed alone: (area mAP, 11-point mAP) after, worked below.
FIXED = {
    # g becomes a dog true positive on D1 at 0.45. Cats T F F F F T: still 1/3 and 4/11. Dogs T F T (g h i):
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: area 1/2 + 1/2 * 2/3 = 5/6; 11-point (6 + 5 * 2/3) / 11 = 28/33.
    "classification": ((F(1, 3) + F(5, 6)) / 2, (F(4, 11) + F(28, 33)) / 2),
    # c takes C2's box: cats T F T F F T F: precision 1, 1/2, 2/3, 1/2, 2/5, 1/2, 3/7 at recall 1/4, 1/4, 1/2,
    # 1/2, 1/2, 3/4, 3/4; envelope 1, 2/3, 1/2: area (1 + 2/3 + 1/2) / 4 = 13/24; 11-point (3 + 3 * 2/3 + 2 * 1/2)
    # / 11 = 6/11. Dogs unchanged.
    "localisation": ((F(13, 24) + F(1, 4)) / 2, (F(6, 11) + F(3, 11)) / 2),
    # h removed: dogs T at recall 1/2: area 1/2, 11-point 6/11.
    "both": ((F(1, 3) + F(1, 2)) / 2, (F(4, 11) + F(6, 11)) / 2),
    # b removed: cats T F F F T F: precision 1, 1/2, 1/3, 1/4, 2/5, 1/3: area 1/4 + 1/4 * 2/5 = 7/20; 11-point
    # (3 + 3 * 2/5) / 11 = 21/55.
    "duplicate": ((F(7, 20) + F(1, 4)) / 2, (F(21, 55) + F(3, 11)) / 2),
    # d and e removed: cats T F F T F: precision 1, 1/2, 1/3, 1/2, 2/5: area 1/4 + 1/4 * 1/2 = 3/8; 11-point
    # (3 + 3 * 1/2) / 11 = 9/22.
    "background": ((F(3, 8) + F(1, 4)) / 2, (F(9, 22) + F(3, 11)) / 2),
    # C3 leaves the ground truth: cats npos 3, the same ranking at recall 1/3 then 2/3: area 1/3 + 1/3 * 1/3 =
    # 4/9; 11-point t = 0 ... .3 reach 1, t = .4, .5, .6 reach 1/3: (4 + 1) / 11 = 5/11.
    "missed": ((F(4, 9) + F(1, 4)) / 2, (F(5, 11) + F(3, 11)) / 2),
    # Every false positive removed (b c d e g h): cats T T at recall 1/4, 1/2: area 1/2, 11-point 6/11; dogs T:
    # 1/2, 6/11.
    "false_positives": (F(1, 2), F(6, 11)),
    # Every object without a true positive leaves (C2, C3, D1): cats npos 2, recall 1/2 then 1: area 1/2 + 1/2 *
    # 1/3 = 2/3, 11-point (6 + 5 * 1/3) / 11 = 23/33; dogs npos 1, F T: precision 1/2 at recall 1: 1/2 and 1/2.
    "false_negatives": ((F(2, 3) + F(1, 2)) / 2, (F(23, 33) + F(1, 2)) / 2),
}
COUNTS = {"classification": 1, "localisation": 1, "both": 1, "duplicate": 1, "background": 2, "missed": 1,
          "false_positives": 6, "false_negatives": 3}


def result():
    return evaluate_voc(DETS, GT, 2, class_names=CLASSES)


def test_each_false_positive_gets_its_tide_kind_and_object():
    r = result()
    kinds = error_kinds(r.outcomes, 0.5)
    names = [KINDS[k] if k >= 0 else "tp" for k in kinds.kind]
    assert names == ["tp", "duplicate", "localisation", "background", "background", "tp", "classification", "both",
                     "tp"]
    # Dupl and Loc aim at a cat, Cls at the dog it is on, Both at the object of another class it overlaps most.
    assert kinds.target[[ROW[x] for x in "bcgh"]].tolist() == [C1, C2, D1, C2]
    assert kinds.target[[ROW["d"], ROW["e"]]].tolist() == [-1, -1]
    np.testing.assert_allclose(kinds.iou[[ROW[x] for x in "bcgh"]], [0.9, 0.3, 1.0, 0.4])
    assert np.flatnonzero(kinds.missed).tolist() == [C3]


def test_fixing_one_kind_adds_the_map_worked_by_hand():
    r = result()
    assert (r.map_area, r.map_11pt) == pytest.approx([float(x) for x in BASE], abs=1e-12)
    analysis = analyse_errors(r, score_threshold=0.4)
    for name, (area, pt11) in FIXED.items():
        cost = analysis.costs[name]
        assert cost.count == COUNTS[name], name
        assert (cost.map_area, cost.map_11pt) == pytest.approx([float(area), float(pt11)], abs=1e-12), name
        assert (cost.dap_area, cost.dap_11pt) == pytest.approx([float(area - BASE[0]), float(pt11 - BASE[1])],
                                                               abs=1e-12), name
    # Cls (+7/24) outweighs FN (also +7/24 but special), Loc (5/48), Both (1/8), Dupl (1/120), Bkg (1/48), Miss (1/18).
    assert analysis.costliest() == "classification"


def test_fixing_every_kind_gives_map_100():
    analysis = analyse_errors(result(), score_threshold=0.4)
    assert analysis.costs["all"].map_area == 1.0 and analysis.costs["all"].map_11pt == 1.0


def test_several_fixes_aimed_at_one_object_make_one_true_positive():
    # Photo 1, cats C1 [0,0,100,100] and C2 [200,0,300,100]. x cat 0.9 and t cat 0.5 (a TP) on C1, x at IoU 0.3:
    # Loc aimed at a found object; y cat 0.8 (IoU 0.3) and z cat 0.7 (IoU 0.35) both Loc on C2.
    # Photo 2, a dog D [400,0,500,100]: u cat 0.95 on it (Cls) and v dog 0.6 at IoU 0.3 (Loc), both aimed at D.
    gt = [(boxes([0, 0, 100, 100], [200, 0, 300, 100]), np.array([1, 1])),
          (boxes([400, 0, 500, 100]), np.array([2]))]
    dets = [(boxes([0, 0, 100, 30], [200, 0, 300, 30], [200, 0, 300, 35], [0, 0, 100, 100]),
             np.array([0.9, 0.8, 0.7, 0.5]), np.array([1, 1, 1, 1])),
            (boxes([400, 0, 500, 100], [400, 0, 500, 30]), np.array([0.95, 0.6]), np.array([1, 2]))]
    r = evaluate_voc(dets, gt, 2, class_names=CLASSES)
    kinds = error_kinds(r.outcomes, 0.5)
    assert [KINDS[k] if k >= 0 else "tp" for k in kinds.kind] == ["localisation"] * 3 + ["tp", "classification",
                                                                                         "localisation"]
    # Loc fixed: x is removed (C1 has t), y takes C2's box, z is removed (y scores more), v takes D's box.
    # Cats u (the Cls error stays) y t: F T T, precision 0, 1/2, 2/3 at recall 0, 1/2, 1: area 2/3 (with z kept as
    # a duplicate, F T F T: 1/2 * 1/2 + 1/2 * 1/2 = 1/2). Dogs v: T, AP 1.
    loc = fixed_result(r, kinds, ["localisation"])
    assert (loc.per_class["cat"].ndet, loc.per_class["dog"].ndet) == (3, 1)
    assert loc.per_class["cat"].ap_area == pytest.approx(2 / 3) and loc.per_class["dog"].ap_area == 1.0
    # Cls alone: u becomes D's dog at 0.95, v stays a false positive: dogs T F, AP 1, two detections.
    cls = fixed_result(r, kinds, ["classification"])
    assert cls.per_class["dog"].ndet == 2 and cls.per_class["dog"].ap_area == 1.0
    # Both kinds together: u (0.95) beats v (0.6) for D, and v is removed.
    both = fixed_result(r, kinds, ["classification", "localisation"])
    assert both.per_class["dog"].ndet == 1 and both.map_area == 1.0
    with pytest.raises(ValueError, match="unknown kinds"):
        fixed_result(r, kinds, ["confusion"])


def test_fixing_every_kind_gives_map_100_on_random_detections():
    # Many overlapping boxes of three classes, some objects difficult: whatever the mix of errors, once all six
    # kinds are fixed only true positives (and detections on difficult objects, which count neither way) remain,
    # and every object left has its true positive.
    rng = np.random.default_rng(0)
    gt, dets = [], []
    for _ in range(30):
        m, k = rng.integers(0, 6), rng.integers(0, 25)
        xy = rng.uniform(0, 200, (m, 2))
        gb = np.concatenate([xy, xy + rng.uniform(10, 120, (m, 2))], axis=1)
        gt.append((gb, rng.integers(1, 4, m), rng.random(m) < 0.15))
        near = gb[rng.integers(0, m, k)] if m else rng.uniform(0, 200, (k, 4))
        db = near + rng.normal(0, 15, (k, 4))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dets.append((db, rng.random(k), rng.integers(1, 4, k)))
    r = evaluate_voc(dets, gt, 3)
    kinds = error_kinds(r.outcomes, 0.5)
    fps = r.outcomes.status == 0
    assert ((kinds.kind >= 0) == fps).all()  # every false positive has one kind, nothing else has one
    assert set(np.unique(kinds.kind[fps])) == set(range(5))  # all five kinds of false positive occur
    assert kinds.missed.any()
    assert r.map_area < 0.9
    fixed = fixed_result(r, kinds, KINDS)
    assert fixed.map_area == 1.0 and fixed.map_11pt == 1.0


def test_ap_by_object_size_ignores_the_other_sizes():
    # One photo. Objects: S [0,0,20,20] (area 400: small), M [100,100,150,150] (2500: medium), B [0,300,32,332]
    # (1024 = 32²: medium, the bins are [lo, hi)), L [200,200,400,400] (40000: large).
    # Detections: L's TP 0.9; a small false positive [500,500,510,510] (area 100) 0.8; S's TP 0.7; B's TP 0.65;
    # a medium false positive [300,0,350,50] (2500) 0.6. Nothing on M.
    gt = [(boxes([0, 0, 20, 20], [100, 100, 150, 150], [0, 300, 32, 332], [200, 200, 400, 400]),
           np.array([1, 1, 1, 1]))]
    dets = [(boxes([200, 200, 400, 400], [500, 500, 510, 510], [0, 0, 20, 20], [0, 300, 32, 332], [300, 0, 350, 50]),
             np.array([0.9, 0.8, 0.7, 0.65, 0.6]), np.array([1, 1, 1, 1, 1]))]
    sizes = {s.name: s for s in ap_by_size(evaluate_voc(dets, gt, 1))}
    assert {k: s.objects for k, s in sizes.items()} == {"small": 1, "medium": 2, "large": 1}
    # Small: L's and B's TPs ignored (their objects are out of the bin), the medium false positive dropped (its
    # box is out too): F T, precision 1/2 at recall 1: area 1/2, 11-point 1/2.
    assert (sizes["small"].map_area, sizes["small"].map_11pt) == pytest.approx([0.5, 0.5])
    # Medium (M and B): B's TP, then the medium false positive; the small one is dropped, S's and L's TPs ignored.
    # T F: precision 1, 1/2 at recall 1/2: area 1/2, 11-point 6/11.
    assert (sizes["medium"].map_area, sizes["medium"].map_11pt) == pytest.approx([0.5, 6 / 11])
    # Large: L's TP alone counts: 1.
    assert (sizes["large"].map_area, sizes["large"].map_11pt) == (1.0, 1.0)


def test_confusion_matrix_at_a_score_threshold():
    r = result()
    kinds = error_kinds(r.outcomes, 0.5)
    # At score >= 0.4: a and f on the cat diagonal; g (a cat on the dog D1) in the dog row; b c d e (Dupl, Loc,
    # Bkg, Bkg) and h (Both, a dog) in the background row; i (0.35) does not count. Objects without a true
    # positive there: C2, C3 (cats), D1, D2 (dogs) in the "nothing detected" column.
    expected = [[0, 4, 1],   # background: nothing, cat, dog
                [2, 2, 0],   # cat
                [2, 1, 0]]   # dog
    assert confusion_matrix(r.outcomes, kinds, 0.4, 2).tolist() == expected


def test_missed_objects_with_their_nearest_detection():
    r = result()
    missed = missed_objects(r.outcomes, 0.4, 0.5)
    # C2: c (cat 0.7, IoU 0.3) and h (dog 0.4, IoU 0.4) touch it; c scores more: its class, a poor box.
    # D1: g, a cat at IoU 1 (0.45). D2: its own TP i, at 0.35 under the threshold. C3: nothing touches it.
    assert [(m.gt, m.reason, m.near) for m in missed] == [
        (C2, "poor_box", ROW["c"]), (D1, "wrong_class", ROW["g"]), (D2, "below_threshold", ROW["i"]),
        (C3, "not_detected", -1)]
    assert [m.iou for m in missed] == pytest.approx([0.3, 1.0, 1.0, 0.0])


def test_the_report_carries_the_analysis_and_reads_back(tmp_path):
    r = result()
    report = build_report(r, CLASSES, ["photo"], [(1000, 1000)], score_threshold=0.4)
    json.dumps(report, allow_nan=False)
    a = report["error_analysis"]
    assert a["errors"]["classification"] == {
        "short": "Cls", "count": 1, "map_area": pytest.approx(float(FIXED["classification"][0])),
        "map_11pt": pytest.approx(float(FIXED["classification"][1])),
        "dap_area": pytest.approx(float(FIXED["classification"][0] - BASE[0])),
        "dap_11pt": pytest.approx(float(FIXED["classification"][1] - BASE[1]))}
    assert list(a["errors"]) == list(KINDS) and list(a["special"]) == ["false_positives", "false_negatives"]
    assert a["costliest"] == "classification" and a["all_fixed"] == {"map_area": 1.0, "map_11pt": 1.0}
    # Every object is 100x100, large. Dropped as smaller than 96²: b (9000), c, e, h. Cats a d f g: T F T F,
    # precision 1, 1/2, 2/3, 1/2 at recall 1/4, 1/4, 1/2, 1/2: area 1/4 + 1/4 * 2/3 = 5/12, 11-point (3 + 3 * 2/3)
    # / 11 = 5/11; dogs i: T at recall 1/2: 1/2, 6/11.
    assert a["by_size"]["large"] == {"min_area": 9216.0, "max_area": None, "objects": 6,
                                     "map_area": pytest.approx((5 / 12 + 1 / 2) / 2), "map_11pt": pytest.approx(0.5)}
    assert a["by_size"]["small"]["objects"] == 0 and a["by_size"]["small"]["map_area"] is None
    assert a["confusion"]["labels"] == ["background", "cat", "dog"]
    assert a["confusion"]["counts"] == [[0, 4, 1], [2, 2, 0], [2, 1, 0]]
    assert a["missed"]["total"] == 4 and a["missed"]["objects"] == 6
    assert a["missed"]["by_reason"] == {"below_threshold": 1, "wrong_class": 1, "poor_box": 1, "other_object": 0,
                                        "not_detected": 1}
    assert a["missed"]["worst"][0] == {
        "rank": 1, "image": "photo", "image_size": [1000, 1000], "class": "cat", "box": [200.0, 0.0, 300.0, 100.0],
        "reason": "poor_box", "near_miss": {"class": "cat", "score": 0.7, "box": [200.0, 0.0, 300.0, 30.0],
                                            "iou": 0.3}}
    assert a["missed"]["worst"][-1]["near_miss"] is None
    # The listed false positives carry their TIDE kind beside the report's older one.
    assert [(w["error"], w["tide_error"]) for w in report["false_positives"]["worst"]][:3] == [
        ("duplicate", "duplicate"), ("localisation", "localisation"), ("background", "background")]
    path = tmp_path / "m.eval.json"
    path.write_text(json.dumps(report))
    assert model_report.read_report(path)["error_analysis"] == json.loads(json.dumps(a))


def test_the_printed_table_names_the_costliest_kind():
    text = analyse_errors(result(), score_threshold=0.4).table()
    assert "costs the most: Cls (classification), +29.17 mAP" in text  # 7/24
    assert "Missed at score >= 0.40: 4 of 6 objects" in text
    assert "dog detected as cat 1" in text


def test_the_command_line_prints_the_analysis_and_writes_it_into_the_report(tmp_path, capsys):
    import torch

    from ssd import SSD300_VOC, build_ssd, export_weights
    from tests.shapes import SHAPE_CLASSES, make_shapes_voc
    from train.evaluate import main

    voc = make_shapes_voc(tmp_path / "shapes", n_train=1, n_val=3, seed=5)
    cfg = SSD300_VOC.replace(name="tiny-shapes", num_classes=3, width=0.125)
    torch.manual_seed(0)
    weights = export_weights(build_ssd(cfg), cfg, SHAPE_CLASSES, tmp_path / "tiny.safetensors", score_threshold=0.05)
    assert main(["--weights", str(weights), "--data-root", str(voc), "--device", "cpu", "--no-progress",
                 "--report"]) == 0
    out = capsys.readouterr().out
    assert "Error analysis (TIDE)" in out and "costs the most:" in out and "AP by object size" in out
    assert "Missed at score >= 0.05" in out  # the card's threshold, as the report's false positives
    analysis = model_report.ModelFiles.read(weights).report["error_analysis"]
    assert analysis["score_threshold"] == 0.05 and analysis["all_fixed"] == {"map_area": 1.0, "map_11pt": 1.0}
    assert list(analysis["by_size"]) == ["small", "medium", "large"]
    assert len(analysis["confusion"]["counts"]) == len(SHAPE_CLASSES) + 1
