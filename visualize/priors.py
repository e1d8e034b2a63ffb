"""Default boxes (paper §2.2): per feature map, per cell, per scale and aspect ratio.

SSD warps every input to a square (300×300 for SSD300) and default boxes are fractions of that square, so these
pictures show the image as the network sees it: warped to a square canvas. With `canvas_size=cfg.image_size`
one canvas pixel is one input pixel and the boxes have exactly the paper's sizes (30 px on conv4_3 …).
"""

from __future__ import annotations

from collections.abc import Iterable

from PIL import Image, ImageDraw

import ssd

from .draw import draw_box, font, legend_strip, shape_colour, stack_vertical

# How the views tell the two ratio-1 shapes apart (the shape names themselves come from ssd.priors).
# Pillow's bundled font has no "×", "′" or subscripts, so picture text sticks to ASCII; the page may use them.
PICTURE_SHAPE_LABELS = {"1'": "1' (s'k)"}
PAGE_SHAPE_LABELS = {"1": "1 (sₖ)", "1'": "1′ (extra box at s′ₖ = √(sₖ·sₖ₊₁))"}


# The side of the square picture `draw_cell_default_boxes` draws by default (the legend goes below it).
CANVAS_SIZE = 600


def shape_choices(cfg: ssd.SSDConfig) -> list[tuple[str, str]]:
    """(label, shape name) of every default-box shape some layer of `cfg` has, in the layout's order."""
    layout = ssd.prior_layout(cfg)
    names = dict.fromkeys(n for k in range(len(cfg.feature_maps)) for n in layout.shape_names(k))
    return [(PAGE_SHAPE_LABELS.get(n, n), n) for n in names]


def layer_label(cfg: ssd.SSDConfig, layer: int) -> str:
    f = cfg.feature_maps[layer]
    return f"{cfg.source_layers[layer]} · {f}×{f}"


def feature_map_choices(cfg: ssd.SSDConfig) -> list[str]:
    """'conv4_3 · 38×38', 'fc7 · 19×19', … — one per source layer."""
    return [layer_label(cfg, k) for k in range(len(cfg.feature_maps))]


def cell_default_boxes(cfg: ssd.SSDConfig, layer: int, row: int, col: int) -> list[dict]:
    """The 4 or 6 default boxes of one cell: index, shape name, normalised cx, cy, w, h and size in input pixels."""
    layout = ssd.prior_layout(cfg)
    names = layout.shape_names(layer)
    out = []
    for s, index in enumerate(layout.cell_indices(layer, row, col)):
        cx, cy, w, h = (float(v) for v in layout.boxes[index])
        out.append({
            "index": index, "shape": names[s], "shape_index": s, "cx": cx, "cy": cy, "w": w, "h": h,
            "w_px": w * cfg.image_size, "h_px": h * cfg.image_size,
        })
    return out


def cell_at(cfg: ssd.SSDConfig, layer: int, x: float, y: float, width: float, height: float) -> tuple[int, int]:
    """The (row, col) of the feature-map cell under pixel (x, y) of a `width`×`height` picture of the input."""
    f = cfg.feature_maps[layer]
    col = min(f - 1, max(0, int(x / width * f)))
    row = min(f - 1, max(0, int(y / height * f)))
    return row, col


def draw_cell_default_boxes(
    image: Image.Image,
    cfg: ssd.SSDConfig,
    layer: int,
    row: int,
    col: int,
    shapes: Iterable[str] | None = None,
    *,
    show_grid: bool = True,
    highlight_cell: bool = True,
    legend: bool = True,
    canvas_size: int = CANVAS_SIZE,
    dim: float = 0.35,
) -> Image.Image:
    """`image` warped to a `canvas_size` square with the default boxes of cell (row, col) of source `layer`.

    shapes: which of the cell's shapes to draw, by name ('1', "1'", '2', '1/2', '3', '1/3'); None draws all.
    show_grid: a dot at every cell centre of the layer; highlight_cell: outline the chosen cell.
    legend: a strip under the canvas naming each drawn shape and its size in input pixels.
    dim: how much the photo is darkened so the boxes stand out (0 keeps it as is).
    """
    f = cfg.feature_maps[layer]
    if not (0 <= row < f and 0 <= col < f):
        raise IndexError(f"{layer_label(cfg, layer)} has cells (0..{f - 1}, 0..{f - 1}); got ({row}, {col})")
    C = canvas_size
    canvas = image.convert("RGB").resize((C, C), Image.BILINEAR)
    if dim > 0:
        canvas = Image.blend(canvas, Image.new("RGB", canvas.size, (0, 0, 0)), dim)
    draw = ImageDraw.Draw(canvas)
    if show_grid:
        r = max(1, round(C / f / 10))
        for i in range(f):
            for j in range(f):
                x, y = (j + 0.5) * C / f, (i + 0.5) * C / f
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(200, 200, 200))
    if highlight_cell:
        draw.rectangle([col * C / f, row * C / f, (col + 1) * C / f, (row + 1) * C / f], outline=(255, 255, 0),
                       width=max(1, round(C / 300)))
    wanted = None if shapes is None else set(shapes)
    width = max(2, round(C / 250))
    items = []
    for b in cell_default_boxes(cfg, layer, row, col):
        if wanted is not None and b["shape"] not in wanted:
            continue
        box = [(b["cx"] - b["w"] / 2) * C, (b["cy"] - b["h"] / 2) * C, (b["cx"] + b["w"] / 2) * C,
               (b["cy"] + b["h"] / 2) * C]
        # PIL's rectangle includes both end pixels; shrink by one so a w-pixel box covers exactly w pixels.
        box[2] -= 1
        box[3] -= 1
        colour = shape_colour(b["shape_index"])
        draw_box(draw, box, colour, width)
        name = PICTURE_SHAPE_LABELS.get(b["shape"], b["shape"])
        items.append((f"{name}: {b['w_px']:.0f}x{b['h_px']:.0f} px", colour))
    if highlight_cell:
        cx, cy = (col + 0.5) * C / f, (row + 0.5) * C / f
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(255, 255, 0))
    if not legend:
        return canvas
    f_ = cfg.feature_maps[layer]
    title = (f"{cfg.name.split('_')[0]} {cfg.source_layers[layer]} ({f_}x{f_}), cell ({row}, {col}): sizes in "
             f"{cfg.image_size}x{cfg.image_size} input pixels")
    head = Image.new("RGB", (C, 22), (32, 32, 32))
    ImageDraw.Draw(head).text((8, 4), title, fill=(235, 235, 235), font=font(13))
    strip = legend_strip(items or [("no shape selected", (90, 90, 90))], C)
    return stack_vertical(canvas, stack_vertical(head, strip))


def layer_summary(cfg: ssd.SSDConfig) -> tuple[list[str], list[list]]:
    """(headers, rows): one row per source layer with its default boxes, and a total row (8732 for SSD300)."""
    layout = ssd.prior_layout(cfg)
    headers = ["source layer", "feature map", "boxes per cell", "shapes", "s_k (px)", "s′_k (px)", "step (px)",
               "default boxes"]
    rows = []
    for k, name in enumerate(cfg.source_layers):
        f = cfg.feature_maps[k]
        count = int((layout.layer == k).sum())
        s_prime = (cfg.min_sizes[k] * cfg.max_sizes[k]) ** 0.5
        rows.append([name, f"{f}×{f}", cfg.boxes_per_cell[k], ", ".join(layout.shape_names(k)),
                     round(cfg.min_sizes[k], 1), round(s_prime, 1), cfg.steps[k], count])
    rows.append(["total", "", "", "", "", "", "", len(layout)])
    return headers, rows


def summary_formula(cfg: ssd.SSDConfig) -> str:
    """'5776 + 2166 + 600 + 150 + 36 + 4 = 8732'."""
    layout = ssd.prior_layout(cfg)
    counts = [int((layout.layer == k).sum()) for k in range(len(cfg.feature_maps))]
    return " + ".join(str(c) for c in counts) + f" = {len(layout)}"
