"""Which dataset a command names: a training pack, a VOC folder with an image set, or COCO (image folder and
instances JSON), opened with training's readers.

The tools that read annotated data besides training (`train.evaluate`, `train.coverage`) share one set of flags,
`add_data_arguments`; `open_source` is the one choice between the three readers, which training's command line
and `train.average` use with their own flag names too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .datasets import COCODataset, DatasetError, VOCDataset
from .pack import PackDataset
from .yolo_labels import YOLODataset, yolo_layout

__all__ = ["add_data_arguments", "find_data", "open_data", "open_source"]


def find_data(data, ann_file=None, image_set: str | None = None, split: str | None = None, classes=None):
    """(the dataset, which format was found and where) for a folder given as it is: COCO when an annotation file
    is given (`data` is its image folder), else a VOC folder (Annotations/ with ImageSets/Main/<image_set>.txt,
    or every annotation when it has no image sets), else YOLO data (`yolo_layout`). `classes` None: the data's
    own, in its order (VOC: sorted names). A folder that is none of these raises DatasetError saying what each
    format needs and what the folder holds."""
    root = Path(data)
    if ann_file:
        source = COCODataset(root, ann_file, classes)
        return source, f"COCO: {ann_file} with the images in {root}"
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder" + (" (a COCO file? give it with --ann-file and the image "
                                                         "folder with --data)" if root.suffix == ".json" else ""))
    if (root / "Annotations").is_dir():
        sets = root / "ImageSets" / "Main"
        chosen = image_set or next((s for s in ("trainval", "train") if (sets / f"{s}.txt").is_file()), None)
        source = VOCDataset(root, chosen, classes=classes)
        return source, f"VOC: {root}" + (f", image set {chosen}" if chosen else ", every annotation")
    layout = yolo_layout(root, split)
    if layout is not None:
        images, labels, names = layout
        return YOLODataset(images, labels, names, classes), f"YOLO: images {images}, labels {labels}, classes {names}"
    jsons = sorted(p.name for p in root.glob("*.json"))[:3]
    held = sorted(p.name for p in root.iterdir())[:8]
    raise DatasetError(
        f"{root} is none of the formats training reads; it holds {held}.\n"
        "  VOC:  Annotations/*.xml and JPEGImages/ (with ImageSets/Main/<set>.txt, or every annotation)\n"
        "  COCO: the instances JSON, given with --ann-file" + (f" (here: {', '.join(jsons)}?)" if jsons else "")
        + "\n  YOLO: a data.yaml, or images/ and labels/ (one .txt per image) beside classes.txt or obj.names")


def open_source(*, pack=None, voc_root=None, image_set: str = "trainval", coco_ann=None, image_dir=None,
                classes=None, keep_difficult: bool = False):
    """The dataset named, or None when none is: a pack first (its classes are its own), then COCO (`coco_ann`
    with `image_dir`), then VOC. `classes` (names) for VOC and COCO; None: VOC's 20, or COCO's file order.
    `keep_difficult` keeps VOC's difficult objects (flagged), which evaluation ignores as the devkit does."""
    if pack:
        return PackDataset(pack, keep_difficult=keep_difficult)
    if coco_ann or image_dir:
        if not (coco_ann and image_dir):
            raise ValueError("--coco-ann and --image-dir go together")
        return COCODataset(image_dir, coco_ann, classes)
    if voc_root:
        return VOCDataset(voc_root, image_set, **({"classes": classes} if classes else {}),
                          keep_difficult=keep_difficult)
    return None


def add_data_arguments(p: argparse.ArgumentParser, image_set: str) -> None:
    """--data-root/--image-set (VOC), --pack, --coco-ann/--image-dir; `image_set` is --image-set's default.
    --data and --ann-file, training's spellings, are accepted too, and with a COCO file --data-root names the
    image folder when --image-dir does not (as in training and `train.pack`), so a training command's data flags
    work here as they are."""
    p.add_argument("--data-root", "--data", dest="data_root",
                   help="VOC folder holding Annotations/, JPEGImages/, ImageSets/Main/; or a YOLO folder")
    p.add_argument("--image-set", default=image_set, help=f"VOC ImageSets/Main list (default: {image_set})")
    p.add_argument("--pack", help="a training pack file (python -m train.pack) instead")
    p.add_argument("--coco-ann", "--ann-file", dest="coco_ann", help="COCO annotation JSON (with --image-dir)")
    p.add_argument("--image-dir", help="COCO image folder")


def open_data(args: argparse.Namespace, classes=None, keep_difficult: bool = False):
    """The dataset `add_data_arguments`' flags name (a YOLO folder too); ValueError when they name none."""
    image_dir = args.image_dir or (args.data_root if args.coco_ann else None)
    if args.data_root and not (args.pack or args.coco_ann) and yolo_layout(args.data_root) is not None:
        return find_data(args.data_root, classes=classes)[0]  # YOLO data, as training reads it
    source = open_source(pack=args.pack, voc_root=args.data_root, image_set=args.image_set,
                         coco_ann=args.coco_ann, image_dir=image_dir, classes=classes,
                         keep_difficult=keep_difficult)
    if source is None:
        raise ValueError(f"name the data: --data-root DIR [--image-set {args.image_set}], --pack FILE, or "
                         "--coco-ann FILE --image-dir DIR")
    return source

