"""The augmentation view's pictures (visualize.augment): training's steps on an example photo, each step's boxes
matched exactly as the Matching view matches them, and the paper's point — zoom-out moves an object's positives to
the fine layers, a crop to the coarse ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import ssd
from ssd.augment import SSDAugmentation, augment
from visualize.augment import (
    augmentation_steps,
    draw_step,
    match_step,
    positives_by_step,
    step_ground_truth,
    steps_markdown,
)
from visualize.draw import GT_COLOUR
from visualize.examples import example_annotations, example_image
from visualize.matching import GroundTruth, match_ground_truth

CFG = ssd.SSD300_VOC
NAMES = list(ssd.VOC_CLASSES)


def example(name="motorcycle"):
    image = example_image(name)
    objects = example_annotations(name)
    return image, GroundTruth([c for c, _ in objects], [tuple(map(float, b)) for _, b in objects], *image.size)


def mean_layer(cfg, m) -> float:
    """The average source-layer index of the positives (0 = the finest, conv4_3)."""
    return float(ssd.prior_layout(cfg).layer[m.positives[0]].float().mean())


@pytest.mark.parametrize("cfg", [ssd.SSD300_VOC, ssd.SSD512_VOC], ids=lambda c: c.name)
def test_steps_are_training_code_at_the_configs_size(cfg):
    image, gt = example()
    steps = augmentation_steps(image, gt, cfg, NAMES, seed=3)
    direct = augment(np.asarray(image), np.array(gt.boxes, np.float32), np.array([14, 2]), seed=3,
                     size=cfg.image_size, mean=cfg.pixel_mean)
    for a, b in zip(steps, direct, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    out, boxes, labels = SSDAugmentation.for_config(cfg)(
        np.asarray(image), np.array(gt.boxes, np.float32), np.array([14, 2]), rng=np.random.default_rng(3))
    np.testing.assert_array_equal(steps[-1].image, out)
    assert steps[-1].image.shape == (cfg.image_size, cfg.image_size, 3)
    assert [NAMES[k - 1] for k in steps[-1].labels] == [NAMES[k - 1] for k in labels]
    with pytest.raises(ValueError, match="ground truth is for"):
        augmentation_steps(image.resize((100, 100)), gt, cfg, NAMES, seed=0)


def test_each_step_is_matched_like_the_matching_view():
    image, gt = example()
    for step in augmentation_steps(image, gt, CFG, NAMES, seed=1, min_iou=0.3, expand_ratio=2.0):
        step_gt, m = match_step(CFG, step, NAMES)
        h, w = step.image.shape[:2]
        assert (step_gt.width, step_gt.height) == (w, h)
        assert step_gt.labels == [NAMES[k - 1] for k in step.labels]
        np.testing.assert_allclose(step_gt.normalised().numpy(), step.boxes / [w, h, w, h], rtol=1e-6)
        same = match_ground_truth(CFG, step_gt, NAMES, 0.5)
        assert torch.equal(m.positives, same.positives) and torch.equal(m.forced, same.forced)


def test_zoom_out_moves_positives_to_fine_layers_and_a_crop_to_coarse_ones():
    image, gt = example()
    # The whole motorbike on a 4x canvas: it is 1/4 as wide, so finer layers' default boxes fit it.
    steps = augmentation_steps(image, gt, CFG, NAMES, seed=0, min_iou=None, expand_ratio=4.0)
    before, after = (match_step(CFG, steps[k], NAMES)[1] for k in (0, 2))
    assert mean_layer(CFG, after) < mean_layer(CFG, before) - 1
    assert positives_by_step(CFG, steps[:3], [match_step(CFG, s, NAMES)[1] for s in steps[:3]])[1][0][4] > 0
    # A patch whose IoU with an object is >= 0.3 is at least 30% covered by that object (intersection / patch
    # >= IoU): the object is large in the crop and only coarse layers' default boxes (conv8_2 on) match it.
    layout = ssd.prior_layout(CFG)
    crops = 0
    for seed in range(8):
        steps = augmentation_steps(image, gt, CFG, NAMES, seed=seed, min_iou=0.3, expand_ratio=3.0)
        crop = steps[3]
        if crop.image.shape == steps[2].image.shape:
            continue  # no acceptable patch
        crops += 1
        h, w = crop.image.shape[:2]
        area = (crop.boxes[:, 2] - crop.boxes[:, 0]) * (crop.boxes[:, 3] - crop.boxes[:, 1]) / (w * h)
        k = int(area.argmax())
        assert area[k] >= 0.3 - 1e-4
        m = match_step(CFG, crop, NAMES)[1]
        layers = layout.layer[m.positives[0] & (m.matched_gt[0] == k)]
        assert len(layers) and int(layers.min()) >= 2
    assert crops >= 3


def test_positives_table_and_text_agree_with_the_matches():
    image, gt = example()
    steps = augmentation_steps(image, gt, CFG, NAMES, seed=2, expand_ratio=3.0)
    matches = [match_step(CFG, s, NAMES)[1] for s in steps]
    headers, rows = positives_by_step(CFG, steps, matches)
    assert headers[:2] == ["source layer", "feature map"] and headers[2:] == [
        f"{i} · {s.name}" for i, s in enumerate(steps)]
    assert [r[0] for r in rows] == [*CFG.source_layers, "total"]
    for j, m in enumerate(matches):
        assert sum(r[2 + j] for r in rows[:-1]) == rows[-1][2 + j] == int(m.positives.sum())
    text = steps_markdown(CFG, steps, matches)
    for i, (s, m) in enumerate(zip(steps, matches)):
        assert f"{i}. **{s.name}**" in text and f"**{int(m.positives.sum())}** positives" in text
        assert s.detail in text


def test_a_step_picture_shows_its_ground_truth_where_the_box_is():
    image, gt = example()
    steps = augmentation_steps(image, gt, CFG, NAMES, seed=0, min_iou=None, expand_ratio=2.0)
    step = steps[2]
    step_gt, m = match_step(CFG, step, NAMES)
    picture = draw_step(2, step, CFG, step_gt, m, side=400)
    h, w = step.image.shape[:2]
    s = 400 / max(w, h)
    assert picture.width == round(w * s) and picture.height > round(h * s)  # a title above, a legend below
    # The photo part is drawn under a title strip: find the strip's height from the grey background.
    title = next(y for y in range(picture.height) if picture.getpixel((picture.width - 1, y)) != (32, 32, 32))
    x1, y1, x2, y2 = (v * s for v in step.boxes[0])
    cx = round((x1 + x2) / 2)  # the middle of the box's bottom edge is white (GT), give or take the line width
    assert any(picture.getpixel((cx, title + round(y2) + d)) == GT_COLOUR for d in range(-2, 3))
    assert isinstance(picture, Image.Image) and picture.mode == "RGB"


def test_without_ground_truth_nothing_is_matched_or_cropped():
    image = example_image("coffee")
    gt = GroundTruth([], [], *image.size)
    steps = augmentation_steps(image, gt, CFG, NAMES, seed=0, min_iou=0.5)
    assert steps[3].image.shape == steps[2].image.shape and "never cropped" in steps[3].detail
    for step in steps:
        step_gt, m = match_step(CFG, step, NAMES)
        assert step_gt.boxes == [] and int(m.positives.sum()) == 0
    assert step_ground_truth(steps[-1], NAMES).width == 300
