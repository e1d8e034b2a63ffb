"""python -m train — train SSD on your photos, labelled as VOC, COCO or YOLO data (single process, or DDP under
torchrun).

  python -m train --data my_photos --out runs/mine                     (VOC or YOLO folder: found from the folder)
  python -m train --data my_photos/images --ann-file labels.json --out runs/mine                          (COCO)

By default it fine-tunes the shipped network (SSD384_LITE0_VOC) from the shipped weights, the classes taken from
the data (new classes get fresh heads), with a batch size, learning rate and length chosen for the data's size,
and holds out a tenth of the images to measure it when no validation data is named. Run the same command again to
resume from runs/mine/last.ckpt.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from ssd import PRESETS, VOC_CLASSES
from ssd.bases import base_network
from ssd.cli import error_exit, program
from ssd.detector import DEFAULT_WEIGHTS

from .card import schedule_fields
from .checkpoint import CHECKPOINT
from .cli import shown_command, shown_path
from .engine import WEIGHTS, Trainer
from .errors import RunError
from .init_weights import top_down_of
from .processes import speed_up_the_process
from .recipe import Recipe
from .signals import Terminated, terminate_as_interrupt
from .sources import add_data_arguments, find_data, open_source


class UsageError(ValueError):
    """Options that do not fit together; reported as one `error:` line, exit status 2."""


DEFAULT_CONFIG = "SSD384_LITE0_VOC"  # the shipped network, whose weights a run starts from by default
DEFAULT_EPOCHS = 30
# Recipe fields whose default follows the data (`sized_recipe`) unless given.
SIZED = {
    "batch_size": "(default: 16 for 400 images or more, 8 from 64, else 4)",
    "lr": "(default: 0.004 per 16 images of a batch when fine-tuning the shipped weights, 0.015 from ImageNet)",
    "warmup_steps": "(default: a tenth of the run, at most 200 steps)",
    "max_steps": f"(default: {DEFAULT_EPOCHS} epochs, see --epochs)",
    "weight_decay": "(default: 4e-5 for the EfficientNet-Lite bases, 5e-4 for VGG16)",
    "init_weights": f"weights to start from (default for {DEFAULT_CONFIG}: the shipped ones, {DEFAULT_WEIGHTS.name}; "
                    "'none': the ImageNet base with fresh extra layers and heads)",
}
# Recipe fields that take one of a few words: a typo must be an error, not a silent default.
RECIPE_CHOICES = {"amp": ("auto", "bf16", "fp16", "off"), "schedule": ("cosine", "multistep", "cyclic"),
                  "depthwise_precision": ("auto", "autocast")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program(f"python -m {__package__}"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--config", default=DEFAULT_CONFIG, choices=sorted(PRESETS),
                   help=f"network preset (default {DEFAULT_CONFIG}, the shipped one; SSD300_VOC is the paper's VGG16)")
    m.add_argument("--batch-norm", action="store_true", help="BatchNorm after every conv (training from scratch)")
    m.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = paper); VGG16 base only")
    m.add_argument("--frozen-base-layers", type=int, default=None,
                   help="EfficientNet-Lite base: how many leading layers of [stem, blocks.0, blocks.1, ...] keep "
                        "their ImageNet weights and BatchNorm statistics (default: the preset's)")
    m.add_argument("--top-down", type=int, default=None,
                   help="how many of the leading source layers the heads see fused with the next coarser one "
                        "(FPN/FSSD's top-down path, not in the paper; it starts at zero, so weights trained without it "
                        "load and start where they were; default: the --init-weights file's, else 0)")
    m.add_argument("--frozen-base-batchnorm", action="store_true",
                   help="every BatchNorm of the base keeps the running statistics it starts with while the "
                        "layers train (FrozenBN; folded into the convolutions for EfficientNet-Lite)")
    d = p.add_argument_group("data")
    d.add_argument("--format", choices=["auto", "voc", "coco", "yolo"], default="auto",
                   help="auto (default): COCO when --ann-file is given, else VOC or YOLO as the folder shows")
    add_data_arguments(d, image_set=None, image_dir=False,
                       image_set_help="VOC ImageSets/Main/<name>.txt to train on (default: trainval, else train, "
                                      "else every annotation); YOLO: the data.yaml entry (default train)")
    d.add_argument("--val-image-set", help="VOC: image set to evaluate on (e.g. val)")
    d.add_argument("--val-data", help="folder of the validation images (default: --data)")
    d.add_argument("--val-ann-file", help="COCO: instances JSON of the validation images")
    d.add_argument("--classes", help="comma-separated class names (default: the data's own)")
    d.add_argument("--holdout", type=float, default=0.1,
                   help="without validation data, the part of the training images held out to measure the model "
                        "(seeded; default 0.1, 0: none)")
    o = p.add_argument_group("recipe")
    defaults = Recipe()
    for f in fields(Recipe):
        name = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        kind = {"time_budget_s": float, "grad_clip": float, "init_weights": str}.get(
            f.name, type(value) if value is not None else int)
        if isinstance(value, bool):
            o.add_argument(name, action="store_true")
        elif f.name in SIZED:
            o.add_argument(name, type=kind, default=None, help=SIZED[f.name])
        else:
            o.add_argument(name, type=kind, default=value, choices=RECIPE_CHOICES.get(f.name),
                           help=f"(default {value})")
    o.add_argument("--epochs", type=float, help="the length in passes over the training images, instead of "
                                                "--max-steps (default: 30 epochs when neither is given)")
    p.add_argument("--out", required=True,
                   help="run directory: checkpoint, log.csv (visualize.plots draws it: ssd-plot DIR), weights")
    p.add_argument("--export", help="also write the shipped weights here (fp16 safetensors + .json card + .log.csv "
                                    "training log)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--no-final-eval", action="store_true", help="skip the full val evaluation at the end")
    return p


def load_sources(args):
    """(training dataset, validation dataset or None, one-line description) named by the command line."""
    classes = tuple(args.classes.split(",")) if args.classes else None
    if args.pack:
        train_source = open_source(pack=args.pack)
        desc = f"pack {args.pack} ({train_source.describe()})"
    else:
        if not args.data_root:
            raise UsageError("--data (your photos' folder: VOC, YOLO, or COCO images with --ann-file) or --pack is "
                             "required")
        kind = args.format if args.format != "auto" else ("coco" if args.coco_ann else None)
        if kind == "coco" and not args.coco_ann:
            raise UsageError("COCO format needs --data (image folder) and --ann-file (instances JSON)")
        if kind == "voc":
            train_source = open_source(voc_root=args.data_root, image_set=args.image_set or "trainval", classes=classes)
            found = f"VOC: {args.data_root}, image set {args.image_set or 'trainval'}"
        else:
            train_source, found = find_data(args.data_root, args.coco_ann if kind != "yolo" else None,
                                            image_set=args.image_set, split=args.image_set, classes=classes)
            if kind == "yolo" and not found.startswith("YOLO"):
                raise UsageError(f"--format yolo, but {args.data_root} holds {found.split(':')[0]} data")
        print(f"[train] data: {shown_path(found)}; classes {', '.join(train_source.classes)}")
        desc = f"{shown_path(args.data_root)} {args.image_set or ''}".strip()
    val_source = open_validation(args, train_source)
    if val_source is None and args.holdout > 0 and not args.no_final_eval:
        train_source, val_source = hold_out(train_source, args.holdout, args.seed)
        print(f"[train] no validation data named: {len(val_source)} of the {len(train_source) + len(val_source)} "
              f"training images (a seeded {args.holdout:.0%}) are held out to measure the model (--holdout 0: none)")
        desc += f"; val: {len(val_source)} held-out images"
    elif val_source is not None:
        desc += f"; val {args.val_image_set or args.val_ann_file} ({len(val_source)} images)"
    desc = f"{desc} ({len(train_source)} training images)"
    return train_source, val_source, desc


def open_validation(args, train_source):
    if args.val_image_set:
        val_root = args.val_data or args.data_root
        if not val_root:
            raise UsageError("--val-image-set needs --val-data (or --data)")
        # keep_difficult: evaluation ignores difficult objects instead of counting them as misses.
        return open_source(voc_root=val_root, image_set=args.val_image_set, classes=train_source.classes,
                           keep_difficult=True)
    if args.val_ann_file:
        return open_source(coco_ann=args.val_ann_file, image_dir=args.val_data or args.data_root,
                           classes=train_source.classes)
    return None


def hold_out(source, part: float, seed: int):
    """(the training images less a seeded `part` of them, those held out), at least one image each."""
    import numpy as np

    from .checks import SubsetSource

    if len(source) < 2:
        raise UsageError(f"{len(source)} training image: too few to hold any out; name validation data or "
                         "give --holdout 0")
    order = np.random.default_rng(seed).permutation(len(source))
    n = min(len(source) - 1, max(1, round(part * len(source))))
    return SubsetSource(source, sorted(order[n:].tolist())), SubsetSource(source, sorted(order[:n].tolist()))


def sized_recipe(args, images: int, config: str) -> Recipe:
    """The recipe, each field not given on the command line chosen for `images` training images: fine-tuning
    (from the shipped weights, which a run of the shipped network starts from by default) at a lower rate than a
    training of fresh heads, scaled with the batch; `--epochs` (default 30) as steps."""
    values = {f.name: getattr(args, f.name) for f in fields(Recipe)}
    if values["init_weights"] is None and config == DEFAULT_CONFIG:
        values["init_weights"] = str(DEFAULT_WEIGHTS)
    elif values["init_weights"] in ("none", ""):
        values["init_weights"] = None
    if values["batch_size"] is None:
        values["batch_size"] = 16 if images >= 400 else 8 if images >= 64 else 4
    if values["lr"] is None:
        values["lr"] = (0.004 if values["init_weights"] else 0.015) * values["batch_size"] / 16
    if values["max_steps"] is None:
        per_epoch = max(1, -(-images // values["batch_size"]))
        values["max_steps"] = max(1, round((args.epochs or DEFAULT_EPOCHS) * per_epoch))
    elif args.epochs is not None:
        raise UsageError("give the length once: --epochs or --max-steps")
    if values["weight_decay"] is None:  # the base's own: EfficientNet's for its bases, the paper's for VGG16
        values["weight_decay"] = base_network(PRESETS[config].backbone).weight_decay
    if values["warmup_steps"] is None:
        values["warmup_steps"] = min(200, values["max_steps"] // 10)
    return Recipe(**values)


def main(argv=None):
    args = build_parser().parse_args(argv)
    process = speed_up_the_process()
    from ssd.augment import SSDAugmentation

    preset = PRESETS[args.config]
    if base_network(preset.backbone).pretrained and (args.batch_norm or args.width != 1.0):
        raise UsageError(f"--batch-norm and --width change a base trained from scratch (VGG16); {args.config} "
                         f"has a {preset.backbone} base")
    train_source, val_source, desc = load_sources(args)
    recipe = sized_recipe(args, len(train_source), args.config)
    print(f"[train] recipe for {len(train_source)} training images: batch {recipe.batch_size}, lr {recipe.lr:g}, "
          f"{recipe.max_steps} steps ({recipe.max_steps * recipe.batch_size / len(train_source):.1f} epochs), "
          f"warmup {recipe.warmup_steps}, from "
          f"{shown_path(recipe.init_weights) if recipe.init_weights else 'the ImageNet base'}")
    changes = {} if args.frozen_base_layers is None else {"frozen_base_layers": args.frozen_base_layers}
    if args.frozen_base_batchnorm:
        changes["frozen_base_batchnorm"] = True
    # Without --top-down, a fine-tune keeps the path of the file it starts from (the shipped file has one).
    changes["top_down"] = args.top_down if args.top_down is not None else top_down_of(recipe.init_weights, preset)
    try:
        cfg = preset.replace(num_classes=len(train_source.classes), batch_norm=args.batch_norm, width=args.width,
                             **changes)
    except ValueError as e:  # e.g. a --top-down past the last source layer
        raise UsageError(str(e)) from None
    if tuple(train_source.classes) != VOC_CLASSES:  # the network's name must not promise VOC's classes
        cfg = cfg.replace(name=f"{args.config.removesuffix('_VOC')}_{cfg.num_classes}cls")
    transform = SSDAugmentation.for_config(cfg)
    trainer = Trainer(cfg, recipe, train_source, transform, args.out, val_source, desc, device=args.device)
    if trainer.is_main:
        print(f"[train] {cfg.name} batch_norm={cfg.batch_norm} width={cfg.width} top_down={cfg.top_down} on {desc}; "
              f"device {trainer.device}, world {trainer.world}, amp {trainer.amp_reason}, "
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
