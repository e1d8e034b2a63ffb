"""What the commands that write a weights file from others (`train.average`, `train.compact`) share: the val
measurement they may make of what they write, and the training log that comes along."""

from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

from ssd import Detector, SSDConfig
from ssd.weights_files import LOG_SUFFIX, beside

from .card import evaluation_fields

__all__ = ["add_val_arguments", "check_val_arguments", "copy_log", "measured_on_val"]


def add_val_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-data", help="VOC folder to evaluate the written weights on, e.g. VOCdevkit/VOC2007")
    p.add_argument("--val-image-set", help="VOC image set to evaluate on, e.g. minival")


def check_val_arguments(args) -> None:
    """ValueError unless --val-data and --val-image-set come together or not at all."""
    if bool(args.val_data) != bool(args.val_image_set):
        raise ValueError("--val-data and --val-image-set go together")


def measured_on_val(model, cfg: SSDConfig, classes, val_data, image_set: str):
    """(the model card's fields of that measurement, the evaluation) of `model` (a copy is evaluated) on a VOC
    image set, difficult objects kept as VOC's evaluation keeps them."""
    from ssd.evaluation import evaluate_detector

    from .sources import open_source

    val = open_source(voc_root=val_data, image_set=image_set, classes=classes, keep_difficult=True)
    evaluation = evaluate_detector(Detector(copy.deepcopy(model), cfg, classes), val, progress=False)
    return evaluation_fields(evaluation), evaluation


def copy_log(source: Path, out: Path) -> None:
    """The training curves that made `source`'s weights, beside `out`, where `source` has them."""
    log = beside(source, LOG_SUFFIX)
    if log.is_file():
        shutil.copyfile(log, beside(out, LOG_SUFFIX))
