"""Which dataset a command names: a training pack, a VOC folder with an image set, or COCO (image folder and
instances JSON), opened with training's readers.

Training's command line and the tools that read annotated data beside it (`train.evaluate`, `train.coverage`)
share one set of flags, `add_data_arguments`; `open_source` is the one choice between the three readers, which
`train.average` uses with its own flag names too.
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


def add_data_arguments(p, image_set: str | None, image_set_help: str | None = None, image_dir: bool = True) -> None:
    """The flags that name annotated data, for training's command line and the tools beside it: --data (a VOC,
    YOLO or COCO image folder; --data-root, the tools' spelling, too), --image-set (`image_set` its default,
    `image_set_help` its help), --ann-file (a COCO file; --coco-ann too), --pack, and with `image_dir` the COCO
    image folder when it is not --data's (--image-dir). One set of flags, so that a training command's data flags
    work in `train.evaluate` and `train.coverage` as they are, and the other way round."""
    p.add_argument("--data", "--data-root", dest="data_root", metavar="DIR",
                   help="VOC: the VOC<year> folder (Annotations/, JPEGImages/, ImageSets/Main/ if any); COCO: the "
                        "image folder; YOLO: the folder with data.yaml, or with images/, labels/ and classes.txt")
    p.add_argument("--image-set", default=image_set,
                   help=image_set_help or f"VOC ImageSets/Main/<name>.txt (default: {image_set})")
    p.add_argument("--ann-file", "--coco-ann", dest="coco_ann", metavar="FILE",
                   help="COCO: the instances JSON" + (" (its images in --image-dir, else --data)" if image_dir
                                                      else " (its images in --data)"))
    p.add_argument("--pack", help="a training pack written by `python -m train.pack`, instead")
    if image_dir:
        p.add_argument("--image-dir", help="COCO: the image folder, where it is not --data")


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

