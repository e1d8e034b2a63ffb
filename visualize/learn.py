"""Pictures of a network learning one photo (`ssd.learn`), for the app's Learn tab: the matched default boxes
coloured by the probability the network gives their object's class, the boxes it now predicts from them, the hard
negatives' probability of background, and the loss and those probabilities step by step.

Colours here mean one thing: how right the network is. A positive is coloured by p(its object's class), a hard
negative by p(background); red is 0, yellow ½, green 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_convert

import ssd
from ssd.learn import LearnStep, Probe

from .draw import GT_COLOUR, draw_box, legend_strip, line_width_for, stack_vertical
from .examples import example_annotations
from .matching import GroundTruth, parse_ground_truth

# Red, yellow, green: p = 0, ½, 1.
_STOPS = ((0.0, (215, 48, 39)), (0.5, (255, 230, 0)), (1.0, (26, 200, 80)))
MAX_CLASS_NAME = 30


# A class the shipped model never saw, on an example photo: its box drawn by eye on the original pixels, tight
# around the cup and its handle (scikit-image's coffee, 600×400). The Learn tab starts on it.
NEW_CLASS_EXAMPLES: dict[str, tuple[tuple[str, tuple[int, int, int, int]], ...]] = {
    "coffee": (("mug", (172, 18, 410, 302)),),
}


def learning_rows(name: str) -> list[list]:
    """Ground-truth rows [class, x1, y1, x2, y2] of an example photo for the Learn tab: its hand-made ground
    truth (`visualize.examples`), then any new class drawn on it (`NEW_CLASS_EXAMPLES`)."""
    objects = [*example_annotations(name), *NEW_CLASS_EXAMPLES.get(name, ())]
    return [[label, *box] for label, box in objects]


def probability_colour(p: float) -> tuple[int, int, int]:
    """Red (0) through yellow (½) to green (1)."""
    p = min(max(float(p), 0.0), 1.0) if math.isfinite(float(p)) else 0.0
    for (a, ca), (b, cb) in zip(_STOPS, _STOPS[1:]):
        if p <= b:
            t = (p - a) / (b - a)
            return tuple(round(x + (y - x) * t) for x, y in zip(ca, cb))
    return _STOPS[-1][1]


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a new class (None: it can)."""
    if not name:
        return "a class needs a name"
    if len(name) > MAX_CLASS_NAME:
        return f"class names have at most {MAX_CLASS_NAME} characters"
    if not name.isprintable():
        return "a class name is printable text"
    if name.lower() == "background":
        return "'background' is class 0 of every SSD, not a class to teach"
    return None


def parse_learning_rows(rows, class_names: Sequence[str], width: int, height: int, max_rows: int | None = None,
                        max_new: int = 3) -> tuple[GroundTruth, list[str], list[str]]:
    """Table rows [class, x1, y1, x2, y2] (pixels) -> (GroundTruth, the new classes, problems). A class the model
    does not know is a new class to learn (at most `max_new`, in the order they first appear); bad rows are
    skipped and reported, as `visualize.matching.parse_ground_truth` does."""
    known = list(class_names)
    new, problems = [], []
    for i, row in enumerate(list(rows or [])[:max_rows]):
        if not isinstance(row, list | tuple) or not row or all(v in (None, "") for v in row):
            continue
        name = str(row[0] if row[0] is not None else "").strip()
        if name in known or name in new:
            continue
        problem = class_name_problem(name)
        if problem is None and len(new) >= max_new:
            problem = f"at most {max_new} new classes per run"
        if problem:
            problems.append(f"row {i + 1}: {problem}")
        else:
            new.append(name)
    gt, more = parse_ground_truth(rows, known + new, width, height, max_rows=max_rows)
    # A row already reported above is not reported twice (parse_ground_truth calls its class unknown).
    reported = {p.split(":")[0] for p in problems}
    problems += [p for p in more if p.split(":")[0] not in reported]
    used = [n for n in new if n in gt.labels]
    return gt, used, problems


def _pixels(boxes: torch.Tensor, width: int, height: int) -> list[list[float]]:
    return (boxes.reshape(-1, 4).float() * torch.tensor([width, height, width, height])).tolist()


def _draw_ground_truth(draw, gt: GroundTruth, size: tuple[int, int], lw: int):
    W, H = size
    sx, sy = W / gt.width, H / gt.height
    for label, (x1, y1, x2, y2) in zip(gt.labels, gt.boxes):
        draw_box(draw, (x1 * sx, y1 * sy, x2 * sx, y2 * sy), GT_COLOUR, lw + 1, label, max(11, round(min(W, H) / 40)))


def _ramp(extra: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> list:
    return [*extra, *((f"p = {p:g}", probability_colour(p)) for p in (0, 0.25, 0.5, 0.75, 1))]


def draw_ground_truth(image: Image.Image, gt: GroundTruth, new_classes: Sequence[str] = ()) -> Image.Image:
    """The photo with its ground truth (white, named), a new class's name marked "new"."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    shown = GroundTruth([f"{label} (new)" if label in new_classes else label for label in gt.labels], gt.boxes,
                        gt.width, gt.height)
    _draw_ground_truth(draw, shown, out.size, line_width_for(out))
    return out


def draw_probabilities(image: Image.Image, cfg: ssd.SSDConfig, probe: Probe, gt: GroundTruth) -> Image.Image:
    """The positives' default boxes, each coloured by the probability the network gives its object's class, and
    a dot at the centre of each hard negative coloured by its probability of background; the ground truth in
    white. Worst first, so the boxes still wrong are not hidden under the right ones."""
    out = image.convert("RGB").copy()
    W, H = out.size
    draw = ImageDraw.Draw(out)
    lw = line_width_for(out)
    priors = box_convert(ssd.default_boxes(cfg), "cxcywh", "xyxy")
    r = max(3, lw + 1)
    for (x1, y1, x2, y2), p in sorted(zip(_pixels(priors[probe.negatives], W, H), probe.background.tolist()),
                                      key=lambda t: -t[1]):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=probability_colour(p), outline=(0, 0, 0))
    for box, p in sorted(zip(_pixels(priors[probe.positives], W, H), probe.probability.tolist()),
                         key=lambda t: -t[1]):
        draw_box(draw, box, probability_colour(p), max(2, lw))
    _draw_ground_truth(draw, gt, out.size, lw)
    items = [(f"{label}: {n} positive{'s' * (n != 1)}, mean p({label}) {p:.2f}", probability_colour(p))
             for label, n, p in per_object(probe, gt.labels)]
    items.append((f"dots: {len(probe.negatives)} hard negatives, mean p(background) {probe.mean_background:.2f}",
                  probability_colour(probe.mean_background)))
    return stack_vertical(out, legend_strip(_ramp(items), W))


def per_object(probe: Probe, labels: Sequence[str]) -> list[tuple[str, int, float]]:
    """(class, positives, their mean probability of it) for each ground-truth object that has positives."""
    out = []
    for i, label in enumerate(labels):
        mine = probe.probability[probe.objects == i]
        if mine.numel():
            out.append((label, int(mine.numel()), float(mine.mean())))
    return out


def draw_predicted_boxes(image: Image.Image, probe: Probe, gt: GroundTruth) -> Image.Image:
    """Where the network now puts each positive (its default box moved by the predicted offsets, decoded),
    coloured by p(its object's class) as in `draw_probabilities`; the ground truth in white. As the offsets
    train, the boxes close in on the ground truth."""
    out = image.convert("RGB").copy()
    W, H = out.size
    draw = ImageDraw.Draw(out)
    lw = line_width_for(out)
    _draw_ground_truth(draw, gt, out.size, lw)
    for box, p in sorted(zip(_pixels(probe.boxes, W, H), probe.probability.tolist()), key=lambda t: -t[1]):
        draw_box(draw, box, probability_colour(p), max(1, lw // 2))
    items = [(f"{len(probe.positives)} positives, decoded: where the network puts them", (90, 90, 90))]
    return stack_vertical(out, legend_strip(_ramp(items), W))


def plot_learning(history: Sequence[LearnStep], steps: int, *, width_px: int = 900, dpi: int = 100) -> Image.Image:
    """Two panels over the steps 1..`steps`: the MultiBox loss and its two terms (localisation, confidence); the
    mean probability of the positives' class and the hard negatives' mean probability of background."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from .plots import figure_to_image

    fig = Figure(figsize=(width_px / dpi, 3.0), dpi=dpi, layout="constrained")
    left, right = fig.subplots(1, 2)
    x = np.array([s.step for s in history])
    for key, label, style in (("loss", "loss = loc + conf", "-"), ("loc", "localisation (smooth L1)", "--"),
                              ("conf", "confidence (cross-entropy)", ":")):
        left.plot(x, [getattr(s, key) for s in history], style, label=label, linewidth=2)
    left.set_xlim(0.5, steps + 0.5)
    left.set_ylim(bottom=0)
    left.set_xlabel("step")
    left.set_title("MultiBox loss of the augmented views", fontsize=10)
    left.legend(fontsize=8, loc="upper right")
    right.plot(x, [s.positive_probability for s in history], "-", color="#1a9850", linewidth=2,
               label="positives: mean p(their class)")
    right.plot(x, [s.hard_negative_background for s in history], "--", color="#4575b4", linewidth=2,
               label="hard negatives: mean p(background)")
    right.set_xlim(0.5, steps + 0.5)
    right.set_ylim(0, 1.02)
    right.set_xlabel("step")
    right.set_title("On the photo itself", fontsize=10)
    right.legend(fontsize=8, loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure_to_image(fig)


def progress_markdown(history: Sequence[LearnStep], steps: int, class_names: Sequence[str],
                      new_classes: Sequence[str]) -> str:
    """One line about where the run is."""
    if not history:
        return "Starting…"
    s = history[-1]
    new = f" New class{'es' * (len(new_classes) > 1)}: **{', '.join(new_classes)}**." if new_classes else ""
    return (f"Step **{s.step}/{steps}** · loss **{s.loss:.3f}** (localisation {s.loc:.3f} + confidence "
            f"{s.conf:.3f}; step 1: {history[0].loss:.3f}) · positives' mean p(class) **{s.positive_probability:.2f}**"
            f" · hard negatives' mean p(background) **{s.hard_negative_background:.2f}** · lr {s.lr:.4f} · "
            f"{s.seconds:.1f} s.{new}")
