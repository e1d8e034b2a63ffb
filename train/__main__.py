"""python -m train — train SSD on VOC- or COCO-format data (single process, or DDP under torchrun).

  python -m train --config SSD300_LITE0_VOC \\
      --data path/to/VOCdevkit/VOC2007 --image-set train --val-image-set val --out runs/demo

Run the same command again to resume from runs/demo/last.ckpt.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from ssd import PRESETS
from ssd.cli import error_exit, program

from .card import schedule_fields
from .cli import shown_command, shown_path
from .engine import (
    CHECKPOINT,
    WEIGHTS,
    Recipe,
    RunError,
    Terminated,
    Trainer,
    speed_up_the_process,
    terminate_as_interrupt,
)


class UsageError(ValueError):
    """Options that do not fit together; reported as one `error:` line, exit status 2."""


# Recipe fields that take one of a few words: a typo must be an error, not a silent default.
RECIPE_CHOICES = {"amp": ("auto", "bf16", "fp16", "off"), "schedule": ("cosine", "multistep", "cyclic"),
                  "depthwise_precision": ("auto", "autocast")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program(f"python -m {__package__}"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--config", default="SSD300_VOC", choices=sorted(PRESETS), help="paper preset")
    m.add_argument("--batch-norm", action="store_true", help="BatchNorm after every conv (training from scratch)")
    m.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = paper); VGG16 base only")
    m.add_argument("--frozen-base-layers", type=int, default=None,
                   help="EfficientNet-Lite base: how many leading layers of [stem, blocks.0, blocks.1, ...] keep "
                        "their ImageNet weights and BatchNorm statistics (default: the preset's)")
    m.add_argument("--frozen-base-batchnorm", action="store_true",
                   help="every BatchNorm of the base keeps the running statistics it starts with while the "
                        "layers train (FrozenBN; folded into the convolutions for EfficientNet-Lite)")
    d = p.add_argument_group("data")
    d.add_argument("--format", choices=["voc", "coco"], default="voc")
    # --data-root is the evaluation tools' spelling of the same folder (train.sources).
    d.add_argument("--data", "--data-root", dest="data",
                   help="VOC: the VOC<year> folder (with JPEGImages, Annotations, ImageSets); "
                        "COCO: the training image folder")
    d.add_argument("--image-set", default="trainval", help="VOC ImageSets/Main/<name>.txt to train on")
    d.add_argument("--ann-file", help="COCO: instances JSON of the training images")
    d.add_argument("--pack", help="train from a training pack written by `python -m train.pack` instead")
    d.add_argument("--val-image-set", help="VOC: image set to evaluate on (e.g. val)")
    d.add_argument("--val-data", help="folder of the validation images (default: --data)")
    d.add_argument("--val-ann-file", help="COCO: instances JSON of the validation images")
    d.add_argument("--classes", help="comma-separated class names (default: the data's own, VOC's for VOC)")
    o = p.add_argument_group("recipe")
    defaults = Recipe()
    for f in fields(Recipe):
        name = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        kind = {"time_budget_s": float, "grad_clip": float, "init_weights": str}.get(
            f.name, type(value) if value is not None else int)
        if isinstance(value, bool):
            o.add_argument(name, action="store_true")
        else:
            o.add_argument(name, type=kind, default=value, choices=RECIPE_CHOICES.get(f.name),
                           help=f"(default {value})")
    p.add_argument("--out", required=True,
                   help="run directory: checkpoint, log.csv (visualize.plots draws it: ssd-plot DIR), weights")
    p.add_argument("--export", help="also write the shipped weights here (fp16 safetensors + .json card + .log.csv "
                                    "training log)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--no-final-eval", action="store_true", help="skip the full val evaluation at the end")
    return p


def load_sources(args):
    """(training dataset, validation dataset or None, one-line description) named by the command line."""
    from .sources import open_source

    classes = tuple(args.classes.split(",")) if args.classes else None
    if args.pack:
        train_source = open_source(pack=args.pack)
        desc = f"pack {args.pack} ({train_source.describe()})"
    elif args.format == "voc":
        if not args.data:
            raise UsageError("--data (the VOC<year> folder) or --pack is required")
        train_source = open_source(voc_root=args.data, image_set=args.image_set, classes=classes)
        desc = f"{shown_path(args.data)} {args.image_set}"
    else:
        if not (args.data and args.ann_file):
            raise UsageError("COCO format needs --data (image folder) and --ann-file (instances JSON)")
        train_source = open_source(coco_ann=args.ann_file, image_dir=args.data, classes=classes)
        desc = f"COCO {args.ann_file}"
    val_source = None
    if args.format == "voc" and args.val_image_set:
        val_root = args.val_data or args.data
        if not val_root:
            raise UsageError("--val-image-set needs --val-data (or --data)")
        # keep_difficult: evaluation ignores difficult objects instead of counting them as misses.
        val_source = open_source(voc_root=val_root, image_set=args.val_image_set, classes=train_source.classes,
                                 keep_difficult=True)
        desc += f"; val {args.val_image_set} ({len(val_source)} images)"
    elif args.format == "coco" and args.val_ann_file:
        val_source = open_source(coco_ann=args.val_ann_file, image_dir=args.val_data or args.data,
                                 classes=train_source.classes)
    desc = f"{desc} ({len(train_source)} training images)"
    return train_source, val_source, desc


def main(argv=None):
    args = build_parser().parse_args(argv)
    process = speed_up_the_process()
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe)})
    from ssd.augment import SSDAugmentation

    preset = PRESETS[args.config]
    if preset.backbone != "vgg16" and (args.batch_norm or args.width != 1.0):
        raise UsageError(f"--batch-norm and --width change the VGG16 base; {args.config} has a {preset.backbone} base")
    train_source, val_source, desc = load_sources(args)
    changes = {} if args.frozen_base_layers is None else {"frozen_base_layers": args.frozen_base_layers}
    if args.frozen_base_batchnorm:
        changes["frozen_base_batchnorm"] = True
    cfg = preset.replace(num_classes=len(train_source.classes), batch_norm=args.batch_norm, width=args.width,
                         **changes)
    if cfg.num_classes != PRESETS[args.config].num_classes:
        cfg = cfg.replace(name=f"{args.config}_{cfg.num_classes}cls")
    transform = SSDAugmentation(size=cfg.image_size, mean=cfg.pixel_mean)
    trainer = Trainer(cfg, recipe, train_source, transform, args.out, val_source, desc, device=args.device)
    if trainer.is_main:
        print(f"[train] {cfg.name} batch_norm={cfg.batch_norm} width={cfg.width} on {desc}; device "
              f"{trainer.device}, world {trainer.world}, amp {trainer.amp_reason}, "
              f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, {process}")
    # The card records how the weights were made (run the same command again to resume or re-export).
    command = shown_command(program(f"python -m {__package__}"), sys.argv[1:] if argv is None else list(argv))
    try:
        trainer.train()
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the engine saved the last completed step first
        if trainer.is_main:
            finish(trainer, args, command, "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C")
        raise
    if trainer.is_main:
        finish(trainer, args, command, "the time budget")  # the only other stop before the schedule's end
    if trainer.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def finish(trainer: Trainer, args, command: str, stopped_by: str):
    """Every stop leaves a complete model: the weights and their card, evaluated on the val data (unless
    --no-final-eval) as at the end of the schedule, whether that was reached or `stopped_by` stopped the run first;
    the card then says how far it got and the command that finishes it. Another Ctrl-C or SIGTERM meanwhile stops
    at once, and the files already exported stay as they were."""
    st, recipe = trainer.state, trainer.recipe
    complete = st.step >= recipe.max_steps
    if not complete:
        print(f"[train] stopped by {stopped_by} at step {st.step} of {recipe.max_steps}: evaluating and exporting "
              "the weights (another Ctrl-C or SIGTERM skips this)")
    try:
        with terminate_as_interrupt():
            evaluation = None if args.no_final_eval else trainer.evaluate()
            if evaluation:
                print(f"[train] val mAP (VOC07 11-point) {evaluation['val_map']:.4f}, "
                      f"area {evaluation['val_map_area']:.4f}")
                if complete:  # a stop's row belongs to the schedule, which a resumed run continues as it was
                    trainer.log_final_evaluation(evaluation)
            schedule = schedule_fields(recipe, st, trainer.steps_per_epoch, stopped_by, command,
                                       trainer.run_dir / CHECKPOINT)
            for path in [trainer.run_dir / WEIGHTS] + ([args.export] if args.export else []):
                print(f"[train] wrote {trainer.export(path, evaluation=evaluation, command=command, **schedule)}")
    except KeyboardInterrupt:
        print("[train] interrupted before the export was complete (the checkpoint is saved)", file=sys.stderr)
        raise


def cli(argv=None) -> int:
    """`python -m train` and the `ssd-train` command: bad data or options, and a run folder or checkpoint that
    cannot be used, give one `error:` line naming the file or option and exit status 2, like train.evaluate and
    train.pack, instead of a traceback."""
    from .datasets import DatasetError

    try:
        main(argv)
    except (DatasetError, UsageError, RunError, FileNotFoundError) as e:
        return error_exit(e)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the engine saved the last completed step first
        print("stopped: the last completed step is saved; run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
