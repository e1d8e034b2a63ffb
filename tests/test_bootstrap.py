"""The paired bootstrap of a difference in mAP (ssd.evaluation.bootstrap), on hand-made detections whose mAPs are
known, and through `python -m train.evaluate --baseline`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssd.evaluation.bootstrap import paired_bootstrap


def _scene(n=40, seed=0):
    """n images, each with one object of class 1 and, in every second image, one of class 2; per image the
    perfect detections and those of a detector that never finds class 2."""
    rng = np.random.default_rng(seed)
    gts, perfect, blind = [], [], []
    for i in range(n):
        x, y = rng.uniform(0, 100, 2)
        boxes = [[x, y, x + 50, y + 50]] + ([[x + 100, y, x + 150, y + 60]] if i % 2 == 0 else [])
        labels = [1] + ([2] if i % 2 == 0 else [])
        boxes, labels = np.array(boxes, float), np.array(labels)
        gts.append((boxes, labels))
        perfect.append((boxes, np.full(len(labels), 0.9), labels))
        blind.append((boxes[:1], np.array([0.9]), labels[:1]))
    return gts, perfect, blind


def test_identical_detectors_differ_by_nothing_in_every_draw():
    gts, perfect, _ = _scene()
    r = paired_bootstrap(perfect, perfect, gts, num_classes=2, resamples=50)
    assert (r.difference_area, r.difference_11pt, r.sd_area, r.low_area, r.high_area, r.b_ahead) == (0, 0, 0, 0, 0, 0)
    assert r.resamples == 50


def test_a_detector_blind_to_one_of_two_classes_is_half_an_map_behind_in_every_draw():
    # A finds class 1 perfectly (AP 1) and never class 2 (AP 0): mAP 0.5; B is perfect: mAP 1. Any draw of 40
    # images holds some of the 20 with class 2 (all 40 drawn from the other 20 has probability 2^-40), so every
    # draw's difference is exactly 0.5.
    gts, perfect, blind = _scene()
    r = paired_bootstrap(blind, perfect, gts, num_classes=2, resamples=30, seed=3)
    assert r.difference_area == pytest.approx(0.5) and r.difference_11pt == pytest.approx(0.5)
    assert r.low_area == pytest.approx(0.5) and r.high_area == pytest.approx(0.5) and r.sd_area < 1e-12
    assert r.b_ahead == 1.0
    swapped = paired_bootstrap(perfect, blind, gts, num_classes=2, resamples=30, seed=3)
    assert swapped.difference_area == pytest.approx(-0.5) and swapped.b_ahead == 0.0
    assert "-50.00" in swapped.summary()


def test_a_difference_on_few_images_has_a_wide_interval_that_the_seed_repeats():
    # B finds class 2 only in the first of the 20 images holding it: its class-2 AP is 1/20 on all images, and
    # it moves with how often the draw repeats that one image.
    gts, perfect, blind = _scene()
    partly = [perfect[0]] + blind[1:]
    r = paired_bootstrap(blind, partly, gts, num_classes=2, resamples=100, seed=1)
    assert r.difference_area == pytest.approx(0.5 * (1 / 20))
    assert r.sd_area > 0 and r.low_area < r.difference_area < r.high_area
    assert r == paired_bootstrap(blind, partly, gts, num_classes=2, resamples=100, seed=1)


def test_detections_for_other_images_are_refused():
    gts, perfect, _ = _scene(n=4)
    with pytest.raises(ValueError, match="same 4 images"):
        paired_bootstrap(perfect[:3], perfect, gts, num_classes=2)


def test_command_line_compares_weights_with_a_baseline(tmp_path, capsys):
    from ssd import SSD300_VOC, build_ssd, export_weights
    from tests.shapes import SHAPE_CLASSES, make_shapes_voc
    from train.evaluate import main

    voc = make_shapes_voc(tmp_path / "shapes", n_train=2, n_val=3, seed=5)
    cfg = SSD300_VOC.replace(name="tiny-shapes", num_classes=3, width=0.125)
    torch.manual_seed(0)
    weights = export_weights(build_ssd(cfg), cfg, SHAPE_CLASSES, tmp_path / "tiny.safetensors")
    out = tmp_path / "eval.json"
    assert main(["--weights", str(weights), "--baseline", str(weights), "--data-root", str(voc), "--image-set",
                 "val", "--device", "cpu", "--resamples", "5", "--no-progress", "--json", str(out)]) == 0
    assert "B - A: area mAP +0.00" in capsys.readouterr().out
    baseline = json.loads(out.read_text())["baseline"]
    assert baseline["weights"] == str(weights) and baseline["difference_area"] == 0
    assert main(["--weights", str(weights), "--baseline", str(tmp_path / "nope.safetensors"), "--data-root",
                 str(voc), "--image-set", "val", "--no-progress"]) == 2
