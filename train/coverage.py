"""How well a config's default boxes fit a dataset's objects, class by class, before any training.

Training can only learn to find an object from the default boxes matched to it (paper §2.2): those at Jaccard
overlap >= the matching threshold, or the one best box forced to it when none is. An object without a default
box at the threshold gets that one forced positive, whose offsets must cover a large change of size or
shape. So, per class: how many objects have a default box at the threshold ("covered"), how many positives
training's matcher (`ssd.match`) gives each, and the median of each object's best overlap. The boxes are taken
as fractions of the image, as training resizes every image to the square input; the augmentation's crops and
zoom-outs change object sizes during training, so this describes the data as annotated, not each batch.

    python -m train.coverage --config SSD384_LITE0_VOC --data-root VOCdevkit/VOC2007 --image-set minival
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from ssd import PRESETS, SSDConfig, match
from ssd.boxes import cxcywh_to_xyxy
from ssd.cli import error_exit, program
from ssd.priors import default_boxes

from .sources import add_data_arguments, open_data

__all__ = ["ClassCoverage", "coverage", "main"]


@dataclass
class ClassCoverage:
    name: str
    objects: int
    covered: int  # objects with a default box at IoU >= the matching threshold
    positives: int  # default boxes training's matcher assigns to these objects, forced ones included
    median_best_iou: float  # nan without objects

    @property
    def covered_fraction(self) -> float:
        return self.covered / self.objects if self.objects else float("nan")

    @property
    def positives_per_object(self) -> float:
        return self.positives / self.objects if self.objects else float("nan")


def coverage(cfg: SSDConfig, annotations, class_names, batch: int = 32) -> list[ClassCoverage]:
    """Per class (in `class_names` order, labels 1..C) and, last, for all classes together ("all").

    `annotations`: per image (boxes [M, 4] pixel xyxy, labels [M] 1..C, width, height)."""
    priors = default_boxes(cfg).float()
    priors_xyxy = cxcywh_to_xyxy(priors)
    labels_all, best_all, positives_all = [], [], []
    annotations = list(annotations)
    for start in range(0, len(annotations), batch):
        chunk = annotations[start:start + batch]
        boxes = [torch.as_tensor(np.asarray(b, np.float32) / np.float32([w, h, w, h])).reshape(-1, 4)
                 for b, _, w, h in chunk]
        labels = [torch.as_tensor(np.asarray(lab, np.int64)).reshape(-1) for _, lab, _, _ in chunk]
        m = match(boxes, labels, priors, cfg.match_threshold)
        for i, (b, lab) in enumerate(zip(boxes, labels)):
            if not len(b):
                continue
            best_all.append(box_iou(b, priors_xyxy).max(dim=1).values)
            positives_all.append(torch.bincount(m.matched_gt[i][m.matched_gt[i] >= 0], minlength=len(b)))
            labels_all.append(lab)
    if labels_all:
        labels, best, positives = torch.cat(labels_all), torch.cat(best_all), torch.cat(positives_all)
    else:
        labels, best, positives = torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, dtype=torch.long)

    def row(name, keep):
        b = best[keep]
        return ClassCoverage(name, int(keep.sum()), int((b >= cfg.match_threshold).sum()), int(positives[keep].sum()),
                             float(b.median()) if len(b) else float("nan"))

    rows = [row(name, labels == k + 1) for k, name in enumerate(class_names)]
    return rows + [row("all", torch.ones_like(labels, dtype=torch.bool))]


def table(rows: list[ClassCoverage], threshold: float) -> str:
    lines = [f"{'class':14s} {'objects':>7s}  {f'covered (IoU >= {threshold:g})':>22s}  "
             f"{'positives/object':>16s}  {'median best IoU':>15s}"]
    for r in rows:
        lines.append(f"{r.name:14s} {r.objects:7d}  {100 * r.covered_fraction:21.1f}%  "
                     f"{r.positives_per_object:16.1f}  {r.median_best_iou:15.3f}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=program(f"python -m {__spec__.name}"),
        description="Per class: how many objects have a default box at the matching threshold, how many "
                    "positives training's matcher gives each, and their median best overlap.")
    p.add_argument("--config", default="SSD300_VOC", choices=sorted(PRESETS), help="preset (default boxes)")
    add_data_arguments(p, image_set="trainval")
    p.add_argument("--classes", help="comma-separated class names (default: the data's own, VOC's for VOC)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    cfg = PRESETS[args.config]
    classes = tuple(args.classes.split(",")) if args.classes else None
    try:
        source = open_data(args, classes)
    except (FileNotFoundError, ValueError) as e:  # DatasetError is a ValueError
        return error_exit(e)
    annotations = []
    for i in range(len(source)):
        boxes, labels, _, w, h = source.annotation(i)
        annotations.append((boxes, labels, w, h))
    rows = coverage(cfg, annotations, source.classes)
    print(f"{cfg.name}: {default_boxes(cfg).shape[0]} default boxes, {len(annotations)} images")
    print(table(rows, cfg.match_threshold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
