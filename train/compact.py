"""A weights file stored in int8 (`ssd.weight_storage`): each convolution's weight as int8 with a float32 scale
per output channel, the rest in float16, for about half the size of training's float16 export; the model card
and training log come along.

    python -m train.compact runs/l2b/weights.safetensors --out ssd/weights/ssd384_lite2_voc07.safetensors \\
        [--val-data VOCdevkit/VOC2007 --val-image-set minival]

The rounding changes what the network predicts a little, so the card holds no val measurement but the compact
file's own (with --val-data); without it, the source's recommended score threshold is kept and the card says
whose it is (`score_threshold_basis`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from ssd import build_ssd, export_weights
from ssd.cli import error_exit, program
from ssd.weight_storage import stored, unpacked
from ssd.weights_files import read_weights

from .cli import shown_command
from .weights_command import add_val_arguments, check_val_arguments, copy_log, measured_on_val

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program(f"python -m {__spec__.name}"), description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, help="the weights file (.safetensors, its .json card beside it)")
    p.add_argument("--out", type=Path, required=True, help="the int8 weights file to write (its card beside it)")
    add_val_arguments(p)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .datasets import DatasetError

    try:
        check_val_arguments(args)
        if args.out.resolve() == args.weights.resolve():
            raise ValueError("--out is the weights file itself: write the compact file beside it")
        state, card = read_weights(args.weights)
        cfg, classes = card.ssd_config(), card.classes
        model = build_ssd(cfg)
        # The network as the compact file will hold it (storing it again rounds nothing more).
        model.load_state_dict(unpacked(stored(state, torch.int8)))
        if args.val_data:
            fields, evaluation = measured_on_val(model, cfg, classes, args.val_data, args.val_image_set)
            before = card.val.map_area if card.val else None
            print(f"[compact] val mAP (area) {evaluation.map_area:.4f}"
                  + (f"; {args.weights.name}'s card says {before:.4f}" if before is not None else ""))
            fields["score_threshold_basis"] = None
        else:  # the source's measurement is not this file's; its threshold still serves, said to be its
            fields = {"val": None, "score_threshold_basis": (
                f"{args.weights.name}'s (before int8 storage): "
                + (card.score_threshold_basis or "best F1 on its val images"))}
    except (FileNotFoundError, ValueError, DatasetError) as e:
        return error_exit(e)
    words = sys.argv[1:] if argv is None else list(argv)
    # `command` stays the training's (the Model tab reads its data from it); this command goes with the storage.
    card = dataclasses.replace(card, storage={"source": args.weights.name,
                                              "command": shown_command(program(f"python -m {__spec__.name}"), words)})
    out = export_weights(model, cfg, classes, args.out, dtype=torch.int8, card=card, **fields)
    copy_log(args.weights, out)
    size = out.stat().st_size
    print(f"[compact] wrote {out}: {size / 1e6:.1f} MB, {size / args.weights.stat().st_size:.2f}x {args.weights.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
