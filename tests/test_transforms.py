"""SSD data augmentation (paper §2.2): what comes out is a valid training example, the crop keeps exactly the
objects whose centres it contains, and each geometric / photometric step does what the paper says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from ssd import SSD300_VOC, SSD384_LITE0_VOC
from ssd.augment import CROP_CHOICES, Resize, SSDAugmentation, augment
from ssd.photometric import color_matrix
from train.datasets import DetectionDataset, Sample, collate

MEAN = SSD300_VOC.pixel_mean  # ImageNet's, the VGG16 configs' (a Lite base's is 127)


def _only(aug: SSDAugmentation, *, photometric=0.0, expand=0.0, crop_modes=(None,), flip=0.0):
    aug.p_photometric, aug.p_expand, aug.crop_modes, aug.p_flip = photometric, expand, crop_modes, flip
    return aug


def _coordinate_image(w, h):
    """R is the column x, G the row y (w, h <= 256): a crop's origin can be read off its first pixel."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    img[..., 2] = 200
    return img


@st.composite
def examples(draw):
    w, h = draw(st.integers(8, 120)), draw(st.integers(8, 120))
    n = draw(st.integers(0, 6))
    boxes = []
    for _ in range(n):
        x1, y1 = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        boxes.append([x1, y1, draw(st.integers(x1 + 1, w)), draw(st.integers(y1 + 1, h))])
    return w, h, np.array(boxes, np.float32).reshape(-1, 4), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(examples())
def test_augmented_examples_are_valid_and_labels_stay_with_their_boxes(ex):
    w, h, boxes, seed = ex
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = np.arange(1, len(boxes) + 1)  # label k identifies input box k - 1
    out, out_boxes, out_labels = SSDAugmentation(64, MEAN, rng=seed)(image, boxes, labels)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out_boxes.dtype == np.float32 and out_boxes.shape == (len(out_labels), 4)
    assert out_labels.dtype == np.int64
    assert ((out_boxes >= 0) & (out_boxes <= 1)).all()
    assert (out_boxes[:, 2] > out_boxes[:, 0]).all() and (out_boxes[:, 3] > out_boxes[:, 1]).all()
    assert len(set(out_labels.tolist())) == len(out_labels) and set(out_labels.tolist()) <= set(labels.tolist())
    if len(boxes):
        assert len(out_labels) >= 1  # the crop always keeps at least one object
    # Expand, crop, flip and warp map every box by the same per-axis scale; boxes the crop did not clip keep
    # their size ratio to the input, so a label attached to the wrong box shows up as a different ratio.
    src = boxes[out_labels - 1]
    inner = ((out_boxes > 1e-6) & (out_boxes < 1 - 1e-6)).all(1)
    if inner.sum() >= 2:
        sx = (out_boxes[inner, 2] - out_boxes[inner, 0]) / (src[inner, 2] - src[inner, 0])
        sy = (out_boxes[inner, 3] - out_boxes[inner, 1]) / (src[inner, 3] - src[inner, 1])
        np.testing.assert_allclose(sx, sx[0], rtol=1e-3)
        np.testing.assert_allclose(sy, sy[0], rtol=1e-3)


@pytest.mark.parametrize("seed", range(25))
def test_crop_keeps_exactly_the_boxes_whose_centre_is_inside(seed):
    # 100x100 photo, patches of exactly 50x50 (scale fixed at 0.5, no IoU constraint), output 50x50: the output
    # is the patch pixel for pixel, so its first pixel tells where the patch was; then work out by hand which
    # objects must survive and where their clipped boxes land.
    aug = _only(SSDAugmentation(50, MEAN, rng=seed), crop_modes=("any",))
    aug.crop_scale = (0.5, 0.5)
    image = _coordinate_image(100, 100)
    boxes = np.array([[10, 10, 30, 30],    # centre (20, 20)
                      [40, 60, 90, 70],    # centre (65, 65)
                      [0, 45, 100, 55],    # centre (50, 50), wide
                      [70, 5, 80, 15]], np.float32)  # centre (75, 10)
    out, out_boxes, out_labels = aug(image, boxes, np.array([1, 2, 3, 4]))
    x0, y0 = int(out[0, 0, 0]), int(out[0, 0, 1])
    np.testing.assert_array_equal(out, image[y0:y0 + 50, x0:x0 + 50])
    expect_labels, expect_boxes = [], []
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if x0 < cx < x0 + 50 and y0 < cy < y0 + 50:
            expect_labels.append(k + 1)
            expect_boxes.append([(min(max(x1, x0), x0 + 50) - x0) / 50, (min(max(y1, y0), y0 + 50) - y0) / 50,
                                 (min(max(x2, x0), x0 + 50) - x0) / 50, (min(max(y2, y0), y0 + 50) - y0) / 50])
    assert expect_labels, "the transform must pick a patch containing at least one centre"
    assert out_labels.tolist() == expect_labels
    np.testing.assert_allclose(out_boxes, np.array(expect_boxes, np.float32), atol=1e-6)


def test_min_iou_crop_reaches_the_overlap():
    image = _coordinate_image(100, 100)
    boxes = np.array([[20, 20, 60, 60], [5, 70, 15, 80]], np.float32)
    cropped = 0
    for seed in range(20):
        aug = _only(SSDAugmentation(50, MEAN, rng=seed), crop_modes=(0.5,))
        aug.crop_scale = (0.5, 0.5)
        out, out_boxes, out_labels = aug(image, boxes, np.array([1, 2]))
        x0, y0 = int(out[0, 0, 0]), int(out[0, 0, 1])
        if not np.array_equal(out, image[y0:y0 + 50, x0:x0 + 50]):
            continue  # no acceptable patch in 50 trials: the whole image, downscaled
        cropped += 1
        # IoU by hand between the 40x40 box and the 50x50 patch; the 10x10 box can never reach 0.5
        ix = max(0, min(60, x0 + 50) - max(20, x0))
        iy = max(0, min(60, y0 + 50) - max(20, y0))
        assert ix * iy / (40 * 40 + 50 * 50 - ix * iy) >= 0.5
        assert 1 in out_labels.tolist()
    assert cropped >= 15


def test_flip_mirrors_image_and_boxes():
    aug = _only(SSDAugmentation(100, MEAN, rng=0), flip=1.0)
    image = _coordinate_image(100, 100)
    out, boxes, labels = aug(image, np.array([[10, 20, 30, 40]], np.float32), np.array([5]))
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_allclose(boxes, [[0.70, 0.20, 0.90, 0.40]], atol=1e-6)
    assert labels.tolist() == [5]


@pytest.mark.parametrize("seed", range(5))
def test_expand_places_the_photo_on_a_mean_canvas_and_boxes_follow(seed):
    aug = _only(SSDAugmentation(120, mean=(10, 20, 30), rng=seed), expand=1.0)
    image = np.full((60, 80, 3), 250, np.uint8)
    out, boxes, _ = aug(image, np.array([[0, 0, 80, 60]], np.float32), np.array([1]))
    photo = (out == 250).all(2)
    canvas = (out == [10, 20, 30]).all(2)
    assert (photo | canvas).mean() > 0.97  # only resampled border pixels are in between
    assert canvas.any()  # expanded
    rows, cols = np.flatnonzero(photo.any(1)), np.flatnonzero(photo.any(0))
    # the box (the whole photo) and the photo's pixels agree to within a pixel of the 120x120 output
    np.testing.assert_allclose(boxes[0] * 120, [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], atol=1.0)


def test_image_without_boxes_is_not_cropped():
    aug = _only(SSDAugmentation(40, MEAN, rng=0), crop_modes=(0.9,))
    image = _coordinate_image(40, 40)
    out, boxes, labels = aug(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    np.testing.assert_array_equal(out, image)
    assert boxes.shape == (0, 4) and labels.shape == (0,)


def test_same_seed_same_example_and_call_rng_wins():
    image = _coordinate_image(90, 70)
    boxes, labels = np.array([[10, 10, 50, 40], [30, 20, 80, 60]], np.float32), np.array([1, 2])
    a = [SSDAugmentation(48, MEAN, rng=7)(image, boxes, labels) for _ in range(2)]
    for x, y in zip(*a, strict=True):
        np.testing.assert_array_equal(x, y)
    b = [SSDAugmentation(48, MEAN, rng=s)(image, boxes, labels, rng=np.random.default_rng(3)) for s in (1, 2)]
    for x, y in zip(*b, strict=True):
        np.testing.assert_array_equal(x, y)


# -------------------------------------------------------------------------------------------- photometric
def test_color_matrix_steps_match_hand_computations():
    px = np.array([[200.0, 100.0, 50.0]])

    def apply(**kw):
        a, b = color_matrix(**kw)
        return px @ a.T + b

    np.testing.assert_allclose(apply(brightness=20), [[220, 120, 70]])
    np.testing.assert_allclose(apply(contrast=0.5), [[100, 50, 25]])
    # brightness is always first: contrast after it scales the shifted values
    np.testing.assert_allclose(apply(brightness=20, contrast=0.5), [[110, 60, 35]])
    np.testing.assert_allclose(apply(perm=(2, 0, 1)), [[50, 200, 100]])
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    np.testing.assert_allclose(apply(saturation=0.0), [[luma] * 3], atol=1e-3)  # fully desaturated: grey
    np.testing.assert_allclose(apply(saturation=0.5), [[(200 + luma) / 2, (100 + luma) / 2, (50 + luma) / 2]],
                               atol=1e-3)
    hue = apply(hue_deg=18)
    assert abs((hue @ [0.299, 0.587, 0.114])[0] - luma) < 1e-3  # a hue shift keeps the brightness (luma)
    assert not np.allclose(hue, px)
    grey = np.array([[90.0, 90.0, 90.0]])
    a, b = color_matrix(hue_deg=-18, saturation=1.4)
    np.testing.assert_allclose(grey @ a.T + b, grey, atol=1e-3)  # greys have no hue or saturation to change


def test_photometric_changes_colours_only_within_the_paper_ranges():
    aug = _only(SSDAugmentation(32, MEAN, rng=0), photometric=1.0)
    image = np.full((32, 32, 3), (120, 120, 120), np.uint8)
    for seed in range(20):
        out, *_ = aug(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng=np.random.default_rng(seed))
        # a grey photo stays grey; brightness ±32 then contrast 0.5–1.5 keeps it within these bounds
        v = out[..., 0].astype(int)
        assert (out == out[..., :1]).all() and (v == v[0, 0]).all()
        # extremes: (120 - 32) * 0.5 = 44 or 120 * 0.5 - 32 = 28 (contrast first); (120 + 32) * 1.5 = 228
        assert 28 - 1 <= v[0, 0] <= 228 + 1


# ------------------------------------------------------------------------------------------------- resize
def test_resize_normalises_boxes_and_drops_degenerate_ones():
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[50, 25, 100, 75], [0, 0, 200, 100], [10, 10, 10, 20]], np.float32)
    out, b, lab = Resize(300)(image, boxes, np.array([1, 2, 3]))
    assert out.shape == (300, 300, 3)
    np.testing.assert_allclose(b, [[0.25, 0.25, 0.5, 0.75], [0, 0, 1, 1]])
    assert lab.tolist() == [1, 2]


# ---------------------------------------------------------------------------------------- worker seeding
class _OneImage:
    def __len__(self):
        return 6

    def load(self, i):
        return Sample(_coordinate_image(64, 48), np.array([[8, 8, 40, 40]], np.float32), np.array([1]),
                      np.zeros(1, bool), "x")


def test_dataloader_workers_draw_different_augmentations_reproducibly():
    ds = DetectionDataset(_OneImage(), SSDAugmentation(32, MEAN, rng=0))

    def epoch():
        torch.manual_seed(11)
        loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
        return torch.cat([images for images, _, _ in loader])

    first = epoch()
    assert len({x.numpy().tobytes() for x in first}) == 6  # 2 workers x 3 items, no repeats
    assert torch.equal(first, epoch())



# ----------------------------------------------------------------------------- augment: one step at a time
STEP_NAMES = ["input", "photometric distortion", "zoom out", "min-IoU crop", "horizontal flip", "resize"]


def _photo(w=160, h=120, seed=0):
    """A photo with smooth structure (so resampling differences stay small) and three objects, label k = box k."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], 2).astype(np.uint8)
    boxes = np.array([[10, 10, 60, 50], [40, 20, 150, 115], [120, 5, 140, 25]], np.float32)
    return image, boxes, np.array([1, 2, 3])


@pytest.mark.parametrize("seed", range(12))
def test_augment_ends_with_exactly_the_training_output(seed):
    image, boxes, labels = _photo()
    steps = augment(image, boxes, labels, seed=seed, mean=MEAN, size=96)
    assert [s.name for s in steps] == STEP_NAMES
    out, out_boxes, out_labels = SSDAugmentation(96, MEAN)(image, boxes, labels, rng=np.random.default_rng(seed))
    last = steps[-1]
    np.testing.assert_array_equal(last.image, out)
    np.testing.assert_allclose(last.boxes, out_boxes * 96, atol=1e-4)
    assert last.labels.tolist() == out_labels.tolist()
    # The pictures in between are built step by step: resizing the flipped patch gives training's picture,
    # up to resampling and clipping differences.
    before = np.asarray(Image.fromarray(steps[-2].image).resize((96, 96), Image.BILINEAR), np.float32)
    assert np.abs(before - out.astype(np.float32)).mean() < 4.0


@pytest.mark.parametrize("min_iou", CROP_CHOICES)
def test_augment_keeps_boxes_inside_and_labels_with_their_boxes(min_iou):
    image, boxes, labels = _photo()
    for seed in range(10):
        steps = augment(image, boxes, labels, seed=seed, mean=MEAN, min_iou=min_iou, expand_ratio=None, size=64)
        for step in steps:
            h, w = step.image.shape[:2]
            assert step.image.dtype == np.uint8 and step.image.shape[2] == 3
            assert step.boxes.shape == (len(step.labels), 4) and step.boxes.dtype == np.float32
            assert (step.boxes >= 0).all() and (step.boxes[:, [0, 2]] <= w + 1e-3).all()
            assert (step.boxes[:, [1, 3]] <= h + 1e-3).all()
            assert (step.boxes[:, 2] > step.boxes[:, 0]).all() and (step.boxes[:, 3] > step.boxes[:, 1]).all()
            assert set(step.labels.tolist()) <= {1, 2, 3} and len(set(step.labels.tolist())) == len(step.labels)
            assert step.detail
        # Up to the crop, boxes only move; a crop may clip them; the resize scales them. A box that touches no
        # edge of its picture keeps its input size (times the resize's scale), so a label on the wrong box shows.
        crop_h, crop_w = steps[3].image.shape[:2]
        for step in steps:
            h, w = step.image.shape[:2]
            sx, sy = (64 / crop_w, 64 / crop_h) if step.name == "resize" else (1.0, 1.0)
            src = boxes[step.labels - 1]
            inner = (step.boxes[:, 0] > 0.01) & (step.boxes[:, 1] > 0.01) & (step.boxes[:, 2] < w - 0.01) & (
                step.boxes[:, 3] < h - 0.01)
            np.testing.assert_allclose((step.boxes[inner, 2] - step.boxes[inner, 0]),
                                       (src[inner, 2] - src[inner, 0]) * sx, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose((step.boxes[inner, 3] - step.boxes[inner, 1]),
                                       (src[inner, 3] - src[inner, 1]) * sy, rtol=1e-3, atol=1e-3)
        if steps[4].detail.startswith("Mirrored"):  # a flip mirrors the boxes in the same picture
            np.testing.assert_allclose(steps[4].boxes[:, [2, 0]], crop_w - steps[3].boxes[:, [0, 2]], atol=1e-3)
        else:
            np.testing.assert_array_equal(steps[4].boxes, steps[3].boxes)


@pytest.mark.parametrize("ratio", [1.0, 1.5, 2.0, 3.3, 4.0])
def test_augment_zooms_out_by_the_chosen_ratio(ratio):
    image, boxes, labels = _photo()
    for seed in range(4):
        steps = augment(image, boxes, labels, seed=seed, size=300, mean=MEAN, min_iou=None, expand_ratio=ratio)
        coloured, canvas = steps[1].image, steps[2].image
        assert canvas.shape == (int(120 * ratio), int(160 * ratio), 3)
        left, top = steps[2].boxes[0, :2] - boxes[0, :2]  # where the photo went
        assert left == int(left) and top == int(top)
        np.testing.assert_allclose(steps[2].boxes, boxes + [left, top, left, top])
        left, top = int(left), int(top)
        np.testing.assert_array_equal(canvas[top:top + 120, left:left + 160], coloured)
        mean = np.zeros(canvas.shape[:2], bool)
        mean[top:top + 120, left:left + 160] = True
        assert (canvas[~mean] == [124, 116, 104]).all()  # the mean colour, rounded
        assert steps[3].image.shape == canvas.shape  # min_iou None: no crop
    with pytest.raises(ValueError, match="expand_ratio"):
        augment(image, boxes, labels, seed=0, size=300, mean=MEAN, expand_ratio=4.5)


@pytest.mark.parametrize("min_iou", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_augment_crop_honours_the_minimum_iou(min_iou):
    # Without zoom-out the canvas is the photo, so each kept box's IoU with the patch can be worked out from the
    # input box (its label says which), its clipped part and the patch's size.
    image, boxes, labels = _photo()
    cropped = 0
    for seed in range(30):
        steps = augment(image, boxes, labels, seed=seed, size=300, mean=MEAN, min_iou=min_iou, expand_ratio=1)
        crop = steps[3]
        ph, pw = crop.image.shape[:2]
        if (ph, pw) == (120, 160):
            assert "none of the 50 sampled patches" in crop.detail
            continue
        cropped += 1
        src = boxes[crop.labels - 1]
        area = (src[:, 2] - src[:, 0]) * (src[:, 3] - src[:, 1])
        inter = (crop.boxes[:, 2] - crop.boxes[:, 0]) * (crop.boxes[:, 3] - crop.boxes[:, 1])
        iou = inter / (area + pw * ph - inter)
        assert iou.max() >= min_iou - 1e-4, (seed, iou)
        assert f"Minimum IoU {min_iou:g}" in crop.detail
    assert cropped >= (20 if min_iou < 0.9 else 1)  # IoU 0.9 is rare: 50 trials mostly find nothing


def test_augment_without_crop_or_with_any_patch():
    image, boxes, labels = _photo()
    for seed in range(8):
        whole = augment(image, boxes, labels, seed=seed, size=300, mean=MEAN, min_iou=None, expand_ratio=1)
        assert whole[3].image.shape == (120, 160, 3) and whole[3].labels.tolist() == [1, 2, 3]
        anyp = augment(image, boxes, labels, seed=seed, size=300, mean=MEAN, min_iou="any", expand_ratio=1)
        assert anyp[3].image.shape != (120, 160, 3) and len(anyp[3].labels) >= 1
    none = augment(image, np.zeros((0, 4)), np.zeros(0), seed=0, size=300, mean=MEAN, min_iou=0.9)
    assert none[3].image.shape == none[2].image.shape and "never cropped" in none[3].detail
    with pytest.raises(ValueError, match="min_iou"):
        augment(image, boxes, labels, seed=0, size=300, mean=MEAN, min_iou=0.4)


def test_augment_same_seed_same_pictures():
    image, boxes, labels = _photo()
    a, b, c = (augment(image, boxes, labels, seed=s, size=300, mean=MEAN, min_iou="random", expand_ratio=2.5)
               for s in (5, 5, 6))
    for x, y in zip(a, b, strict=True):
        assert x.name == y.name and x.detail == y.detail
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a[1:], c[1:]))


# ------------------------------------------------------------------------------- unchanged for fixed seeds
# Reference outputs of the training transform, computed from the code as it was before the augmentation view
# shared its steps (ssd.augment.augment). For fixed seeds, every output must stay bit for bit the same:
# boxes and labels exactly, the image by its SHA-256 when running the Pillow version recorded in the file (the
# resampling is Pillow's).
# Rewrite only when a change to the augmentation is intended: python -m tests.test_transforms --write-reference
REFERENCE = Path(__file__).parent / "data" / "ssd_augmentation_reference.json"


def _reference_cases():
    """(size, constructor seed, call seed or None, image, boxes, labels), covering every crop mode, expand,
    flip and photometric draw, images without boxes, and the transform's own generator over two calls."""
    for case in range(80):
        g = np.random.default_rng(1000 + case)
        w, h = int(g.integers(40, 520)), int(g.integers(40, 520))
        image = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
        n = int(g.integers(0, 6))
        x1, y1 = g.uniform(0, w - 2, n), g.uniform(0, h - 2, n)
        boxes = np.stack([x1, y1, g.uniform(x1 + 1, w), g.uniform(y1 + 1, h)], 1).astype(np.float32)
        labels = g.integers(1, 21, n)
        size = 300 if case % 2 == 0 else 64
        call_seed = case if case % 4 != 3 else None  # every 4th case: the constructor's generator
        yield size, 7 * case + 1, call_seed, image, boxes, labels


def _reference_outputs() -> list[dict]:
    out = []
    for size, ctor_seed, call_seed, image, boxes, labels in _reference_cases():
        aug = SSDAugmentation(size, MEAN, rng=ctor_seed)
        for _ in range(2 if call_seed is None else 1):
            rng = None if call_seed is None else np.random.default_rng(call_seed)
            img, b, lab = aug(image, boxes, labels, rng=rng)
            out.append({"image_sha256": hashlib.sha256(img.tobytes()).hexdigest(), "shape": list(img.shape),
                        "boxes": b.astype(float).tolist(), "labels": lab.tolist()})
    return out


def test_training_transform_is_unchanged_for_fixed_seeds():
    reference = json.loads(REFERENCE.read_text())
    outputs = _reference_outputs()
    assert len(outputs) == len(reference["outputs"])
    pillow = f"written with Pillow {reference['pillow']}, running {PIL.__version__}"
    for k, (got, want) in enumerate(zip(outputs, reference["outputs"], strict=True)):
        assert got["labels"] == want["labels"], f"output {k}"
        np.testing.assert_array_equal(np.float32(got["boxes"]).reshape(-1, 4),
                                      np.float32(want["boxes"]).reshape(-1, 4), err_msg=f"output {k}")
        assert got["shape"] == want["shape"], f"output {k}"
        # Pillow's resampling is part of the image: compared bit for bit under the Pillow that wrote the file.
        # Under another Pillow only the draws (boxes, labels, shape) are, so that an upgrade cannot fail CI.
        if reference["pillow"] == PIL.__version__:
            assert got["image_sha256"] == want["image_sha256"], f"output {k}: image differs ({pillow})"


def write_reference():
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({"pillow": PIL.__version__, "numpy": np.__version__,
                                     "outputs": _reference_outputs()}, indent=None) + "\n")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-reference"]:
        write_reference()
        print(f"wrote {REFERENCE}")


def test_augmentation_for_a_config_takes_its_size_and_mean():
    # A Lite base's config: 384 pixels and a mean of 127, not the VGG16 configs' 300 and ImageNet mean.
    cfg = SSD384_LITE0_VOC
    aug = SSDAugmentation.for_config(cfg, rng=0)
    assert aug.size == cfg.image_size == 384
    assert aug.mean.tolist() == [round(m) for m in cfg.pixel_mean] == [127, 127, 127]
    # The zoomed-out canvas is that mean: with zoom-out always, and the photo a single black pixel.
    aug = _only(SSDAugmentation.for_config(cfg, rng=0), expand=1.0)
    aug.expand_range = (4.0, 4.0)
    out, _, _ = aug(np.zeros((1, 1, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert out.shape == (384, 384, 3) and (out[-1, -1] == 127).all()
    assert repr(SSDAugmentation.for_config(SSD300_VOC)) == "SSDAugmentation(size=300, mean=(124, 116, 104))"


def test_augmentation_has_no_default_size_or_mean():
    with pytest.raises(TypeError):
        SSDAugmentation()
    with pytest.raises(TypeError):
        SSDAugmentation(300)
    with pytest.raises(TypeError):
        Resize()
    with pytest.raises(TypeError):
        augment(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 4)), np.zeros(0), seed=0)
