"""Training-step benchmark: our SSD step vs torchvision's, same batch, one process.

    python bench/train.py [--batch 8] [--runs 5] [--width 1.0] [--batch-norm]
    python bench/train.py --config SSD300_LITE0_VOC --batch 16 [--frozen-base-layers 0] [--compare-before]
                          [--compare-autocast-depthwise]
    python bench/train.py --config SSD300_LITE1_VOC --batch 16      (the deeper Lite1 base, same heads)
    python bench/train.py --config SSD384_LITE0_VOC --batch 16      (Lite0 at 384x384; SSD512_LITE0_VOC at 512)

SSD300_VOC (default): both models are the paper's SSD300 (VGG16, 8732 default boxes, 21 classes, random
weights) against torchvision's ssd300_vgg16. SSD300_LITE0_VOC (or SSD300_LITE1_VOC, SSD384/512_LITE0_VOC): our SSD
on EfficientNet-Lite0 (or -Lite1; its ImageNet weights, the preset's frozen layers unless --frozen-base-layers says
otherwise, as training uses it) against torchvision's ssdlite320_mobilenet_v3_large (random weights, 320x320
inputs: its own size; 3234 default boxes).
A step is forward + matching + MultiBox loss with 3:1 hard negatives + backward + SGD update (torchvision's own
transform resizes/normalises; ours normalises uint8 on the device and uses the engine's memory format).

Ours runs the path `python -m train` takes by default on this machine: the engine's memory format, `--amp auto`
(bfloat16 autocast on a CPU with native bfloat16, else float32) and the frozen layers' BatchNorm folded into
their convolutions (ssd.efficientnet_lite.ConvBN), and under bfloat16 the depthwise layers that train faster in
float32 on this CPU run in float32 (timed at start-up, train.amp). --amp, --no-fold and
--depthwise-precision autocast force another path; --compare-before also times the path before the first two
(float32, BatchNorm unfolded), and --compare-autocast-depthwise the path before the third (every depthwise layer
under autocast), in the same alternation, and print the speed-up. torchvision's step is always float32. Runs
alternate between the models; the table reports medians and their ratio, then where our step's time goes
(forward, matching + loss, backward, SGD update). Set OMP_WAIT_POLICY yourself to compare thread policies (ssd
sets PASSIVE unless it is set).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ssd  # noqa: E402
from ssd.backends import cpu_has_native_bf16  # noqa: E402
from ssd.bases import base_network  # noqa: E402
from ssd.efficientnet_lite import ConvBN  # noqa: E402
from ssd.image import normalise  # noqa: E402
from train.amp import (  # noqa: E402
    amp_choice,
    choose_depthwise_precision,
    depthwise_layers,
    set_float32_layers,
)
from train.engine import compute_loss, memory_format  # noqa: E402
from train.processes import speed_up_the_process  # noqa: E402
from train.recipe import Recipe, parameter_groups  # noqa: E402


def cpu_line() -> str:
    """The CPU, its kernels and its bfloat16 hardware: the figures below hold for this CPU only."""
    name, flags = "unknown CPU", set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name"))
        flags = set(next(ln for ln in info.splitlines() if ln.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    extras = [f for f in ("avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return (f"CPU: {name}, {os.cpu_count()} cores, torch kernels {torch.backends.cpu.get_cpu_capability()}, "
            f"native bfloat16: {cpu_has_native_bf16()} ({', '.join(extras) or 'none of avx512_bf16/amx'}); "
            f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}")


@contextmanager
def folding(on: bool):
    before = ConvBN.fold
    ConvBN.fold = on
    try:
        yield
    finally:
        ConvBN.fold = before


def make_batch(batch: int, seed: int = 0, size: int = 300):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    boxes, labels = [], []
    for _ in range(batch):
        n = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 0.6
        wh = 0.1 + torch.rand(n, 2, generator=g) * 0.3
        boxes.append(torch.cat([xy, xy + wh], 1))
        labels.append(torch.randint(1, 21, (n,), generator=g))
    return images, boxes, labels


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-norm", action="store_true")
    p.add_argument("--config", default="SSD300_VOC",
                   choices=["SSD300_VOC"] + sorted(n for n, c in ssd.PRESETS.items()
                                                   if base_network(c.backbone).pretrained))
    p.add_argument("--frozen-base-layers", type=int, default=None, help="Lite: layers kept fixed (default: preset's)")
    p.add_argument("--plain-process", action="store_true",
                   help="without python -m train's process settings (denormals flushed, freed memory kept)")
    p.add_argument("--frozen-base-batchnorm", action="store_true", help="Lite: as python -m train's (FrozenBN)")
    p.add_argument("--memory-format", default="engine", choices=["engine", "nchw", "channels_last"],
                   help="ours: the engine's choice for this config (default), or force one")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"], help="ours: as python -m train --amp")
    p.add_argument("--no-fold", action="store_true", help="ours: BatchNorm of frozen layers not folded")
    p.add_argument("--compare-before", action="store_true",
                   help="also time ours as before (float32, BatchNorm unfolded) and print the speed-up")
    p.add_argument("--depthwise-precision", default="auto", choices=["auto", "autocast"],
                   help="ours: as python -m train --depthwise-precision")
    p.add_argument("--compare-autocast-depthwise", action="store_true",
                   help="also time ours with every depthwise layer under autocast and print the speed-up")
    p.add_argument("--neighbour", type=float, default=0.0, metavar="F",
                   help="time the steps beside a second process busy F of one core (0.25: as the app or a test run)")
    p.add_argument("--profile", action="store_true", help="also profile our step and print its time by kind of op")
    args = p.parse_args()
    process = "plain process" if args.plain_process else speed_up_the_process()  # as python -m train
    from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    if args.config == "SSD300_VOC":
        cfg = ssd.SSD300_VOC.replace(width=args.width, batch_norm=args.batch_norm)
        tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).train()
        tv_name, tv_size, wd = "ssd300_vgg16", 300, 5e-4
    else:
        cfg = ssd.PRESETS[args.config]
        if args.frozen_base_layers is not None:
            cfg = cfg.replace(frozen_base_layers=args.frozen_base_layers)
        cfg = cfg.replace(frozen_base_batchnorm=args.frozen_base_batchnorm)
        tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).train()
        tv_name, tv_size, wd = "ssdlite320_mobilenet_v3_large", 320, 4e-5
    fmt = {"engine": memory_format(torch.device("cpu"), cfg), "nchw": torch.contiguous_format,
           "channels_last": torch.channels_last}[args.memory_format]
    autocast, amp_reason = amp_choice(Recipe(amp=args.amp), torch.device("cpu"))
    fold = not args.no_fold
    ours = ssd.build_ssd(cfg, pretrained_base=True).to(memory_format=fmt).train()  # as the engine
    priors = ssd.default_boxes(cfg)
    criterion = ssd.MultiBoxLoss(cfg)
    opt_ours = torch.optim.SGD(parameter_groups(ours, wd), lr=1e-4, momentum=0.9)
    opt_tv = torch.optim.SGD(tv.parameters(), lr=1e-4, momentum=0.9, weight_decay=wd)
    images, boxes, labels = make_batch(args.batch, size=cfg.image_size)
    tv_images = [im.float() / 255 for im in make_batch(args.batch, size=tv_size)[0]]
    tv_targets = [{"boxes": b * tv_size, "labels": lab} for b, lab in zip(boxes, labels)]

    chosen = []
    if autocast is torch.bfloat16 and args.depthwise_precision == "auto":
        chosen = choose_depthwise_precision(ours, args.batch, cfg.image_size, autocast, fmt)
        amp_reason += f"; {len(chosen)} of {len(depthwise_layers(ours))} depthwise layers in float32"

    def step_ours(dtype=autocast, fold=fold, depthwise_float32=True):
        set_float32_layers(ours, chosen if depthwise_float32 else [])
        with folding(fold):
            loc, conf = compute_loss(ours, criterion, images, boxes, labels, dtype, fmt=fmt)
            opt_ours.zero_grad(set_to_none=True)
            (loc + conf).backward()
            opt_ours.step()

    def step_tv():
        losses = tv(tv_images, tv_targets)
        opt_tv.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt_tv.step()

    ours_name = f"ours {cfg.name}"
    steps = {ours_name: step_ours, tv_name: step_tv}
    before_name = "ours before (fp32, BN unfolded)"
    if args.compare_before:
        steps[before_name] = lambda: step_ours(None, False)
    autocast_name = "ours, depthwise all under autocast"
    if args.compare_autocast_depthwise:
        steps[autocast_name] = lambda: step_ours(depthwise_float32=False)
    times = {name: [] for name in steps}
    with neighbour(args.neighbour):
        for i in range(args.runs + 1):  # the first round is warm-up
            for name, fn in steps.items():
                t = time.perf_counter()
                fn()
                if i:
                    times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(cpu_line() + f"; {process}")
    if args.neighbour:
        print(f"beside a second process busy {args.neighbour:.0%} of one core")
    frozen = (f", frozen base layers {cfg.frozen_base_layers}" + (", base BatchNorm frozen (FrozenBN)"
                                                                  if cfg.frozen_base_batchnorm else "")
              if base_network(cfg.backbone).pretrained else "")
    print(f"{cfg.name} training step, batch {args.batch}{frozen}, memory format "
          f"{'channels_last' if fmt == torch.channels_last else 'NCHW'}; ours: amp {amp_reason}, frozen BatchNorm "
          f"{'folded' if fold else 'unfolded'}"
          + (f", width {args.width} batch_norm {args.batch_norm}" if not base_network(cfg.backbone).pretrained else ""))
    print(f"{'model':<34} {'s/step':>8} {'img/s':>8}")
    for k, v in med.items():
        print(f"{k:<34} {v:8.3f} {args.batch / v:8.2f}")
    print(f"ratio ours/torchvision (time): {med[ours_name] / med[tv_name]:.2f}")
    if args.compare_before:
        print(f"speed-up ours/before: {med[before_name] / med[ours_name]:.2f}x")
    if args.compare_autocast_depthwise:
        print(f"speed-up ours/depthwise all under autocast: {med[autocast_name] / med[ours_name]:.2f}x")
    step_ours()  # leaves the layers as ours runs them, whichever step ran last
    with folding(fold):
        print_breakdown(ours, cfg, priors, opt_ours, images, boxes, labels, args.runs, fmt, autocast)
    if args.profile:
        print_profile(ours, step_ours)


@contextmanager
def neighbour(fraction: float):
    """A second process that works `fraction` of every 20 ms and sleeps the rest, for as long as the block runs."""
    if fraction <= 0:
        yield
        return
    import subprocess

    busy, period = 0.02 * fraction, 0.02
    code = (f"import time\nwhile True:\n t = time.perf_counter()\n while time.perf_counter() - t < {busy}: pass\n"
            f" time.sleep({period - busy})")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def op_kind(name: str, shapes) -> str:
    """The kind of work an aten op does, from its name and, for convolutions, its weight's shape."""
    if "convolution" in name:
        weight = shapes[2 if "backward" in name else 1] if len(shapes) > 2 else None  # (grad,) input, weight
        if not (isinstance(weight, list) and len(weight) == 4):
            return "convolution (other)"
        in_per_group, k = weight[1], weight[-1]
        return "depthwise conv" if in_per_group == 1 else ("1x1 conv" if k == 1 else f"{k}x{k} dense conv")
    if "batch_norm" in name:
        return "BatchNorm"
    if "hardtanh" in name or "clamp" in name:
        return "ReLU6"
    if any(w in name for w in ("copy_", "to_copy", "contiguous", "clone")):
        return "copies and casts"
    if any(w in name for w in ("sort", "log_softmax", "smooth_l1", "nll", "index", "topk", "max", "gather")):
        return "matching and loss"
    return "other"


def print_profile(model, step):
    """Self time per kind of op over three steps (torch.profiler), split into forward and backward."""
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            step()
    table, others = defaultdict(float), defaultdict(float)
    for e in prof.key_averages(group_by_input_shape=True):
        if not e.key.startswith("aten::"):
            continue
        direction = "backward" if "backward" in e.key else "forward"
        kind = op_kind(e.key, e.input_shapes)
        if kind in ("matching and loss", "copies and casts", "other"):
            direction = ""
        table[(direction, kind)] += e.self_cpu_time_total / 3e6
        if kind == "other":
            others[e.key] += e.self_cpu_time_total / 3e6
    total = sum(table.values())
    print("our step by kind of op (torch.profiler self time per step; 'other' includes the SGD update):")
    for (direction, kind), sec in sorted(table.items(), key=lambda kv: -kv[1]):
        print(f"  {(direction + ' ' + kind).strip():<28} {sec:7.3f} s  {100 * sec / total:5.1f} %")
    top = sorted(others.items(), key=lambda kv: -kv[1])[:6]
    print("  other: " + ", ".join(f"{k.removeprefix('aten::')} {v:.3f} s" for k, v in top))


def print_breakdown(model, cfg, priors, opt, images, boxes, labels, runs, fmt, autocast=None):
    """Where our step's time goes: the same step as the engine's, cut into its phases."""
    from ssd import match, multibox_loss

    phases = {"forward": [], "matching + loss": [], "backward": [], "SGD update": []}
    for i in range(runs + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
            loc, conf = model(normalise(images, cfg).contiguous(memory_format=fmt))
        t1 = time.perf_counter()
        m = match(boxes, labels, priors, cfg.match_threshold)
        normalizer = m.positives.sum().float().clamp_min(1)
        loss = sum(multibox_loss(loc, conf, m.loc_targets(priors, cfg.variances), m.labels, cfg.neg_pos_ratio,
                                 normalizer))
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if i:
            for k, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                phases[k].append(b - a)
    med = {k: statistics.median(v) for k, v in phases.items()}
    total = sum(med.values())
    print("where our step's time goes (medians):")
    for k, v in med.items():
        print(f"  {k:<16} {v:7.3f} s  {100 * v / total:5.1f} %")


if __name__ == "__main__":
    main()
