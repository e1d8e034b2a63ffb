"""Stochastic weight averaging (SWA; Izmailov et al., 2018): the mean of several weights files of one network as
a new weights file, with its model card and training log, evaluated like a training run's when val data is given.

    python -m train.average runs/swa/snapshots/step_*.safetensors --out runs/swa/average.safetensors \\
        [--pack runs/voc07_tmm_384.pack --batchnorm-images 1024] \\
        [--val-data VOCdevkit/VOC2007 --val-image-set minival]

The files are the snapshots a cyclic run writes at the end of each cycle (`python -m train --schedule cyclic
--snapshot-every N`): points around one minimum, whose mean lies nearer its centre than any of them.
The BatchNorm statistics of averaged weights are not the average of the statistics: with training data (`--pack`,
or `--data` and `--image-set`), the BatchNorms of the layers that train are measured again on that many augmented
training images, as training would see them; frozen layers keep theirs (the same in every snapshot). Without
training data the averaged statistics are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

from ssd import SSDConfig, build_ssd, export_weights
from ssd.card import ModelCard
from ssd.cli import error_exit, program
from ssd.image import normalise
from ssd.weights_files import read_weights

from .cli import shown_command
from .engine import memory_format
from .weights_command import add_val_arguments, check_val_arguments, copy_log, measured_on_val

__all__ = ["average_weights", "recompute_batchnorm", "main"]


def average_weights(paths) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """The mean of the floating-point tensors of `paths` (float32, summed in float64), and the last file's card.
    Integer tensors (BatchNorm's batch counts) are the last file's. Files of another network, config or classes
    are refused: their mean is no network."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no weights files to average")
    total, first_card = None, None
    for path in paths:
        tensors, card = read_weights(path)
        if first_card is None:
            first_card, total = card, {k: v.double() if v.is_floating_point() else v for k, v in tensors.items()}
            continue
        for key in ("config", "classes"):
            if getattr(card, key) != getattr(first_card, key):
                raise ValueError(f"{path}: its {key} differs from {paths[0]}'s; only one network's weights average")
        if tensors.keys() != total.keys() or any(tensors[k].shape != total[k].shape for k in total):
            raise ValueError(f"{path}: its tensors differ from {paths[0]}'s in names or shapes")
        for k, v in tensors.items():
            total[k] = total[k] + v.double() if v.is_floating_point() else v
    mean = {k: (v / len(paths)).float() if v.is_floating_point() else v for k, v in total.items()}
    return mean, card


def training_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorms whose statistics training updates: those still in training mode after `model.train()` (the
    frozen layers stay in eval mode)."""
    model.train()
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, cfg: SSDConfig, batches) -> int:
    """Replace the running statistics of the BatchNorms that train by their exact mean over `batches` (uint8
    image batches [B, 3, S, S], as training feeds them); returns the number of images seen. The model is left in
    eval mode."""
    fmt = memory_format(next(model.parameters()).device, cfg)  # training's: NHWC for the depthwise bases
    model.to(memory_format=fmt)
    norms = training_batchnorms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches, not an exponential one
    seen = 0
    try:
        for images in batches:
            model(normalise(images, cfg).contiguous(memory_format=fmt))
            seen += images.shape[0]
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return seen


def training_batches(source, cfg: SSDConfig, images: int, batch_size: int = 16, seed: int = 0):
    """`images` augmented training images (SSDAugmentation, as training draws them) in batches, in a seeded order."""
    from ssd.augment import SSDAugmentation

    from .datasets import DetectionDataset, collate

    dataset = DetectionDataset(source, SSDAugmentation.for_config(cfg), seed=seed)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:images].tolist()
    for start in range(0, len(order), batch_size):
        yield collate([dataset[i] for i in order[start:start + batch_size]])[0]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program(f"python -m {__spec__.name}"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="+", help="weights files written by training (snapshots of one run)")
    p.add_argument("--out", required=True, help="the averaged weights (.safetensors; card and log beside it)")
    p.add_argument("--pack", help="training pack for the BatchNorm statistics")
    p.add_argument("--data", "--data-root", dest="data",
                   help="VOC folder of the training images for the BatchNorm statistics (with --image-set)")
    p.add_argument("--image-set", default="trainval", help="VOC image set of --data (default: trainval)")
    p.add_argument("--batchnorm-images", type=int, default=1024,
                   help="how many augmented training images measure the BatchNorm statistics (default 1024)")
    add_val_arguments(p)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .datasets import DatasetError
    from .sources import open_source

    try:
        check_val_arguments(args)
        state, card = average_weights(args.weights)
        cfg, classes = card.ssd_config(), card.classes
        model = build_ssd(cfg)
        model.load_state_dict(state)
        source = open_source(pack=args.pack, voc_root=args.data, image_set=args.image_set, classes=classes)
        batchnorm = "the snapshots' statistics averaged"
        if source is not None:
            seen = recompute_batchnorm(model, cfg, training_batches(source, cfg, args.batchnorm_images))
            batchnorm = f"measured again on {seen} augmented training images"
        print(f"[average] {len(args.weights)} files of {cfg.name}; BatchNorm: {batchnorm}")
        fields = {}
        if args.val_data:
            fields, evaluation = measured_on_val(model, cfg, classes, args.val_data, args.val_image_set)
            print(f"[average] val mAP (VOC07 11-point) {evaluation.map_11pt:.4f}, area {evaluation.map_area:.4f}")
    except (FileNotFoundError, ValueError, DatasetError) as e:
        return error_exit(e)
    words = sys.argv[1:] if argv is None else list(argv)
    # The last snapshot's card, but for what it measured: the average is measured here, or not at all.
    card = dataclasses.replace(
        card, val=None, score_threshold=None, complete=True,
        averaged={"weights": [Path(w).name for w in args.weights], "batchnorm": batchnorm},
        command=shown_command(program(f"python -m {__spec__.name}"), words))
    out = export_weights(model, cfg, classes, args.out, card=card, **fields)
    copy_log(Path(args.weights[-1]), out)  # the training curves that led to the last snapshot
    print(f"[average] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
