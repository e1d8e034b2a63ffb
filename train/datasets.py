"""Detection data sources: PASCAL VOC (XML + ImageSets) and COCO (instances JSON via pycocotools) here, YOLO (a
text file of normalised boxes per image, as most labelling tools export) in `train.yolo_labels`; and the torch
Dataset that augments any of them for training.

A *source* knows the ground truth and decodes images; it does no augmentation. Every source has the same
small API, which the training pack (`train.pack.PackDataset`) repeats:

    len(source)              number of images
    source.ids               image ids (str), in order
    source.classes           class names; label k (1..C) is classes[k - 1], label 0 is background
    source.load(i)           -> Sample(image HxWx3 uint8 RGB, boxes [M,4] float32, labels [M] int64, difficult, id)
    source.annotation(i)     -> (boxes, labels, difficult, width, height) without decoding the image

Pixel convention. Boxes are 0-based continuous pixel coordinates, xyxy, where a box covers whole pixels: a
box over pixel columns c0..c1 (0-based, inclusive) is x1 = c0, x2 = c1 + 1, so its width is the number of
pixels it covers and a box over the whole image is (0, 0, W, H). VOC stores 1-based inclusive pixel indices,
so VOC (xmin, ymin, xmax, ymax) becomes (xmin - 1, ymin - 1, xmax, ymax). COCO's [x, y, w, h] is already
continuous and becomes (x, y, x + w, y + h). YOLO's `class cx cy w h`, fractions of the image, becomes
((cx - w/2)·W, (cy - h/2)·H, (cx + w/2)·W, (cy + h/2)·H).

Bad data raises `DatasetError` (a ValueError) naming the file and what is wrong, at construction where
possible (all annotations are parsed up front), so mistakes surface before training starts rather than as a
traceback deep in a DataLoader worker.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssd import VOC_CLASSES

__all__ = ["COCODataset", "DatasetError", "DetectionDataset", "ParsedSource", "Sample", "VOCDataset", "collate",
           "decode_image"]


class DatasetError(ValueError):
    """Malformed or missing data; the message names the file and the problem."""


@dataclass
class Sample:
    """One image and its objects. Boxes are pixel xyxy (see the module's pixel convention)."""

    image: np.ndarray       # H x W x 3 uint8 RGB
    boxes: np.ndarray       # [M, 4] float32
    labels: np.ndarray      # [M] int64, 1..C
    difficult: np.ndarray   # [M] bool
    image_id: str


def decode_image(path, expected_size=None, data: bytes | None = None) -> np.ndarray:
    """A training image -> HxWx3 uint8 RGB; DatasetError if it is missing, unreadable, or not the (width,
    height) its annotation says. `data`: the file's bytes, already read (a pack); `path` then only names it.

    Unlike `ssd.image.to_rgb` (the detector's input), EXIF orientation is not applied: annotations are in the
    stored pixels."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            if expected_size is not None and tuple(im.size) != tuple(expected_size):
                raise DatasetError(f"{path}: image is {im.size[0]}x{im.size[1]} but its annotation says "
                                   f"{expected_size[0]}x{expected_size[1]} (width x height); boxes would be wrong")
            return np.array(im.convert("RGB"))  # a writable copy (torch.from_numpy wants one)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file missing") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot decode image ({e})") from None


def _check_boxes(boxes: np.ndarray, width: int, height: int, where: str, what: list[str]):
    """Every box inside the image and with positive size; `what` describes each box for the message."""
    if len(boxes) == 0:
        return
    not_finite = ~np.isfinite(boxes).all(1)  # NaN compares false with everything: it would pass the rest
    bad_order = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
    for k in np.flatnonzero(not_finite | bad_order | outside):
        problem = ("has a coordinate that is not a finite number" if not_finite[k] else
                   "has x2 <= x1 or y2 <= y1" if bad_order[k] else f"lies outside the {width}x{height} image")
        raise DatasetError(f"{where}: {what[k]} {problem} (0-based xyxy {boxes[k].tolist()})")


# ----------------------------------------------------------------------------------------------------- VOC
def _text(node, tag, where, parent):
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{where}: missing <{tag}> in <{parent}>")
    return child.text.strip()


def _number(node, tag, where, parent):
    text = _text(node, tag, where, parent)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # float() also reads "nan" and "inf"
        raise DatasetError(f"{where}: <{parent}><{tag}> is {text[:20]!r}, not a finite number")
    return value


def _parse_voc_xml(path: Path):
    """-> (width, height, filename or None, names, boxes 0-based xyxy, difficult) of one VOC annotation."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file missing") from None
    except ET.ParseError as e:
        raise DatasetError(f"{path}: unparsable XML ({e})") from None
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: missing <size> (with <width> and <height>)")
    width, height = _number(size, "width", path, "size"), _number(size, "height", path, "size")
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise DatasetError(f"{path}: <size> is {width}x{height}; width and height must be positive integers")
    fname = root.findtext("filename")
    names, boxes, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        names.append(_text(obj, "name", path, f"object #{k}"))
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{path}: object #{k} ({names[-1]!r}) has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bb, t, path, f"object #{k} bndbox") for t in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))  # 1-based inclusive -> 0-based continuous
        d = (obj.findtext("difficult") or "").strip()
        if d not in ("", "0", "1"):
            raise DatasetError(f"{path}: object #{k} ({names[-1]!r}) has <difficult>{d}</difficult>; VOC uses 0 or 1")
        difficult.append(d == "1")
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    width, height = int(width), int(height)
    _check_boxes(boxes, width, height, str(path), [f"object #{k} ({n!r})" for k, n in enumerate(names)])
    return width, height, (fname.strip() if fname else None), names, boxes, np.array(difficult, bool)


class ParsedSource:
    """What the VOC, COCO and YOLO sources share once their annotations are parsed: `ids`, and per image the file,
    (width, height) and (boxes, labels, difficult)."""

    ids: list
    _files: list
    _sizes: list
    _ann: list

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, i: int):
        """(boxes [M,4] float32 pixel xyxy, labels [M] int64, difficult [M] bool, width, height) — without
        decoding the image (evaluation needs only this)."""
        boxes, labels, difficult = self._ann[i]
        return boxes.copy(), labels.copy(), difficult.copy(), *self._sizes[i]

    def load(self, i: int) -> Sample:
        boxes, labels, difficult, w, h = self.annotation(i)
        return Sample(decode_image(self._files[i], (w, h)), boxes, labels, difficult, self.ids[i])

    def file_name(self, i: int) -> str:
        """Image i's file as the data names it (inside the image folder: COCO's `file_name`, a YOLO or VOC photo):
        how the evaluation report lists an image, where its id (a COCO number) names no file."""
        path, folder = Path(self._files[i]), getattr(self, "image_dir", None)
        return path.relative_to(folder).as_posix() if folder and path.is_relative_to(folder) else path.name

    def fingerprint(self, i: int) -> str:
        """Changes when image i's file does (path, size, modification time): the key of the image-check cache."""
        try:
            st = os.stat(self._files[i])
        except OSError:
            return f"{self._files[i]}|missing"
        return f"{self._files[i]}|{st.st_size}|{st.st_mtime_ns}"


class VOCDataset(ParsedSource):
    """PASCAL VOC layout: `root` is the VOC<year> folder (JPEGImages/, Annotations/, ImageSets/Main/).

    `image_set` names ImageSets/Main/<image_set>.txt; None takes every Annotations/*.xml. `classes` fixes the
    label order (default: the 20 VOC classes); None discovers the class names from the annotations and sorts
    them. Objects marked
    <difficult>1</difficult> are dropped unless `keep_difficult` (then they are kept and flagged, as VOC
    evaluation needs). Images are JPEGImages/<id>.jpg, or the annotation's <filename> if that does not exist.
    """

    def __init__(self, root, image_set: str | None = "trainval", classes=VOC_CLASSES, keep_difficult: bool = False):
        self.root = Path(root)
        self.image_set = image_set
        self.keep_difficult = keep_difficult
        set_file = self.root / "ImageSets" / "Main" / f"{image_set}.txt"
        if image_set is None:  # every annotation (labelling tools' VOC exports have no image sets)
            self.ids = sorted(p.stem for p in (self.root / "Annotations").glob("*.xml"))
            if not self.ids:
                raise DatasetError(f"{self.root / 'Annotations'}: no .xml annotations")
        elif not set_file.is_file():
            have = sorted(p.stem for p in (self.root / "ImageSets" / "Main").glob("*.txt"))[:20] \
                if (self.root / "ImageSets" / "Main").is_dir() else []
            raise DatasetError(f"{set_file}: image set file missing (root should be a VOC<year> folder with "
                               f"ImageSets/Main/{image_set}.txt; found sets: {have})")
        else:
            self.ids = [line.split()[0] for line in set_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise DatasetError(f"{set_file}: image set is empty")
        image_dir = self.root / "JPEGImages"
        try:
            present = set(os.listdir(image_dir))
        except FileNotFoundError:
            raise DatasetError(f"{image_dir}: image folder missing") from None

        parsed = []
        for image_id in self.ids:
            xml = self.root / "Annotations" / f"{image_id}.xml"
            width, height, fname, names, boxes, difficult = _parse_voc_xml(xml)
            if f"{image_id}.jpg" in present:
                fname = f"{image_id}.jpg"
            elif not fname or fname not in present:
                tried = f"{image_id}.jpg" + (f" or {fname}" if fname else "")
                raise DatasetError(f"{image_dir / (image_id + '.jpg')}: image file missing for annotation {xml} "
                                   f"(looked for {tried} in {image_dir})")
            parsed.append((xml, fname, width, height, names, boxes, difficult))

        if classes is None:
            classes = sorted({n for p in parsed for n in p[4]})
        self.classes = tuple(classes)
        index = {name: k + 1 for k, name in enumerate(self.classes)}
        self._files, self._sizes, self._ann = [], [], []
        for xml, fname, width, height, names, boxes, difficult in parsed:
            unknown = [n for n in names if n not in index]
            if unknown:
                raise DatasetError(f"{xml}: unknown class name {unknown[0]!r}; known classes: {list(self.classes)} "
                                   "(list your classes with --classes a,b,c, or in Python pass classes=None to "
                                   "take the names from the annotations)")
            labels = np.array([index[n] for n in names], np.int64)
            if not keep_difficult:
                boxes, labels, difficult = boxes[~difficult], labels[~difficult], difficult[~difficult]
            self._files.append(image_dir / fname)
            self._sizes.append((width, height))
            self._ann.append((boxes, labels, difficult))

    def __repr__(self) -> str:
        return f"VOCDataset({str(self.root)!r}, {self.image_set!r}: {len(self)} images, {len(self.classes)} classes)"


# ---------------------------------------------------------------------------------------------------- COCO
class COCODataset(ParsedSource):
    """COCO instances JSON (read with pycocotools) + an image folder.

    Labels are contiguous 1..C in increasing category-id order (`classes` are the category names in that
    order); pass `classes` (names) to choose the order yourself. Crowd annotations (iscrowd=1) are excluded;
    images without any (non-crowd) objects are kept. Zero-size boxes (w or h == 0, which real COCO has a few
    of) are dropped; boxes may overhang the image by up to 1 px (float rounding) and are clipped, anything
    further outside is an error.
    """

    def __init__(self, image_dir, ann_file, classes=None):
        from pycocotools.coco import COCO

        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        if not self.ann_file.is_file():
            raise DatasetError(f"{self.ann_file}: annotation file missing")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(str(self.ann_file))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{self.ann_file}: not valid JSON ({e})") from None
        except (KeyError, TypeError, AssertionError) as e:
            raise DatasetError(f"{self.ann_file}: not a COCO instances file ({type(e).__name__}: {e})") from None
        where = str(self.ann_file)
        for key in ("images", "annotations", "categories"):
            if key not in coco.dataset:
                raise DatasetError(f"{where}: missing top-level '{key}' list")
        cats = sorted(coco.cats.values(), key=lambda c: c["id"])
        if classes is None:
            classes = [c["name"] for c in cats]
        self.classes = tuple(classes)
        name_to_label = {n: k + 1 for k, n in enumerate(self.classes)}
        cat_to_label = {}
        for c in cats:
            if c["name"] not in name_to_label:
                raise DatasetError(f"{where}: category {c['name']!r} (id {c['id']}) is not among the given "
                                   f"classes {list(self.classes)}")
            cat_to_label[c["id"]] = name_to_label[c["name"]]
        self.category_ids = [c["id"] for c in cats]

        try:
            present = set(os.listdir(self.image_dir))
        except FileNotFoundError:
            raise DatasetError(f"{self.image_dir}: image folder missing") from None
        self.ids, self._files, self._sizes, self._ann = [], [], [], []
        for image_id in sorted(coco.imgs):
            info = coco.imgs[image_id]
            try:
                fname, width, height = info["file_name"], int(info["width"]), int(info["height"])
            except KeyError as e:
                raise DatasetError(f"{where}: image id {image_id} has no {e.args[0]!r} field") from None
            if fname not in present:
                raise DatasetError(f"{self.image_dir / fname}: image file missing (image id {image_id} in {where})")
            boxes, labels = [], []
            for a in coco.imgToAnns.get(image_id, []):
                if a.get("iscrowd", 0):
                    continue
                bbox = a.get("bbox")
                if not (isinstance(bbox, list) and len(bbox) == 4
                        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                                for v in bbox)):  # Python's json reads NaN and Infinity
                    raise DatasetError(f"{where}: annotation id {a.get('id')} (image {image_id}) has bbox "
                                       f"{str(bbox)[:80]}; it must be 4 numbers [x, y, width, height], all finite")
                if a.get("category_id") not in cat_to_label:
                    raise DatasetError(f"{where}: annotation id {a.get('id')} has unknown category_id "
                                       f"{a.get('category_id')}; known ids: {self.category_ids}")
                x, y, w, h = (float(v) for v in a["bbox"])
                if w < 0 or h < 0:
                    raise DatasetError(f"{where}: annotation id {a['id']} (image {image_id}) has negative "
                                       f"width/height in bbox {a['bbox']}")
                if w == 0 or h == 0:
                    continue
                box = [x, y, x + w, y + h]
                if box[0] < -1 or box[1] < -1 or box[2] > width + 1 or box[3] > height + 1:
                    raise DatasetError(f"{where}: annotation id {a['id']} bbox {a['bbox']} lies outside the "
                                       f"{width}x{height} image {image_id}")
                box = [min(max(box[0], 0), width), min(max(box[1], 0), height),
                       min(max(box[2], 0), width), min(max(box[3], 0), height)]
                if box[2] <= box[0] or box[3] <= box[1]:
                    continue
                boxes.append(box)
                labels.append(cat_to_label[a["category_id"]])
            self.ids.append(str(image_id))
            self._files.append(self.image_dir / fname)
            self._sizes.append((width, height))
            self._ann.append((np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                              np.zeros(len(labels), bool)))

    def __repr__(self) -> str:
        return f"COCODataset({str(self.ann_file)!r}: {len(self)} images, {len(self.classes)} classes)"


# ------------------------------------------------------------------------------------------- torch wrapper
class DetectionDataset(torch.utils.data.Dataset):
    """Any source with `load(i)` + a transform -> (image uint8 [3,S,S], boxes float32 [M,4] in [0,1] xyxy,
    labels int64 [M]).

    `transform(image, boxes, labels)` is `ssd.augment.SSDAugmentation` or `Resize`. Mean/std
    normalisation is not done here: uint8 images travel to the device (4x less to copy) and the engine
    normalises them there. `difficult` flags are not passed on: train on a source with keep_difficult=False.
    """

    def __init__(self, source, transform, seed: int | None = None):
        self.source, self.transform, self.seed = source, transform, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key):
        """key: an index, or (epoch, index) from the engine's sampler. With a seed, the sample's augmentation
        draws from an RNG seeded by (seed, epoch, index): the same every time, whatever worker loads it —
        which is what makes resuming a run exact."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        rng = None if self.seed is None else np.random.default_rng([self.seed, epoch, i])
        s = self.source.load(i)
        image, boxes, labels = self.transform(s.image, s.boxes, s.labels, rng=rng)
        return (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.as_tensor(labels, dtype=torch.int64).reshape(-1))


def collate(batch):
    """[(image, boxes, labels), ...] -> (images uint8 [B,3,S,S], [boxes [M_b,4]], [labels [M_b]])."""
    images, boxes, labels = zip(*batch, strict=True)
    return torch.stack(images), list(boxes), list(labels)
