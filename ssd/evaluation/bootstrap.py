"""Is one detector better than another on this val set, or only on these images? A paired bootstrap of the
difference in VOC mAP (Efron & Tibshirani, 1993): draw the val images with replacement, score both detectors on the
same draw, and read the spread of the differences.

Both detectors' mAP move together from one draw to the next (the same hard images weigh in both), so their
difference varies far less than either mAP: on VOC07 minival (500 images) the shipped weights' area mAP has a
bootstrap standard deviation near 1.9 points, the difference between two of its fine-tunes near 0.4. The interval
says how much the choice of images could move the difference; it says nothing of training noise (another seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .voc import evaluate_voc

__all__ = ["PairedBootstrap", "paired_bootstrap"]


@dataclass(frozen=True)
class PairedBootstrap:
    """mAP of B minus mAP of A (area and 11-point, fractions) on all images, and over `resamples` draws of the
    images: standard deviation, the 5th and 95th percentiles (a 90 % interval) and the share of draws where B is
    ahead."""

    difference_area: float
    difference_11pt: float
    resamples: int
    sd_area: float
    low_area: float
    high_area: float
    b_ahead: float

    def summary(self) -> str:
        return (f"B - A: area mAP {100 * self.difference_area:+.2f} (90 % of {self.resamples} image resamples "
                f"within [{100 * self.low_area:+.2f}, {100 * self.high_area:+.2f}], sd {100 * self.sd_area:.2f}; "
                f"B ahead in {100 * self.b_ahead:.0f} %), 11-point {100 * self.difference_11pt:+.2f}")


def paired_bootstrap(detections_a, detections_b, ground_truths, num_classes: int, resamples: int = 200,
                     seed: int = 0, iou_threshold: float = 0.5) -> PairedBootstrap:
    """Detections of A and B on the same images (per image, as `evaluate_voc` takes them) and their ground truth:
    the difference B - A of VOC mAP and its paired bootstrap over `resamples` draws of the images (seeded)."""
    n = len(ground_truths)
    if not (len(detections_a) == len(detections_b) == n) or n == 0:
        raise ValueError(f"both detectors need detections for the same {n} images "
                         f"(got {len(detections_a)} and {len(detections_b)})")

    def score(dets, gts):
        r = evaluate_voc(dets, gts, num_classes, iou_threshold)
        return r.map_area, r.map_11pt

    (a_area, a_11), (b_area, b_11) = score(detections_a, ground_truths), score(detections_b, ground_truths)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        draw = rng.integers(0, n, n)
        gts = [ground_truths[i] for i in draw]
        diffs.append(score([detections_b[i] for i in draw], gts)[0] - score([detections_a[i] for i in draw], gts)[0])
    # A draw without any object of some class leaves that class out of both means alike (AP nan), so the
    # differences stay paired.
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        nan = float("nan")
        return PairedBootstrap(b_area - a_area, b_11 - a_11, 0, nan, nan, nan, nan)
    return PairedBootstrap(b_area - a_area, b_11 - a_11, len(d), float(d.std()), float(np.percentile(d, 5)),
                           float(np.percentile(d, 95)), float(np.mean(d > 0)))
