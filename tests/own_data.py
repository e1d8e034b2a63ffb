"""One small labelled photo set written in each format training reads (VOC, COCO, YOLO), for tests of the
"train on your own photos" path: the same images and boxes in every layout, so each reader can be checked
against the others and against the boxes drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog")


def photos(n: int = 6, seed: int = 0) -> list[tuple[np.ndarray, list[tuple[float, float, float, float]], list[str]]]:
    """n photos (noise with one bright rectangle per object) and their objects as pixel xyxy boxes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(120, 200)), int(rng.integers(140, 240))
        image = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        boxes, names = [], []
        for k in range(1 + i % 2):
            x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            x2, y2 = x1 + int(rng.integers(20, w // 2)), y1 + int(rng.integers(20, h // 2))
            name = CLASSES[(i + k) % 2]
            image[y1:y2, x1:x2] = (230, 120, 40) if name == "cat" else (40, 120, 230)
            boxes.append((x1, y1, x2, y2))
            names.append(name)
        out.append((image, boxes, names))
    return out


def write_voc(root: Path, items, image_sets: bool = True) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    ids = []
    for i, (image, boxes, names) in enumerate(items):
        image_id = f"{i:06d}"
        ids.append(image_id)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        objects = "".join(
            f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for (x1, y1, x2, y2), n in zip(boxes, names))
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>{image.shape[1]}</width>"
            f"<height>{image.shape[0]}</height><depth>3</depth></size>{objects}</annotation>")
    if image_sets:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return root


def write_coco(root: Path, items) -> tuple[Path, Path]:
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for i, (image, boxes, names) in enumerate(items):
        name = f"photo_{i}.jpg"
        Image.fromarray(image).save(images_dir / name, quality=95)
        images.append({"id": i + 1, "file_name": name, "width": image.shape[1], "height": image.shape[0]})
        for (x1, y1, x2, y2), n in zip(boxes, names):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": CLASSES.index(n) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]}))
    return images_dir, ann


def write_yolo(root: Path, items, ultralytics: bool = False) -> Path:
    """Plain: images/, labels/, classes.txt. Ultralytics: images/train, labels/train and a data.yaml."""
    sub = Path("train") if ultralytics else Path()
    (root / "images" / sub).mkdir(parents=True)
    (root / "labels" / sub).mkdir(parents=True)
    for i, (image, boxes, names) in enumerate(items):
        h, w = image.shape[:2]
        Image.fromarray(image).save(root / "images" / sub / f"photo_{i}.jpg", quality=95)
        (root / "labels" / sub / f"photo_{i}.txt").write_text("".join(
            f"{CLASSES.index(n)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
            f"{(y2 - y1) / h:.6f}\n" for (x1, y1, x2, y2), n in zip(boxes, names)))
    if ultralytics:
        (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames:\n"
                                        + "".join(f"  {k}: {c}\n" for k, c in enumerate(CLASSES)))
    else:
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root
