"""YOLO data: one text file of labels per image, `<class> <cx> <cy> <w> <h>` per object (the box as fractions of
the image), as most labelling tools export; the class names in a data.yaml or a classes.txt. `yolo_layout` finds
the image and label folders (Ultralytics' layout or a plain export), `YOLODataset` reads them as a source with the
API and pixel convention of `train.datasets`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import DatasetError, ParsedSource

__all__ = ["IMAGE_SUFFIXES", "YOLODataset", "yolo_layout"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _yolo_names(path: Path) -> list[str]:
    """Class names from a YOLO class list: a data.yaml's `names` (a list, or a mapping from index to name) or a
    text file with one name per line (classes.txt, obj.names)."""
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise DatasetError(f"{path}: not valid YAML ({str(e)[:120]})") from None
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            try:
                names = [names[k] for k in sorted(names, key=int)]
            except (TypeError, ValueError):
                names = None
        if not isinstance(names, list) or not names:
            raise DatasetError(f"{path}: needs a 'names' list of the class names (or a mapping 0: name, …)")
        return [str(n) for n in names]
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: the class list is empty (one class name per line)")
    return names


def yolo_layout(root, split: str | None = None) -> tuple[Path, Path, Path] | None:
    """(image folder, label folder, class list) of YOLO data under `root`, or None when it is not YOLO's layout.

    Two layouts are read: Ultralytics' (a data.yaml whose `train`/`val` name image folders, with the labels in
    the parallel `labels/` folder) and the plain export of labelling tools (`images/` and `labels/` beside a
    classes.txt or obj.names, or the .txt files beside the images). `split` picks the data.yaml entry (default
    `train`)."""
    root = Path(root)
    if not root.is_dir():
        return None
    yamls = [p for p in (root / "data.yaml", root / "dataset.yaml") if p.is_file()] or sorted(root.glob("*.yaml"))
    if yamls:
        import yaml

        try:
            data = yaml.safe_load(yamls[0].read_text()) or {}
        except yaml.YAMLError:
            data = {}
        entry = data.get(split or "train") if isinstance(data, dict) else None
        if isinstance(entry, str):
            base = Path(data.get("path") or ".")
            images = (yamls[0].parent / base / entry) if not base.is_absolute() else base / entry
            parts = list(images.parts)
            if "images" in parts:
                k = len(parts) - 1 - parts[::-1].index("images")
                labels = Path(*parts[:k], "labels", *parts[k + 1:])
            else:
                labels = images
            return images, labels, yamls[0]
    names = next((p for p in (root / "classes.txt", root / "obj.names", root / "classes.names") if p.is_file()),
                 None)
    if names is None:
        return None
    if (root / "images").is_dir():
        sub = root / "images" / split if split and (root / "images" / split).is_dir() else root / "images"
        labels = root / "labels" / sub.relative_to(root / "images")
        return sub, labels, names
    return root, root, names


class YOLODataset(ParsedSource):
    """YOLO text labels: one `<class> <cx> <cy> <w> <h>` line per object (class a 0-based index into the class
    list, the box as fractions of the image), in a .txt file named like its image. An image without a .txt has
    no objects. `classes` (names) fixes the label order; None: the class list's order."""

    def __init__(self, image_dir, label_dir, names_file, classes=None):
        self.image_dir, self.label_dir, self.names_file = Path(image_dir), Path(label_dir), Path(names_file)
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.image_dir}: image folder missing")
        file_names = _yolo_names(self.names_file)
        self.classes = tuple(classes) if classes else tuple(file_names)
        index = {n: k + 1 for k, n in enumerate(self.classes)}
        missing = [n for n in file_names if n not in index]
        if missing:
            raise DatasetError(f"{self.names_file}: class {missing[0]!r} is not among the given classes "
                               f"{list(self.classes)}")
        images = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{self.image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.ids, self._files, self._sizes, self._ann = [], [], [], []
        for image in images:
            try:
                with Image.open(image) as im:
                    width, height = im.size
            except (OSError, ValueError) as e:
                raise DatasetError(f"{image}: not an image this reader can open ({e})") from None
            boxes, labels = self._parse(self.label_dir / f"{image.stem}.txt", width, height, file_names, index)
            self.ids.append(image.stem)
            self._files.append(image)
            self._sizes.append((width, height))
            self._ann.append((boxes, labels, np.zeros(len(labels), bool)))

    @staticmethod
    def _parse(path: Path, width: int, height: int, file_names, index):
        boxes, labels = [], []
        lines = path.read_text().splitlines() if path.is_file() else []
        for n, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{n}"
            if len(fields) != 5:  # segmentation polygons or a confidence column: not boxes
                raise DatasetError(f"{where}: expected 5 fields '<class> <cx> <cy> <w> <h>', got {len(fields)}")
            try:
                k, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:5])
            except (ValueError, TypeError):
                raise DatasetError(f"{where}: expected '<class> <cx> <cy> <w> <h>', got {line[:80]!r}") from None
            if not 0 <= k < len(file_names):
                raise DatasetError(f"{where}: class index {k}, the class list has {len(file_names)} names")
            if not all(math.isfinite(v) and -0.01 <= v <= 1.01 for v in (cx, cy, w, h)):
                raise DatasetError(f"{where}: the box must be fractions of the image in [0, 1], got {line[:80]!r}")
            box = [min(max((cx - w / 2) * width, 0), width), min(max((cy - h / 2) * height, 0), height),
                   min(max((cx + w / 2) * width, 0), width), min(max((cy + h / 2) * height, 0), height)]
            if box[2] > box[0] and box[3] > box[1]:
                boxes.append(box)
                labels.append(index[file_names[k]])
        return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)

    def __repr__(self) -> str:
        return f"YOLODataset({str(self.image_dir)!r}: {len(self)} images, {len(self.classes)} classes)"
