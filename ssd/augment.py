"""The SSD paper's data augmentation (§2.2 "Data augmentation" and §3.6), on numpy/PIL, fast.

`SSDAugmentation` draws, per image:
  1. photometric distortion (the Caffe/ssd.pytorch recipe the paper refers to): brightness +δ, δ~U(-32, 32);
     contrast ×α, α~U(0.5, 1.5), either before or after the colour ops (coin flip); saturation ×U(0.5, 1.5);
     hue rotated by U(-18°, 18°); a random permutation of the channels — each applied with p = 0.5;
  2. expand ("zoom out", p = 0.5): a canvas r×W by r×H, r~U(1, 4), filled with the mean colour, the image at
     a random place;
  3. min-IoU random crop ("sample a patch"): the minimum overlap is one of {no crop, 0.1, 0.3, 0.5, 0.7, 0.9,
     no constraint}; a patch with sides in [0.3, 1] of the canvas's and aspect ratio in [1/2, 2] is accepted
     when at least one box has its centre inside it and, among those, one reaches the overlap (the first
     acceptable of 50 trials, else no crop). Boxes whose centres are inside are kept and clipped to the
     patch, the others dropped (with their labels). Images without boxes are never cropped;
  4. horizontal flip (p = 0.5);
  5. warp (bilinear) to size × size.

How it stays fast:
  * expand and crop are decided together as geometry, so neither the 4× canvas nor the crop is ever built:
    the part of the photo that ends up in the patch is resized once, by PIL, straight into its place in a
    size×size uint8 output pre-filled with the mean;
  * every colour op above is pointwise and affine in RGB, so they compose, in the drawn order, into one 3×3
    matrix + offset (`ssd.photometric`) that PIL applies in C once, after the resize, to the photo's pixels only
    (the mean fill stays exactly the mean, as when colours are distorted before expanding). Clipping to
    [0, 255] happens once, at the end. Differences from the Caffe/ssd.pytorch HSV implementation: saturation
    and hue act in YIQ rather than HSV (saturation keeps the luma instead of the max channel), and applying the
    colour map after the resample instead of before only matters where values clip at 0 or 255.

Randomness. Every call draws from a numpy Generator: the `rng=` argument of the call if given (the training
engine passes one seeded by (seed, epoch, index), which makes runs exactly reproducible and resumable), else
the transform's own generator, built from the `rng` given to the constructor (an int seed or a Generator;
None: fresh OS entropy). Inside a DataLoader worker the own generator is re-created once per worker from
(torch's per-worker seed, the constructor seed), so workers never repeat each other's draws, each epoch
differs (torch draws a new base seed per epoch), and `torch.manual_seed(s)` before building the loader
makes the whole stream reproducible.

One step at a time. `SSDAugmentation.draw` makes every random choice of one example (in the order above) and
returns them as `Draws`; `render` builds the training output from them in one resample; the box steps
(`expand_boxes`, `crop_boxes`, `flip_boxes`) are module functions. `augment` runs the same draws and box steps
and also builds each intermediate picture (coloured photo, zoomed-out canvas, patch, flip) for the app's
Augmentation view; its last step is exactly what `SSDAugmentation` returns for the same generator.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from .photometric import CHANNEL_ORDERS, apply_color, color_matrix, describe_color

__all__ = ["CROP_CHOICES", "AugmentStep", "Draws", "Resize", "SSDAugmentation", "augment", "crop_boxes",
           "expand_boxes", "flip_boxes"]

_CROP_MODES = (None, 0.1, 0.3, 0.5, 0.7, 0.9, "any")


def _as_arrays(boxes, labels):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    return boxes, labels


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    return image


def _finish_boxes(boxes, labels):
    """Clip normalised boxes to [0, 1] and drop the degenerate ones (with their labels)."""
    np.clip(boxes, 0.0, 1.0, out=boxes)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


def expand_boxes(boxes: np.ndarray, left: int, top: int) -> np.ndarray:
    """Pixel boxes of the photo -> pixel boxes of the zoomed-out canvas that holds it at (left, top)."""
    return boxes + np.array([left, top, left, top], np.float32)


def crop_boxes(boxes: np.ndarray, labels: np.ndarray, patch, keep: np.ndarray):
    """Canvas pixel boxes -> the kept ones (`keep`: centre inside the patch) in coordinates normalised to the
    patch, clipped to it; degenerate ones dropped, labels following their boxes."""
    px1, py1, px2, py2 = patch
    boxes, labels = boxes[keep], labels[keep]
    boxes = (boxes - np.array([px1, py1, px1, py1], np.float32)) / np.array(
        [px2 - px1, py2 - py1, px2 - px1, py2 - py1], np.float32)
    return _finish_boxes(boxes, labels)


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Normalised boxes mirrored left to right."""
    return np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1).reshape(-1, 4)


@dataclass(frozen=True)
class Draws:
    """Every random choice of one augmented example, as `SSDAugmentation.draw` made them.

    color: the drawn colour ops (keyword arguments of `color_matrix`), or None when none was drawn;
    canvas: (width, height, left, top) of the zoomed-out canvas and the photo's place in it (the photo's own
    size and (0, 0) without zoom-out); crop_mode: the minimum overlap drawn (None: no crop, "any", or a number;
    None too for an image without boxes, which is never cropped); patch: (x1, y1, x2, y2) of the patch in the
    canvas (the whole canvas when not cropped); keep: which boxes the patch keeps; cropped: whether a patch was
    taken (False also when none of the trials was acceptable); flip: mirrored left to right.
    """

    color: dict | None
    canvas: tuple[int, int, int, int]
    crop_mode: object
    patch: tuple[int, int, int, int]
    keep: np.ndarray
    cropped: bool
    flip: bool

    @property
    def color_matrix(self):
        """(A, b) of `color_matrix`, or None."""
        return None if self.color is None else color_matrix(**self.color)


class _WorkerAwareRNG:
    """The transform's own Generator, re-created once per DataLoader worker (see the module docstring)."""

    def __init__(self, rng):
        if isinstance(rng, np.random.Generator):
            self._seed = int(rng.integers(2**63))
            self._gen = rng
        else:
            self._seed = int(np.random.SeedSequence(rng).generate_state(2, np.uint64)[0]) if rng is None else int(rng)
            self._gen = np.random.default_rng(self._seed)
        self._owner = (os.getpid(), None)

    def get(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        owner = (os.getpid(), info.seed if info is not None else None)
        if owner != self._owner:
            self._owner = owner
            if info is not None:
                self._gen = np.random.default_rng([info.seed % 2**63, self._seed])
        return self._gen


class SSDAugmentation:
    """Training transform: (image HxWx3 uint8 RGB, boxes [M,4] pixel xyxy, labels [M]) ->
    (image size x size x 3 uint8, boxes [M',4] float32 normalised xyxy, labels [M'] int64).

    `size`: the network's input side; `mean` (RGB, 0–255) fills the expanded canvas: both the config's, as
    `for_config` takes them (no defaults: a Lite base's mean is not ImageNet's). `rng`: an int seed, a numpy
    Generator, or None. Each probability / range is an attribute, so it can be changed for experiments or turned
    off in tests.
    """

    def __init__(self, size: int, mean, rng=None):
        self.size = int(size)
        self.mean = np.clip(np.round(np.asarray(mean, np.float64)), 0, 255).astype(np.uint8)
        self._rng = _WorkerAwareRNG(rng)
        self.p_photometric = 0.5  # each of brightness, contrast, saturation, hue, channel swap
        self.brightness_delta = 32.0
        self.contrast_range = (0.5, 1.5)
        self.saturation_range = (0.5, 1.5)
        self.hue_delta_deg = 18.0
        self.p_expand = 0.5
        self.expand_range = (1.0, 4.0)
        self.crop_modes = _CROP_MODES
        self.crop_scale = (0.3, 1.0)
        self.crop_aspect = (0.5, 2.0)
        self.crop_trials = 50
        self.p_flip = 0.5

    @classmethod
    def for_config(cls, cfg, rng=None) -> SSDAugmentation:
        """Training's augmentation for the network `cfg` (an `ssd.SSDConfig`) describes: its input size, its
        mean colour for the zoomed-out canvas."""
        return cls(cfg.image_size, cfg.pixel_mean, rng=rng)

    # ------------------------------------------------------------------------------------------ pieces
    def photometric_draw(self, rng: np.random.Generator) -> dict | None:
        """Draw the colour distortion: keyword arguments of `color_matrix`, or None when no op was drawn."""
        p = self.p_photometric
        brightness = rng.uniform(-self.brightness_delta, self.brightness_delta) if rng.random() < p else 0.0
        contrast_first = rng.random() < 0.5
        contrast = rng.uniform(*self.contrast_range) if rng.random() < p else 1.0
        saturation = rng.uniform(*self.saturation_range) if rng.random() < p else 1.0
        hue = rng.uniform(-self.hue_delta_deg, self.hue_delta_deg) if rng.random() < p else 0.0
        perm = CHANNEL_ORDERS[rng.integers(len(CHANNEL_ORDERS))] if rng.random() < p else (0, 1, 2)
        if brightness == 0.0 and contrast == 1.0 and saturation == 1.0 and hue == 0.0 and perm == (0, 1, 2):
            return None
        return {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue_deg": hue,
                "contrast_first": contrast_first, "perm": perm}

    def expand(self, width: int, height: int, rng: np.random.Generator):
        """Draw the zoom-out: (canvas_w, canvas_h, left, top) of the photo inside the canvas."""
        if rng.random() >= self.p_expand:
            return width, height, 0, 0
        r = rng.uniform(*self.expand_range)
        cw, ch = int(width * r), int(height * r)
        left, top = int(rng.uniform(0, cw - width)), int(rng.uniform(0, ch - height))
        return cw, ch, left, top

    def crop_mode(self, boxes: np.ndarray, rng: np.random.Generator):
        """Draw the minimum overlap (one of `crop_modes`); None without drawing for an image without boxes."""
        if len(boxes) == 0:
            return None
        return self.crop_modes[rng.integers(len(self.crop_modes))]

    def patch(self, boxes: np.ndarray, cw: int, ch: int, mode, rng: np.random.Generator):
        """Draw a patch for overlap `mode` in a cw x ch canvas holding `boxes` (pixel xyxy):
        (x1, y1, x2, y2 of the patch, mask of the boxes kept), or None when there is no crop to make (`mode`
        None) or none of the trials is acceptable.

        The trials are drawn all at once and the first acceptable one is taken (one box_iou call)."""
        if mode is None:
            return None
        n = self.crop_trials
        lo, hi = self.crop_scale
        w = rng.uniform(lo * cw, hi * cw, n)
        h = rng.uniform(lo * ch, hi * ch, n)
        x1 = rng.uniform(0, 1, n) * (cw - w)
        y1 = rng.uniform(0, 1, n) * (ch - h)
        rects = np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.int64).astype(np.float32)  # [n, 4], whole pixels
        ok = (h / w >= self.crop_aspect[0]) & (h / w <= self.crop_aspect[1])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [M, 2]
        inside = ((centres[None, :, 0] > rects[:, None, 0]) & (centres[None, :, 0] < rects[:, None, 2])
                  & (centres[None, :, 1] > rects[:, None, 1]) & (centres[None, :, 1] < rects[:, None, 3]))  # [n, M]
        ok &= inside.any(1)
        if mode != "any" and ok.any():
            iou = box_iou(torch.from_numpy(rects), torch.from_numpy(boxes)).numpy()  # [n, M]
            ok &= np.where(inside, iou, -1.0).max(1) >= float(mode)
        if not ok.any():
            return None
        k = int(np.argmax(ok))
        return tuple(int(v) for v in rects[k]), inside[k]

    def draw(self, width: int, height: int, boxes: np.ndarray, rng: np.random.Generator) -> Draws:
        """Every random choice for a width x height photo with `boxes` (pixel xyxy), in training's order."""
        color = self.photometric_draw(rng)
        cw, ch, left, top = self.expand(width, height, rng)
        shifted = expand_boxes(boxes, left, top)
        mode = self.crop_mode(shifted, rng)
        found = self.patch(shifted, cw, ch, mode, rng)
        patch, keep = found if found is not None else ((0, 0, cw, ch), np.ones(len(boxes), bool))
        flip = rng.random() < self.p_flip
        return Draws(color, (cw, ch, left, top), mode, patch, keep, found is not None, flip)

    def render(self, image: np.ndarray, d: Draws) -> np.ndarray:
        """The size x size training image for `d`, in one resample (see the module docstring)."""
        height, width = image.shape[:2]
        s = self.size
        cw, ch, left, top = d.canvas
        px1, py1, px2, py2 = d.patch
        # The photo occupies [left, left+W) x [top, top+H) of the canvas; its part inside the patch goes to an
        # integer rectangle of the output, and the source box is taken to match that rectangle exactly.
        sx, sy = s / (px2 - px1), s / (py2 - py1)
        dx1 = round((max(px1, left) - px1) * sx)
        dy1 = round((max(py1, top) - py1) * sy)
        dx2 = round((min(px2, left + width) - px1) * sx)
        dy2 = round((min(py2, top + height) - py1) * sy)
        out = np.empty((s, s, 3), np.uint8)
        if dx1 > 0 or dy1 > 0 or dx2 < s or dy2 < s:
            out[:] = self.mean
        if dx2 > dx1 and dy2 > dy1:
            src = (min(max(dx1 / sx + px1 - left, 0.0), width), min(max(dy1 / sy + py1 - top, 0.0), height),
                   min(max(dx2 / sx + px1 - left, 0.0), width), min(max(dy2 / sy + py1 - top, 0.0), height))
            patch = Image.fromarray(image).resize((dx2 - dx1, dy2 - dy1), Image.BILINEAR, box=src)
            patch = apply_color(patch, d.color_matrix)
            if d.flip:
                patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
                dx1, dx2 = s - dx2, s - dx1
            out[dy1:dy2, dx1:dx2] = np.asarray(patch)
        return out

    # ------------------------------------------------------------------------------------------ call
    def __call__(self, image: np.ndarray, boxes, labels, rng: np.random.Generator | None = None):
        rng = rng if rng is not None else self._rng.get()
        image = _check_image(image)
        boxes, labels = _as_arrays(boxes, labels)
        height, width = image.shape[:2]
        d = self.draw(width, height, boxes, rng)
        out = self.render(image, d)
        boxes, labels = crop_boxes(expand_boxes(boxes, *d.canvas[2:]), labels, d.patch, d.keep)
        if d.flip:
            boxes = flip_boxes(boxes)
        return out, boxes.astype(np.float32), labels

    def __repr__(self) -> str:
        return f"SSDAugmentation(size={self.size}, mean={tuple(int(m) for m in self.mean)})"


class Resize:
    """Evaluation transform: warp to size x size (bilinear) and normalise the boxes to [0, 1]; nothing random.
    Same call signature as SSDAugmentation (an `rng` argument is accepted and ignored)."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, image: np.ndarray, boxes, labels, rng=None):
        image = np.asarray(image)
        boxes, labels = _as_arrays(boxes, labels)
        h, w = image.shape[:2]
        if (w, h) != (self.size, self.size):
            image = np.array(Image.fromarray(image).resize((self.size, self.size), Image.BILINEAR))
        boxes = boxes / np.array([w, h, w, h], np.float32)
        boxes, labels = _finish_boxes(boxes, labels)
        return image, boxes, labels

    def __repr__(self) -> str:
        return f"Resize({self.size})"


# ------------------------------------------------------------------------------------ one step at a time
# The crop's minimum overlap, as `augment` takes it: "random" draws it as training does (one of `_CROP_MODES`);
# None never crops; "any" samples a patch with no overlap constraint; a number is the minimum IoU.
CROP_CHOICES = ("random",) + _CROP_MODES


class AugmentStep(NamedTuple):
    """One step of `augment`: its name, the picture after it (HxWx3 uint8), the boxes in that picture's pixels
    (xyxy float32), their labels, and what was drawn (a sentence)."""

    name: str
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    detail: str


def augment(image, boxes, labels, *, seed, size: int, mean, min_iou="random",
            expand_ratio: float | None = None) -> list[AugmentStep]:
    """SSD's augmentation of one example, one step at a time, with training's code: the input, then photometric
    distortion, zoom-out, min-IoU crop, horizontal flip and the resize to size x size (`size` and `mean`: the
    config's, as `SSDAugmentation` takes them).

    image: HxWx3 uint8 RGB; boxes: [M, 4] pixel xyxy; labels: [M]. seed: the draws come from
    `np.random.default_rng(seed)`, so the same seed gives the same pictures. min_iou: one of `CROP_CHOICES`
    ("random": drawn as in training). expand_ratio: the zoom-out ratio in [1, 4] (always applied; 1 is none),
    or None to draw it as in training (p = 0.5, ratio ~ U(1, 4)). With both left random, the last step is exactly
    `SSDAugmentation(size, mean)(image, boxes, labels, rng=np.random.default_rng(seed))` (boxes in pixels).

    The intermediate pictures apply the colours to the photo before zooming out, as the paper's recipe does;
    training applies the same colour map after its one resample, which differs only where values clip.
    """
    aug = SSDAugmentation(size, mean)
    if min_iou not in CROP_CHOICES:
        raise ValueError(f"min_iou must be one of {CROP_CHOICES}, got {min_iou!r}")
    if min_iou != "random":
        aug.crop_modes = (min_iou,)
    if expand_ratio is not None:
        r = float(expand_ratio)
        if not 1.0 <= r <= 4.0:
            raise ValueError(f"expand_ratio must be in [1, 4] (or None: random), got {expand_ratio!r}")
        aug.p_expand, aug.expand_range = 1.0, (r, r)
    image = _check_image(image)
    boxes, labels = _as_arrays(boxes, labels)
    height, width = image.shape[:2]
    d = aug.draw(width, height, boxes, np.random.default_rng(seed))
    steps = [AugmentStep("input", image, boxes, labels, f"The {width}×{height} photo and its {len(boxes)} "
                                                        f"object{'s' * (len(boxes) != 1)}.")]
    # 1. colours: pointwise, the boxes do not move
    coloured = np.asarray(apply_color(Image.fromarray(image), d.color_matrix))
    steps.append(AugmentStep("photometric distortion", coloured, boxes, labels,
                             describe_color(d.color, aug.p_photometric)))
    steps.append(_zoom_out_step(aug, d, coloured, boxes, labels, drawn=expand_ratio is None))
    crop, normalised = _crop_step(aug, d, steps[-1], how="drawn at random, as in training" if min_iou == "random"
                                  else "as chosen")
    steps.append(crop)
    # 4. horizontal flip
    ph, pw = crop.image.shape[:2]
    scale = np.array([pw, ph, pw, ph], np.float32)
    flipped, kept = crop.image, crop.labels
    if d.flip:
        normalised = flip_boxes(normalised)
        flipped = flipped[:, ::-1]
    steps.append(AugmentStep("horizontal flip", np.ascontiguousarray(flipped), normalised * scale, kept,
                             "Mirrored left to right." if d.flip else f"Not flipped (a flip happens with p = "
                                                                      f"{aug.p_flip:g})."))
    # 5. the network's input: training's own rendering of these draws
    steps.append(AugmentStep("resize", aug.render(image, d), normalised * np.float32(size), kept,
                             f"Warped to {size}×{size} (bilinear): the picture training feeds the network."))
    return steps


def _zoom_out_step(aug: SSDAugmentation, d: Draws, coloured, boxes, labels, drawn: bool) -> AugmentStep:
    """`augment`'s step 2: the coloured photo at (left, top) of a canvas filled with the mean colour. `drawn`:
    whether the ratio was drawn as in training (else given)."""
    height, width = coloured.shape[:2]
    cw, ch, left, top = d.canvas
    canvas = np.empty((ch, cw, 3), np.uint8)
    canvas[:] = aug.mean
    canvas[top:top + height, left:left + width] = coloured
    if (cw, ch) == (width, height):
        detail = (f"No zoom-out was drawn (it happens with p = {aug.p_expand:g})." if drawn
                  else "No zoom-out (ratio 1).")
    else:
        detail = (f"Zoom out ×{cw / width:.2f}: a {cw}×{ch} canvas filled with the mean colour, the photo at "
                  f"({left}, {top}). Relative to the picture, every object keeps {width / cw:.0%} of its width "
                  f"and {height / ch:.0%} of its height.")
    return AugmentStep("zoom out", canvas, expand_boxes(boxes, left, top), labels, detail)


def _crop_step(aug: SSDAugmentation, d: Draws, zoomed: AugmentStep, how: str) -> tuple[AugmentStep, np.ndarray]:
    """`augment`'s step 3: the min-IoU patch of the zoomed-out canvas; objects whose centre is inside are kept,
    clipped to it. `how` says where the minimum overlap came from. Also returns the kept boxes normalised to the
    patch, as training has them."""
    px1, py1, px2, py2 = d.patch
    pw, ph = px2 - px1, py2 - py1
    normalised, kept = crop_boxes(zoomed.boxes, zoomed.labels, d.patch, d.keep)
    n = len(zoomed.boxes)
    if n == 0:
        detail = "An image without objects is never cropped."
    elif d.crop_mode is None:
        detail = f"No crop ({how}): the whole canvas."
    else:
        want = "Any patch, no overlap constraint" if d.crop_mode == "any" else f"Minimum IoU {d.crop_mode:g}"
        if d.cropped:
            detail = (f"{want} ({how}): a {pw}×{ph} patch at ({px1}, {py1}); it keeps {len(kept)} of {n} "
                      f"object{'s' * (n != 1)} (those whose centre it contains).")
        else:
            detail = (f"{want} ({how}): none of the {aug.crop_trials} sampled patches was acceptable, so the whole "
                      "canvas is kept.")
    scale = np.array([pw, ph, pw, ph], np.float32)
    return AugmentStep("min-IoU crop", zoomed.image[py1:py2, px1:px2], normalised * scale, kept, detail), normalised
