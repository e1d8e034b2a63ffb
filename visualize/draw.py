"""Boxes and labels on images (PIL in, PIL out).

Colours are fixed per class, per source layer and per default-box shape, so the same thing has the same colour
in every picture of the app and the README.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

import ssd

RGB = tuple[int, int, int]

# 20 well-separated colours (one per VOC class; they repeat for datasets with more classes).
CLASS_PALETTE: tuple[RGB, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (170, 40, 40),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (255, 140, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (100, 149, 237), (255, 255, 255),
)
# Source layers, fine to coarse: conv4_3, fc7, conv8_2, conv9_2, conv10_2, conv11_2, conv12_2.
LAYER_PALETTE: tuple[RGB, ...] = (
    (255, 59, 48), (255, 149, 0), (255, 230, 0), (52, 199, 89), (0, 210, 210), (40, 80, 255), (200, 80, 255),
)
# The matching view: ground truth, hard negatives and the legend swatch of "forced best prior" (drawn in its
# layer's colour) each get a colour no source layer has.
GT_COLOUR: RGB = (255, 255, 255)
NEGATIVE_COLOUR: RGB = (255, 0, 170)
FORCED_SWATCH: RGB = (128, 128, 128)
# Default-box shapes within a cell, in `PriorLayout.shape_names` order.
SHAPE_PALETTE: tuple[RGB, ...] = (
    (255, 59, 48), (255, 255, 255), (52, 199, 89), (10, 132, 255), (255, 140, 0), (191, 90, 242),
)


def class_colour(class_id: int) -> RGB:
    """Colour of a class (1-based class id, as in `Detection.class_id`)."""
    return CLASS_PALETTE[(int(class_id) - 1) % len(CLASS_PALETTE)]


def layer_colour(layer: int) -> RGB:
    """Colour of a source layer (0 = conv4_3)."""
    return LAYER_PALETTE[int(layer) % len(LAYER_PALETTE)]


def shape_colour(shape: int) -> RGB:
    """Colour of a default-box shape index within a cell (0: ratio 1, 1: s'_k, 2: ratio 2, 3: ratio 1/2 ...)."""
    return SHAPE_PALETTE[int(shape) % len(SHAPE_PALETTE)]


@lru_cache(maxsize=32)
def font(size: int = 14) -> ImageFont.ImageFont:
    """Pillow's bundled font at `size` pixels (no font files needed)."""
    return ImageFont.load_default(size=max(6, int(size)))


def line_width_for(image: Image.Image) -> int:
    """A box outline that stays visible on both thumbnails and photos."""
    return max(2, round(min(image.size) / 250))


def text_colour_on(background: RGB) -> RGB:
    """Black or white, whichever reads better on `background`."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def fit(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """`image` scaled down (never up) so its longer side is at most `max_side`; returns it and the scale."""
    s = min(1.0, max_side / max(image.size))
    if s >= 1.0:
        return image, 1.0
    size = (max(1, round(image.width * s)), max(1, round(image.height * s)))
    return image.resize(size, Image.BILINEAR), s


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box, colour, width: int, dash: int) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay, bx, by) in ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1)):
        length = max(abs(bx - ax), abs(by - ay))
        n = max(1, int(length // (2 * dash)))
        for i in range(n + 1):
            t0, t1 = min(1.0, 2 * i * dash / max(length, 1e-9)), min(1.0, (2 * i + 1) * dash / max(length, 1e-9))
            if t0 >= 1.0:
                break
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                      fill=colour, width=width)


def draw_box(
    draw: ImageDraw.ImageDraw,
    box: Sequence[float],
    colour: RGB,
    width: int = 2,
    label: str | None = None,
    text_size: int = 14,
    dashed: bool = False,
    label_inside: bool = False,
) -> None:
    """One rectangle (x1, y1, x2, y2 in pixels) with an optional filled label tag at its top-left corner."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if dashed:
        _dashed_rectangle(draw, (x1, y1, x2, y2), colour, width, dash=max(3, 3 * width))
    else:
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
    if label:
        f = font(text_size)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=f)
        tw, th = right - left + 6, bottom - top + 4
        # Above the box when there is room, else just inside its top edge.
        ty = y1 - th if (y1 - th >= 0 and not label_inside) else y1
        draw.rectangle([x1, ty, x1 + tw, ty + th], fill=colour)
        draw.text((x1 + 3 - left, ty + 2 - top), label, fill=text_colour_on(colour), font=f)


def draw_detections(
    image: Image.Image,
    detections: Sequence[ssd.Detection],
    class_names: Sequence[str] | None = None,
    *,
    scale: float = 1.0,
    show_scores: bool = True,
    max_labels: int = 25,
) -> Image.Image:
    """A copy of `image` (RGB) with each detection's box and "label score" tag, coloured by class.

    class_names: names indexed by `class_id - 1`, used for the tags (default: each detection's `label`).
    scale: multiplies the detections' pixel boxes — pass it when drawing on a resized copy of the input.
    max_labels: only the best this many get a tag (at low thresholds hundreds of tags would bury the photo);
    the rest are drawn as thin boxes. The best-scoring detection is drawn last, so it stays on top.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = line_width_for(out)
    text_size = max(11, round(min(out.size) / 40))
    ranked = sorted(detections, key=lambda d: -d.score)
    for rank in reversed(range(len(ranked))):
        det = ranked[rank]
        box = [v * scale for v in det.box]
        if rank >= max_labels:
            draw_box(draw, box, class_colour(det.class_id), max(1, width // 2))
            continue
        name = class_names[det.class_id - 1] if class_names is not None else det.label
        label = f"{name} {det.score:.2f}" if show_scores else name
        draw_box(draw, box, class_colour(det.class_id), width, label, text_size)
    return out


def legend_strip(items: Sequence[tuple[str, RGB]], width: int, text_size: int = 13,
                 background: RGB = (32, 32, 32)) -> Image.Image:
    """A strip of coloured swatches with names, wrapped to `width` pixels, to paste under a picture."""
    f = font(text_size)
    pad, sw = 8, text_size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cells, x, y, row_h = [], pad, pad, text_size + 8
    for name, colour in items:
        tw = probe.textbbox((0, 0), name, font=f)[2]
        w = sw + 6 + tw + 16
        if x + w > width - pad and x > pad:
            x, y = pad, y + row_h
        cells.append((x, y, name, colour))
        x += w
    strip = Image.new("RGB", (width, y + row_h + pad // 2), background)
    draw = ImageDraw.Draw(strip)
    for x, y, name, colour in cells:
        draw.rectangle([x, y + 2, x + sw, y + 2 + sw], fill=colour, outline=(0, 0, 0))
        draw.text((x + sw + 6, y + 1), name, fill=(235, 235, 235), font=f)
    return strip


def stack_vertical(top: Image.Image, bottom: Image.Image) -> Image.Image:
    """`top` above `bottom` (same width expected; the narrower one is left-aligned)."""
    out = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), (32, 32, 32))
    out.paste(top, (0, 0))
    out.paste(bottom, (0, top.height))
    return out


def draw_marker(image: Image.Image, xy: Sequence[float], colour: RGB = (255, 255, 0), size: int = 9) -> Image.Image:
    """A copy of `image` with a cross at pixel `xy` (e.g. the first corner of a box being drawn)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    x, y = float(xy[0]), float(xy[1])
    for w, c in ((5, (0, 0, 0)), (2, colour)):
        draw.line([(x - size, y), (x + size, y)], fill=c, width=w)
        draw.line([(x, y - size), (x, y + size)], fill=c, width=w)
    return out
