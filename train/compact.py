"""A weights file stored in int8 (`ssd.weight_storage`): each convolution's weight as int8 with a float32 scale
per output channel, the rest in float16, for about half the size of training's float16 export; the model card
and training log come along.

    python -m train.compact runs/l2b/weights.safetensors --out ssd/weights/ssd384_lite2_voc07.safetensors \\
        [--val-data VOCdevkit/VOC2007 --val-image-set minival]

The rounding changes what the network predicts a little, so the card's val measurement is the compact file's own
where val data is given; otherwise the card keeps the source file's and says so (`storage.val`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shutil
import sys
from pathlib import Path

import torch

from ssd import Detector, build_ssd, export_weights
from ssd.cli import error_exit
from ssd.weight_storage import stored, unpacked
from ssd.weights_files import LOG_SUFFIX, beside, read_weights

from .card import evaluation_fields

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.compact", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, help="the weights file (.safetensors, its .json card beside it)")
    p.add_argument("--out", type=Path, required=True, help="the int8 weights file to write (its card beside it)")
    p.add_argument("--val-data", help="VOC folder to measure the compact file on, e.g. VOCdevkit/VOC2007")
    p.add_argument("--val-image-set", help="VOC image set to measure it on, e.g. minival")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .datasets import DatasetError
    from .sources import open_source

    try:
        if bool(args.val_data) != bool(args.val_image_set):
            raise ValueError("--val-data and --val-image-set go together")
        if args.out.resolve() == args.weights.resolve():
            raise ValueError("--out is the weights file itself: write the compact file beside it")
        state, card = read_weights(args.weights)
        cfg, classes = card.ssd_config(), card.classes
        model = build_ssd(cfg)
        # The network as the compact file will hold it (storing it again rounds nothing more).
        model.load_state_dict(unpacked(stored(state, torch.int8)))
        storage = {"dtype": "int8 per output channel (weights of 2+ dimensions), float16 (the rest)",
                   "source": args.weights.name, "val": "the source file's"}
        fields = {}
        if args.val_data:
            from ssd.evaluation import evaluate_detector

            val = open_source(voc_root=args.val_data, image_set=args.val_image_set, classes=classes,
                              keep_difficult=True)
            evaluation = evaluate_detector(Detector(copy.deepcopy(model), cfg, classes, device="cpu",
                                                    card=card, backend="torch"), val, progress=False)
            before = card.val.map_area if card.val else None
            print(f"[compact] val mAP (area) {evaluation.map_area:.4f}"
                  + (f"; the source file's card says {before:.4f}" if before is not None else ""))
            fields, storage["val"] = evaluation_fields(evaluation), f"this file's, on {args.val_image_set}"
        out = export_weights(model, cfg, classes, args.out, dtype=torch.int8,
                             card=dataclasses.replace(card, storage=storage), **fields)
    except (FileNotFoundError, ValueError, DatasetError) as e:
        return error_exit(e)
    log = beside(args.weights, LOG_SUFFIX)
    if log.is_file():  # the training curves that made these weights
        shutil.copyfile(log, beside(out, LOG_SUFFIX))
    size = out.stat().st_size
    print(f"[compact] wrote {out}: {size / 1e6:.1f} MB, {size / args.weights.stat().st_size:.2f}x {args.weights.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
