"""A tiny synthetic detection dataset for tests: coloured filled shapes on a noisy background.

Shapes do not overlap when a free spot is found in 20 tries (almost always), so none is hidden.

`make_shapes_voc` writes the PASCAL VOC layout, `make_shapes_coco` a COCO instances JSON. Both are
deterministic for a given seed and take a few milliseconds per image.

Ground truth is measured, not assumed: every shape is drawn into its own mask and its box is the pixel extent
of that mask. In the project's pixel convention (0-based, xyxy, a box covers whole pixels) a shape whose
leftmost/rightmost painted columns are `c0` and `c1` has x1 = c0 and x2 = c1 + 1. The generator writes that
truth to `shapes_truth.json` next to the VOC folder, so tests can compare a parser against it; the XML itself
holds VOC's 1-based inclusive coordinates (xmin = c0 + 1, xmax = c1 + 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle")
# COCO category ids for the shapes: not contiguous, and not in the names' alphabetical order, so that a
# loader mapping ids to labels by position, or by sorted name, gets the labels wrong.
COCO_CATEGORY_IDS = {"square": 3, "circle": 7, "triangle": 9}
TRUTH_FILE = "shapes_truth.json"


def _draw_shape(kind: str, w: int, h: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One shape at a random place and size: (mask HxW bool, box [x1, y1, x2, y2] 0-based pixel extent)."""
    side = int(rng.integers(max(8, min(w, h) // 6), max(9, min(w, h) // 2) + 1))
    x0 = int(rng.integers(0, w - side + 1))
    y0 = int(rng.integers(0, h - side + 1))
    x1, y1 = x0 + side - 1, y0 + side - 1  # inclusive corners for PIL
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    if kind == "circle":
        d.ellipse([x0, y0, x1, y1], fill=255)
    elif kind == "square":
        d.rectangle([x0, y0, x1, y1], fill=255)
    elif kind == "triangle":
        d.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=255)
    else:  # any other name: an ellipse squashed to 2/3 of the height
        d.ellipse([x0, y0, x1, y0 + (2 * side) // 3], fill=255)
    m = np.asarray(mask) > 0
    cols, rows = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)
    return m, box


def _make_image(w: int, h: int, classes, rng: np.random.Generator, max_shapes=3):
    """(image HxWx3 uint8, boxes [M,4] float32 0-based pixel extent, class names [M])."""
    base = rng.integers(0, 256, size=3)
    img = np.clip(base + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
    boxes, names = [], []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        kind = classes[int(rng.integers(len(classes)))]
        for _attempt in range(20):  # avoid hiding one shape behind another: prefer a free spot
            mask, box = _draw_shape(kind, w, h, rng)
            if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
                break
        colour = rng.integers(0, 256, size=3)
        while np.abs(colour - base).sum() < 150:  # keep shapes visible against the background
            colour = rng.integers(0, 256, size=3)
        img[mask] = colour
        boxes.append(box)
        names.append(kind)
    return img, np.stack(boxes).astype(np.float32), names


def _sizes(n: int, size, rng):
    if size is not None:
        return [tuple(size)] * n
    return [(int(rng.integers(96, 201)), int(rng.integers(80, 161))) for _ in range(n)]


def _voc_xml(image_id: str, w: int, h: int, boxes, names) -> str:
    objs = []
    for (x1, y1, x2, y2), name in zip(boxes, names, strict=True):
        # 0-based extent -> VOC 1-based inclusive: xmin = x1 + 1, xmax = x2 (the last covered pixel, 1-based)
        objs.append(
            f"  <object>\n    <name>{escape(name)}</name>\n    <pose>Unspecified</pose>\n"
            f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n"
            f"      <xmin>{int(x1) + 1}</xmin>\n      <ymin>{int(y1) + 1}</ymin>\n"
            f"      <xmax>{int(x2)}</xmax>\n      <ymax>{int(y2)}</ymax>\n    </bndbox>\n  </object>\n")
    return (f"<annotation>\n  <folder>VOC2007</folder>\n  <filename>{image_id}.jpg</filename>\n"
            f"  <size>\n    <width>{w}</width>\n    <height>{h}</height>\n    <depth>3</depth>\n  </size>\n"
            f"  <segmented>0</segmented>\n{''.join(objs)}</annotation>\n")


def make_shapes_voc(root, n_train: int = 16, n_val: int = 8, size=(160, 120), seed: int = 0,
                    classes=SHAPE_CLASSES) -> Path:
    """Write a VOC-layout shapes dataset under `root` and return its VOC2007 folder.

    `size` is (width, height) for every image, or None for random sizes (96–200 × 80–160). Images are
    named 000000, 000001, ...: the first `n_train` form `train`, the next `n_val` form `val`, all of them
    `trainval`. The measured truth (0-based pixel xyxy boxes and class names per image id) is written to
    `<root>/shapes_truth.json` as {"classes": [...], "images": {id: {"width", "height", "boxes", "names"}}}.
    """
    root = Path(root)
    voc = root / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    ids = [f"{i:06d}" for i in range(n)]
    truth = {}
    for image_id, (w, h) in zip(ids, _sizes(n, size, rng), strict=True):
        img, boxes, names = _make_image(w, h, classes, rng)
        Image.fromarray(img).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=92)
        (voc / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, w, h, boxes, names))
        truth[image_id] = {"width": w, "height": h, "boxes": boxes.tolist(), "names": names}
    sets = {"train": ids[:n_train], "val": ids[n_train:], "trainval": ids}
    for name, members in sets.items():
        (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in members))
    (root / TRUTH_FILE).write_text(json.dumps({"classes": list(classes), "images": truth}))
    return voc


def make_shapes_coco(root, n: int = 12, seed: int = 0) -> tuple[Path, Path]:
    """Write a COCO-format shapes dataset under `root`: (image_dir, instances JSON path).

    Category ids are 3 (square), 7 (circle), 9 (triangle) — see COCO_CATEGORY_IDS. Boxes are COCO's
    [x, y, w, h] of the measured 0-based pixel extent. Image ids start at 101 (not 0 or 1). The first image
    also carries one `iscrowd=1` annotation (a region around its first shape, category 'circle'), and the
    last image has no annotations at all.
    """
    root = Path(root)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    ann_id = 1
    for k, (w, h) in enumerate(_sizes(n, None, rng)):
        image_id = 101 + k
        img, boxes, names = _make_image(w, h, SHAPE_CLASSES, rng)
        if k == n - 1:  # an image with no objects: plain noisy background
            img = np.clip(rng.normal(128, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
            boxes, names = boxes[:0], []
        file_name = f"shape_{image_id}.jpg"
        Image.fromarray(img).save(image_dir / file_name, quality=92)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for (x1, y1, x2, y2), name in zip(boxes.tolist(), names, strict=True):
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": COCO_CATEGORY_IDS[name],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0, "segmentation": []})
            ann_id += 1
        if k == 0:
            x1, y1, x2, y2 = boxes[0].tolist()
            cw, ch = max(1.0, (x2 - x1) / 2), max(1.0, (y2 - y1) / 2)
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": COCO_CATEGORY_IDS["circle"],
                                "bbox": [x1, y1, cw, ch], "area": cw * ch, "iscrowd": 1,
                                "segmentation": {"counts": [h * w], "size": [h, w]}})
            ann_id += 1
    categories = [{"id": cid, "name": name, "supercategory": "shape"}
                  for name, cid in sorted(COCO_CATEGORY_IDS.items(), key=lambda kv: kv[1])]
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories,
                                    "info": {"description": "synthetic shapes"}, "licenses": []}))
    return image_dir, ann_file
