"""SSD's data augmentation (paper §2.2 "Data augmentation", §3.6 "zoom out") one step at a time, with the
default boxes that match the ground truth after each step.

The steps come from training's own code (`ssd.augment.augment`; the only import of `train` outside it, see
docs/architecture.md). After each step, the picture as it is would be warped to the network's square input, so
its boxes are matched to the default boxes in coordinates normalised to that picture, exactly as the Matching
view does for a photo: after a zoom-out the objects are small and match the fine layers (conv4_3), after a crop
they are large and match the coarse ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

import ssd
from ssd.augment import CROP_CHOICES, AugmentStep, augment

from .draw import font, stack_vertical
from .matching import GroundTruth, count_per_layer, draw_matches, match_ground_truth

__all__ = ["CROP_CHOICES", "AugmentStep", "augmentation_steps", "draw_step", "match_step", "positives_by_step",
           "step_ground_truth", "step_title", "steps_markdown"]

STEP_SIDE = 480  # each step's picture is shown with this longer side


def augmentation_steps(image: Image.Image, gt: GroundTruth, cfg: ssd.SSDConfig, class_names: Sequence[str], *,
                       seed: int, min_iou="random", expand_ratio: float | None = None) -> list[AugmentStep]:
    """`ssd.augment.augment` for a photo and its ground truth, at `cfg`'s input size and with its mean
    colour (what training this config fills the zoomed-out canvas with). Labels are 1-based class ids."""
    if (image.width, image.height) != (gt.width, gt.height):
        raise ValueError(f"the ground truth is for a {gt.width}×{gt.height} image, the photo is "
                         f"{image.width}×{image.height}")
    boxes = np.array(gt.boxes, np.float32).reshape(-1, 4)
    labels = gt.class_ids(class_names).numpy()
    return augment(np.asarray(image.convert("RGB")), boxes, labels, seed=seed, min_iou=min_iou,
                   expand_ratio=expand_ratio, size=cfg.image_size, mean=cfg.pixel_mean)


def step_ground_truth(step: AugmentStep, class_names: Sequence[str]) -> GroundTruth:
    """The step's boxes and labels as ground truth of its picture."""
    h, w = step.image.shape[:2]
    return GroundTruth([class_names[int(k) - 1] for k in step.labels],
                       [tuple(float(v) for v in b) for b in step.boxes], w, h)


def match_step(cfg: ssd.SSDConfig, step: AugmentStep, class_names: Sequence[str],
               threshold: float | None = None) -> tuple[GroundTruth, ssd.MatchResult]:
    """(ground truth, `ssd.match` result) of the step's picture: the same matching as the Matching view."""
    gt = step_ground_truth(step, class_names)
    return gt, match_ground_truth(cfg, gt, class_names, threshold)


def step_title(index: int, step: AugmentStep, m: ssd.MatchResult) -> str:
    n = int(m.positives.sum())
    return f"{index} · {step.name}: {n} positive{'s' * (n != 1)}"


def _title_strip(text: str, width: int, size: int = 15) -> Image.Image:
    f = font(size)
    strip = Image.new("RGB", (width, size + 14), (32, 32, 32))
    ImageDraw.Draw(strip).text((8, 6), text, fill=(255, 255, 255), font=f)
    return strip


def draw_step(index: int, step: AugmentStep, cfg: ssd.SSDConfig, gt: GroundTruth, m: ssd.MatchResult, *,
              side: int = STEP_SIDE) -> Image.Image:
    """The step's picture scaled to `side` on its longer side, with its ground truth and matched default boxes
    (`visualize.matching.draw_matches`), a title strip above and the layer legend below."""
    image = Image.fromarray(step.image)
    s = side / max(image.size)
    display = image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), Image.BILINEAR)
    # The page shows three steps side by side, each at about half its size: text twice as large stays readable.
    text = max(13, round(side / 20))
    picture = draw_matches(display, cfg, m, gt, legend_size=text)
    return stack_vertical(_title_strip(step_title(index, step, m), picture.width, size=text), picture)


def positives_by_step(cfg: ssd.SSDConfig, steps: Sequence[AugmentStep],
                      matches: Sequence[ssd.MatchResult]) -> tuple[list[str], list[list]]:
    """(headers, rows): per source layer, its positives after each step; a last row with the totals."""
    headers = ["source layer", "feature map", *(f"{i} · {s.name}" for i, s in enumerate(steps))]
    counts = [count_per_layer(cfg, m.positives[0]) for m in matches]
    rows = [[name, f"{f}×{f}", *(c[k] for c in counts)]
            for k, (name, f) in enumerate(zip(cfg.source_layers, cfg.feature_maps))]
    rows.append(["total", "", *(int(m.positives.sum()) for m in matches)])
    return headers, rows


def steps_markdown(cfg: ssd.SSDConfig, steps: Sequence[AugmentStep], matches: Sequence[ssd.MatchResult]) -> str:
    """One line per step: what was drawn, the objects left and where their positives are."""
    lines = []
    for i, (step, m) in enumerate(zip(steps, matches)):
        per_layer = zip(cfg.source_layers, count_per_layer(cfg, m.positives[0]))
        where = ", ".join(f"{name} {n}" for name, n in per_layer if n) or "none"
        h, w = step.image.shape[:2]
        lines.append(f"{i}. **{step.name}** ({w}×{h}): {step.detail} → {len(step.labels)} object"
                     f"{'s' * (len(step.labels) != 1)}, **{int(m.positives.sum())}** positives ({where}).")
    return "\n".join(lines)
