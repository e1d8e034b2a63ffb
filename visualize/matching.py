"""Matching default boxes to ground truth (paper §2.2) and the hard negatives of the loss (§2.2, "Hard negative
mining"), drawn on the user's image.

Ground truth comes in as pixel boxes (x1, y1, x2, y2) of the image; the library works in normalised
coordinates, so the conversion happens here, at the edge. Default boxes are fractions of the (warped, square)
network input, so on a non-square photo a ratio-1 default box looks as stretched as the photo does to the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_convert, box_iou

import ssd

from .draw import (
    FORCED_SWATCH,
    GT_COLOUR,
    NEGATIVE_COLOUR,
    draw_box,
    layer_colour,
    legend_strip,
    line_width_for,
    stack_vertical,
)


@dataclass
class GroundTruth:
    """Ground truth of one image: VOC-style class names and pixel boxes, with the image size."""

    labels: list[str]
    boxes: list[tuple[float, float, float, float]]
    width: int
    height: int

    def __post_init__(self):
        if len(self.labels) != len(self.boxes):
            raise ValueError(f"{len(self.labels)} labels for {len(self.boxes)} boxes")

    def normalised(self) -> torch.Tensor:
        """(M, 4) xyxy in [0, 1]."""
        if not self.boxes:
            return torch.zeros(0, 4)
        b = torch.tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        return b / torch.tensor([self.width, self.height, self.width, self.height], dtype=torch.float32)

    def class_ids(self, class_names: Sequence[str]) -> torch.Tensor:
        """(M,) 1-based class indices; an unknown name is an error that lists the known ones."""
        ids = []
        for name in self.labels:
            if name not in class_names:
                raise ValueError(f"unknown class {name!r}; known classes: {', '.join(class_names)}")
            ids.append(list(class_names).index(name) + 1)
        return torch.tensor(ids, dtype=torch.long)


def parse_ground_truth(rows, class_names: Sequence[str], width: int, height: int, max_rows: int | None = None
                       ) -> tuple[GroundTruth, list[str]]:
    """Table rows [class, x1, y1, x2, y2] (pixels of a width x height image) -> (GroundTruth, problems). Boxes are
    clipped to the image; bad rows (an unknown class, a coordinate that is not a finite number, no area) are
    skipped and reported, never raised. `max_rows`: only the first rows are read, the rest reported."""
    labels, boxes, problems = [], [], []
    W, H = width, height
    rows = list(rows or [])
    if max_rows is not None and len(rows) > max_rows:
        problems.append(f"only the first {max_rows} rows are used ({len(rows)} were given)")
        rows = rows[:max_rows]
    for i, row in enumerate(rows):
        if row is None or not isinstance(row, list | tuple) or all(v in (None, "") for v in row):
            continue
        row = list(row[:5]) + [None] * (5 - len(row[:5]))
        name = str(row[0] or "").strip()
        if name not in class_names:
            shown = name if len(name) <= 30 else name[:30] + "…"
            problems.append(f"row {i + 1}: unknown class {shown!r} (use one of: {', '.join(class_names)})")
            continue
        try:
            x1, y1, x2, y2 = (float(v) for v in row[1:5])
        except (TypeError, ValueError):
            x1 = y1 = x2 = y2 = math.nan
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            problems.append(f"row {i + 1}: x1, y1, x2, y2 must be finite numbers (pixels), got "
                            f"{[str(v)[:12] for v in row[1:5]]}")
            continue
        x1, x2 = sorted((min(max(x1, 0), W), min(max(x2, 0), W)))
        y1, y2 = sorted((min(max(y1, 0), H), min(max(y2, 0), H)))
        if x2 - x1 < 1 or y2 - y1 < 1:
            problems.append(f"row {i + 1}: the box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) has no area inside "
                            f"the {W}×{H} image")
            continue
        labels.append(name)
        boxes.append((x1, y1, x2, y2))
    return GroundTruth(labels, boxes, W, H), problems


def match_ground_truth(cfg: ssd.SSDConfig, gt: GroundTruth, class_names: Sequence[str],
                       threshold: float | None = None) -> ssd.MatchResult:
    """`ssd.match` for one image (batch of 1) at `threshold` (default: the config's 0.5)."""
    priors = ssd.default_boxes(cfg)
    thr = cfg.match_threshold if threshold is None else float(threshold)
    return ssd.match([gt.normalised()], [gt.class_ids(class_names)], priors, thr)


POSITIVES_HEADERS = ("source layer", "feature map", "default boxes", "positives", "forced best prior")


def count_per_layer(cfg: ssd.SSDConfig, mask: torch.Tensor) -> list[int]:
    """How many of the default boxes in `mask` ((N,) bool) each source layer has, in layer order."""
    layer = ssd.prior_layout(cfg).layer
    return torch.bincount(layer[mask.to(layer.device)], minlength=len(cfg.feature_maps)).tolist()


def positives_per_layer(cfg: ssd.SSDConfig, m: ssd.MatchResult) -> tuple[list[str], list[list]]:
    """(headers, rows): per source layer, its default boxes, positives, forced (best-prior) positives."""
    pos, forced = m.positives[0], m.forced[0]
    columns = [count_per_layer(cfg, torch.ones_like(pos)), count_per_layer(cfg, pos), count_per_layer(cfg, forced)]
    rows = [[name, f"{f}×{f}", *(c[k] for c in columns)]
            for k, (name, f) in enumerate(zip(cfg.source_layers, cfg.feature_maps))]
    rows.append(["total", "", *(sum(c) for c in columns)])
    return list(POSITIVES_HEADERS), rows


def _prior_pixels(cfg: ssd.SSDConfig, indices, width: float, height: float) -> list[list[float]]:
    boxes = box_convert(ssd.default_boxes(cfg)[indices].reshape(-1, 4), "cxcywh", "xyxy")
    return (boxes * torch.tensor([width, height, width, height])).tolist()


def draw_matches(
    image: Image.Image,
    cfg: ssd.SSDConfig,
    m: ssd.MatchResult,
    gt: GroundTruth,
    *,
    negatives: torch.Tensor | None = None,
    show_positives: bool = True,
    legend_size: int = 13,
) -> Image.Image:
    """Ground truth (white), matched positives coloured by source layer, each GT's forced best prior (thick,
    dashed) and, if given, the hard negatives (N,) bool mask (a dot at each one's centre, in a colour of its own).
    `image` may be a resized copy of the one `gt` describes; boxes are scaled to it. A legend strip goes
    underneath (`legend_size`: its text height in pixels, larger for pictures shown small)."""
    out = image.convert("RGB").copy()
    W, H = out.size
    sx, sy = W / gt.width, H / gt.height
    layout = ssd.prior_layout(cfg)
    draw = ImageDraw.Draw(out)
    lw = line_width_for(out)
    items = []
    if negatives is not None:
        # A dot at each hard negative's centre: their 3 per positive boxes, drawn whole, hid the picture. The
        # Matching tab lists each with its box and loss.
        neg = negatives.reshape(-1).nonzero().flatten()
        r = max(3, lw + 2)
        for x1, y1, x2, y2 in _prior_pixels(cfg, neg, W, H):
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=NEGATIVE_COLOUR, outline=(0, 0, 0))
        items.append((f"hard negatives ({len(neg)}): their centres", NEGATIVE_COLOUR))
    pos = m.positives[0]
    if show_positives:
        # Coarse layers first, so the many small conv4_3 boxes stay visible on top.
        for k in reversed(range(len(cfg.source_layers))):
            idx = (pos & (layout.layer == k) & ~m.forced[0]).nonzero().flatten()
            for box in _prior_pixels(cfg, idx, W, H):
                draw_box(draw, box, layer_colour(k), max(1, lw // 2))
        for k, name in enumerate(cfg.source_layers):
            n = int((pos & (layout.layer == k)).sum())
            if n:
                items.append((f"{name} ({n})", layer_colour(k)))
    for i, (label, box) in enumerate(zip(gt.labels, gt.boxes)):
        x1, y1, x2, y2 = box
        draw_box(draw, (x1 * sx, y1 * sy, x2 * sx, y2 * sy), GT_COLOUR, lw + 1, f"GT {i}: {label}",
                 max(11, round(min(W, H) / 40), round(legend_size * 0.8)))
    forced = m.forced[0].nonzero().flatten()
    for index in forced.tolist():
        k = int(layout.layer[index])
        (box,) = _prior_pixels(cfg, [index], W, H)
        draw_box(draw, box, layer_colour(k), lw + 2, dashed=True)
    if len(forced):
        items.append(("thick dashed: forced best prior", FORCED_SWATCH))
    items.append(("GT (white)", GT_COLOUR))
    return stack_vertical(out, legend_strip(items, W, text_size=legend_size))


def iou_with_priors(cfg: ssd.SSDConfig, box_xyxy: torch.Tensor) -> torch.Tensor:
    """(N,) IoU of one normalised xyxy box with every default box (torchvision's box_iou)."""
    priors = box_convert(ssd.default_boxes(cfg), "cxcywh", "xyxy")
    return box_iou(box_xyxy.reshape(1, 4).float(), priors)[0]


def iou_heatmaps(cfg: ssd.SSDConfig, box_xyxy: torch.Tensor, threshold: float | None = None,
                 title: str = "", width_px: int = 1100) -> Image.Image:
    """One heat map per feature map: each cell shows the best IoU of its default boxes with `box_xyxy`
    (normalised xyxy, drawn as a white outline). Cells with a default box at or above `threshold` (default: the
    config's `match_threshold`, as `match_ground_truth`) are outlined green; the overall best default box (the
    forced match) is marked with a star."""
    threshold = cfg.match_threshold if threshold is None else float(threshold)
    from matplotlib.figure import Figure

    from .plots import figure_to_image

    layout = ssd.prior_layout(cfg)
    iou = iou_with_priors(cfg, box_xyxy)
    best = int(iou.argmax())
    n = len(cfg.feature_maps)
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, width_px / dpi / n * 1.45 + 0.3), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    x1, y1, x2, y2 = (float(v) for v in box_xyxy.reshape(4))
    image = None
    for k, ax in enumerate(axes):
        f, b = cfg.feature_maps[k], cfg.boxes_per_cell[k]
        start, end = layout.layer_offsets[k], layout.layer_offsets[k + 1]
        cell = iou[start:end].reshape(f, f, b).max(dim=2).values.numpy()
        image = ax.imshow(cell, vmin=0, vmax=1, cmap="magma", extent=(0, f, f, 0), interpolation="nearest")
        for i, j in np.argwhere(cell >= threshold):
            ax.add_patch(_rect(j + 0.06, i + 0.06, 0.88, 0.88, "#35c759", 1.5))
        ax.add_patch(_rect(x1 * f, y1 * f, (x2 - x1) * f, (y2 - y1) * f, "white", 1.0, "--"))
        if int(layout.layer[best]) == k:
            ax.plot(int(layout.col[best]) + 0.5, int(layout.row[best]) + 0.5, marker="*", color="#00e5ff",
                    markersize=13, markeredgecolor="black")
        ax.set_xlim(0, f)
        ax.set_ylim(f, 0)
        ax.set_title(f"{cfg.source_layers[k]} {f}×{f}\nmax IoU {cell.max():.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"IoU of the ground truth (dashed) with every default box, best per cell.  "
                 f"Green: IoU ≥ {threshold:.2f}.  ★ best default box (IoU {float(iou[best]):.2f})", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.7, label="IoU", pad=0.01)
    return figure_to_image(fig)


def _rect(x, y, w, h, colour, linewidth, linestyle="-"):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=linewidth, linestyle=linestyle)


def hard_negatives_from_scores(cfg: ssd.SSDConfig, background: torch.Tensor, m: ssd.MatchResult) -> torch.Tensor:
    """(N,) bool: the negatives the MultiBox loss would keep given the model's background probabilities
    (1, N) — the highest background cross-entropy -log p(background), `cfg.neg_pos_ratio` per positive
    (`ssd.hard_negatives`)."""
    loss = -background.detach().float().cpu().clamp_min(1e-30).log()
    return ssd.hard_negatives(loss, m.positives.cpu(), cfg.neg_pos_ratio)[0]


def positive_choices(cfg: ssd.SSDConfig, m: ssd.MatchResult) -> list[tuple[str, int]]:
    """(description, default-box index) of each positive, forced matches first, then by IoU."""
    layout = ssd.prior_layout(cfg)
    idx = m.positives[0].nonzero().flatten().tolist()
    idx.sort(key=lambda i: (not bool(m.forced[0, i]), -float(m.iou[0, i])))
    out = []
    for i in idx:
        d = layout.describe(i)
        tag = " forced" if bool(m.forced[0, i]) else ""
        out.append((f"#{i} GT {int(m.matched_gt[0, i])} · {d['layer']} cell ({d['row']}, {d['col']}) shape "
                    f"{d['shape']} · IoU {float(m.iou[0, i]):.2f}{tag}", i))
    return out


def offsets_example(cfg: ssd.SSDConfig, m: ssd.MatchResult, index: int) -> dict:
    """Eq. (2) for one positive: its default box d, matched ground truth g, the encoded offsets (with the
    variances) and `ssd.decode` of those offsets, which gives g back."""
    if not bool(m.positives[0, index]):
        raise ValueError(f"default box {index} is not a positive (it is background)")
    v = cfg.variances
    d = ssd.default_boxes(cfg)[index]
    g_xyxy = m.boxes[0, index].cpu()
    g = box_convert(g_xyxy[None], "xyxy", "cxcywh")[0]
    enc = ssd.encode(g_xyxy[None], d[None], v)[0]
    dec = ssd.decode(enc[None], d[None], v)[0]
    hand = [(g[0] - d[0]) / (v[0] * d[2]), (g[1] - d[1]) / (v[0] * d[3]),
            math.log(float(g[2] / d[2])) / v[1], math.log(float(g[3] / d[3])) / v[1]]
    return {
        "index": int(index),
        "default_box_cxcywh": [float(x) for x in d],
        "ground_truth_cxcywh": [float(x) for x in g],
        "ground_truth_xyxy": [float(x) for x in g_xyxy],
        "variances": list(v),
        "offsets": [float(x) for x in enc],
        "offsets_by_hand": [float(x) for x in hand],
        "decoded_xyxy": [float(x) for x in dec],
        "roundtrip_error": float((dec - g_xyxy).abs().max()),
    }


def offsets_markdown(cfg: ssd.SSDConfig, m: ssd.MatchResult, index: int) -> str:
    """The encoding of one positive, worked through with its numbers (Markdown)."""
    e = offsets_example(cfg, m, index)
    layout = ssd.prior_layout(cfg)
    d_info = layout.describe(index)
    dcx, dcy, dw, dh = e["default_box_cxcywh"]
    gcx, gcy, gw, gh = e["ground_truth_cxcywh"]
    v0, v1 = e["variances"]
    # Rounded before printing, so that a tiny negative offset reads 0.000, not −0.000.
    tx, ty, tw, th = (round(t, 3) + 0.0 for t in e["offsets"])
    x1, y1, x2, y2 = e["decoded_xyxy"]
    return (
        f"**Default box #{index}** — {d_info['layer']} ({d_info['feature_map']}×{d_info['feature_map']}), "
        f"cell ({d_info['row']}, {d_info['col']}), shape {d_info['shape']}; matched to GT "
        f"{int(m.matched_gt[0, index])} (IoU {float(m.iou[0, index]):.3f}).\n\n"
        f"| | cx | cy | w | h |\n|---|---|---|---|---|\n"
        f"| default box d | {dcx:.4f} | {dcy:.4f} | {dw:.4f} | {dh:.4f} |\n"
        f"| ground truth g | {gcx:.4f} | {gcy:.4f} | {gw:.4f} | {gh:.4f} |\n\n"
        f"Encoded offsets (eq. 2, variances {v0} for the centre and {v1} for the size):\n\n"
        f"- t_cx = (g_cx − d_cx) / ({v0}·d_w) = ({gcx:.4f} − {dcx:.4f}) / ({v0}·{dw:.4f}) = **{tx:.3f}**\n"
        f"- t_cy = (g_cy − d_cy) / ({v0}·d_h) = ({gcy:.4f} − {dcy:.4f}) / ({v0}·{dh:.4f}) = **{ty:.3f}**\n"
        f"- t_w = log(g_w / d_w) / {v1} = log({gw:.4f} / {dw:.4f}) / {v1} = **{tw:.3f}**\n"
        f"- t_h = log(g_h / d_h) / {v1} = log({gh:.4f} / {dh:.4f}) / {v1} = **{th:.3f}**\n\n"
        f"Decoding these offsets from d gives (x1, y1, x2, y2) = ({x1:.4f}, {y1:.4f}, {x2:.4f}, {y2:.4f}), "
        f"the ground truth again (largest difference {e['roundtrip_error']:.1e})."
    )


def draw_offsets(image: Image.Image, cfg: ssd.SSDConfig, m: ssd.MatchResult, gt: GroundTruth,
                 index: int) -> Image.Image:
    """One positive on the image: its default box (dashed, layer colour), the ground truth (white) and the box
    decoded from the encoded offsets (thin yellow, on top of the ground truth)."""
    e = offsets_example(cfg, m, index)
    out = image.convert("RGB").copy()
    W, H = out.size
    draw = ImageDraw.Draw(out)
    lw = line_width_for(out)
    scale = [W, H, W, H]
    k = int(ssd.prior_layout(cfg).layer[index])
    (prior,) = _prior_pixels(cfg, [index], W, H)
    draw_box(draw, [a * s for a, s in zip(e["ground_truth_xyxy"], scale)], (255, 255, 255), lw + 2)
    draw_box(draw, prior, layer_colour(k), lw + 1, dashed=True)
    draw_box(draw, [a * s for a, s in zip(e["decoded_xyxy"], scale)], (255, 230, 0), max(1, lw // 2))
    dcx, dcy = e["default_box_cxcywh"][:2]
    gcx, gcy = e["ground_truth_cxcywh"][:2]
    draw.line([(dcx * W, dcy * H), (gcx * W, gcy * H)], fill=(255, 230, 0), width=max(1, lw // 2))
    items = [(f"default box #{index} ({cfg.source_layers[k]})", layer_colour(k)), ("ground truth", (255, 255, 255)),
             ("decode(encode(g))", (255, 230, 0))]
    return stack_vertical(out, legend_strip(items, W))
