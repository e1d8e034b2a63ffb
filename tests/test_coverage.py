"""train.coverage: which objects the default boxes fit at the matching threshold, and their positives."""

import math

import numpy as np
import pytest
import torch

import ssd
from ssd.boxes import cxcywh_to_xyxy
from ssd.priors import default_boxes
from tests.shapes import SHAPE_CLASSES, make_shapes_voc
from train import coverage as cov

CFG = ssd.PRESETS["SSD300_VOC"]


def _prior_in_pixels(index, w, h):
    x1, y1, x2, y2 = cxcywh_to_xyxy(default_boxes(CFG)[index:index + 1]).clamp(0, 1)[0].tolist()
    return [x1 * w, y1 * h, x2 * w, y2 * h]


def test_an_object_on_a_default_box_is_covered_and_a_tiny_one_gets_only_its_forced_positive():
    w, h = 600, 400  # not square: boxes are fractions of the image, as training resizes
    on_prior = _prior_in_pixels(4 * (19 * 38 + 19), w, h)  # the 38x38 layer's centre cell, first box
    tiny = [100.0, 100.0, 101.0, 101.0]  # far smaller than the smallest default box
    annotations = [(np.array([on_prior, tiny], np.float32), np.array([1, 2]), w, h),
                   (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 50, 50)]  # an image without objects
    rows = cov.coverage(CFG, annotations, ("a", "b", "c"))
    a, b, c, total = rows
    assert (a.name, a.objects, a.covered) == ("a", 1, 1)
    assert a.median_best_iou == pytest.approx(1.0, abs=1e-5)
    assert a.positives >= 1  # its own default box, and the neighbours at IoU >= 0.5
    assert (b.objects, b.covered, b.positives) == (1, 0, 1)  # the forced match only
    assert b.median_best_iou < CFG.match_threshold
    assert c.objects == 0 and math.isnan(c.covered_fraction) and math.isnan(c.median_best_iou)
    assert (total.name, total.objects, total.covered, total.positives) == ("all", 2, 1, a.positives + 1)


def test_positives_are_what_training_matches():
    rng = np.random.default_rng(0)
    annotations, gt_boxes, gt_labels = [], [], []
    for _ in range(5):
        xy = rng.uniform(0, 150, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 140, (3, 2))], 1).astype(np.float32)
        labels = rng.integers(1, 4, 3)
        annotations.append((boxes, labels, 300, 300))
        gt_boxes.append(torch.from_numpy(boxes / 300))
        gt_labels.append(torch.from_numpy(labels))
    rows = cov.coverage(CFG, annotations, ("a", "b", "c"), batch=2)  # batches split the images
    m = ssd.match(gt_boxes, gt_labels, default_boxes(CFG).float(), CFG.match_threshold)
    assert rows[-1].positives == int(m.positives.sum())
    for k in (1, 2, 3):
        assert rows[k - 1].positives == int((m.labels == k).sum())
        assert rows[k - 1].objects == sum(int((lab == k).sum()) for _, lab, _, _ in annotations)


def test_command_line_on_a_voc_folder(tmp_path, capsys):
    voc = make_shapes_voc(tmp_path, n_train=6, n_val=2)
    assert cov.main(["--config", "SSD300_VOC", "--data-root", str(voc), "--image-set", "train",
                     "--classes", ",".join(SHAPE_CLASSES)]) == 0
    out = capsys.readouterr().out
    assert "SSD300_VOC: 8732 default boxes, 6 images" in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == [*SHAPE_CLASSES, "all"]


def test_command_line_takes_a_training_commands_coco_flags(tmp_path, capsys):
    """`python -m train --format coco --data IMAGES --ann-file FILE` names COCO data; the same two flags work here
    (the tools' own spelling is --coco-ann FILE --image-dir IMAGES)."""
    from tests.shapes import make_shapes_coco

    image_dir, ann = make_shapes_coco(tmp_path / "coco", n=4, seed=1)
    assert cov.main(["--config", "SSD300_VOC", "--data", str(image_dir), "--ann-file", str(ann)]) == 0
    assert "SSD300_VOC: 8732 default boxes, 4 images" in capsys.readouterr().out


def test_command_line_names_missing_data(capsys):
    assert cov.main(["--config", "SSD300_VOC"]) == 2
    assert "error: name the data" in capsys.readouterr().err
    assert cov.main(["--config", "SSD300_VOC", "--coco-ann", "instances.json"]) == 2
    assert "error: --coco-ann and --image-dir go together" in capsys.readouterr().err
