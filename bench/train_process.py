"""What `python -m train`'s process settings (train.processes.speed_up_the_process) are worth on real data: the
engine's own step on a training pack's augmented batches, with the settings off and on in turn, one step each,
in one process.

    python bench/train_process.py --pack runs/voc07_tmm.pack [--init-weights W (the shipped default)]
                                  [--frozen-base-layers 4] [--steps 48] [--compare-before]

With --compare-before it times, alternating in the same way, the engine's default step against the step as it
was before issue 21's changes: float32, the frozen layers' BatchNorm unfolded, glibc's and the CPU's defaults.

The settings are process-wide, so the comparison toggles them between steps: denormals flushed to zero
(torch.set_flush_denormal) and freed memory kept for the next step (no block mmapped on its own, no heap trim:
ssd.heap). bench/train.py's fixed random batch does not show the first (random images and targets give no
denormal gradients), so this one trains on the pack as the campaign does, from trained weights. Prints the
median step of each of the four combinations and the speed-up of both against neither.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ssd  # noqa: E402
from ssd.augment import SSDAugmentation  # noqa: E402
from ssd.bases import base_network  # noqa: E402
from ssd.detector import DEFAULT_WEIGHTS  # noqa: E402
from ssd.efficientnet_lite import ConvBN  # noqa: E402
from ssd.heap import FREED_MEMORY_KEPT, GLIBC_DEFAULTS, glibc  # noqa: E402
from train.engine import Trainer  # noqa: E402
from train.pack import PackDataset  # noqa: E402
from train.recipe import Recipe  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", required=True, help="a training pack (python -m train.pack)")
    p.add_argument("--config", default="SSD300_LITE0_VOC",
                   choices=sorted(n for n, c in ssd.PRESETS.items() if base_network(c.backbone).pretrained))
    p.add_argument("--init-weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--frozen-base-layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=48, help="steps measured (shared equally by the paths timed)")
    p.add_argument("--compare-before", action="store_true",
                   help="time the default step against the one before issue 21 (fp32, BN unfolded, no settings)")
    args = p.parse_args()
    libc = glibc()
    if libc is None:
        sys.exit("error: needs glibc (mallopt)")

    cfg = ssd.PRESETS[args.config].replace(frozen_base_layers=args.frozen_base_layers)
    recipe = Recipe(batch_size=args.batch, lr=0.003, warmup_steps=1, max_steps=10_000, grad_clip=10.0, workers=1,
                    init_weights=args.init_weights)
    trainer = Trainer(cfg, recipe, PackDataset(args.pack), SSDAugmentation.for_config(cfg),
                      Path(tempfile.mkdtemp()), device="cpu")
    trainer.ddp.train()

    # (denormals flushed, freed memory kept, autocast dtype, frozen BatchNorm folded)
    now = (True, True, trainer.autocast, True)  # python -m train's step

    def settings(flush: bool, keep: bool, autocast, fold: bool):
        torch.set_flush_denormal(flush)
        for param, value in (FREED_MEMORY_KEPT if keep else GLIBC_DEFAULTS).items():
            libc.mallopt(param, value)
        trainer.autocast = autocast  # what _step runs the forward pass under
        ConvBN.fold = fold

    if args.compare_before:
        combos = {"before (fp32, BN unfolded, no settings)": (False, False, None, False), "python -m train": now}
    else:
        combos = {"neither": (False, False, trainer.autocast, True),
                  "denormals flushed": (True, False, trainer.autocast, True),
                  "freed memory kept": (False, True, trainer.autocast, True), "both (python -m train)": now}
    times = {name: [] for name in combos}
    batches = iter(trainer._loader(0, 0))
    for i in range(args.steps + len(combos)):  # the first round is warm-up
        name = list(combos)[i % len(combos)]
        settings(*combos[name])
        images, boxes, labels = next(batches)
        t = time.perf_counter()
        trainer._step(images, boxes, labels)
        trainer.scheduler.step()
        if i >= len(combos):
            times[name].append(time.perf_counter() - t)
    print(f"{cfg.name}, frozen base layers {cfg.frozen_base_layers}, batch {args.batch}, from {args.init_weights}; "
          f"amp {trainer.amp_reason}; {torch.get_num_threads()} threads")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, m in med.items():
        print(f"{name:<40} {m:6.3f} s/step  {args.batch / m:6.2f} img/s")
    first, last = list(med)[0], list(med)[-1]
    print(f"speed-up {'python -m train/before' if args.compare_before else 'both/neither'}: "
          f"{med[first] / med[last]:.2f}x")


if __name__ == "__main__":
    main()
