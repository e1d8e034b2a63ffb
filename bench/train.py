"""Training-step benchmark: our SSD step vs torchvision's, same batch, one process.

    python bench/train.py [--batch 8] [--runs 5] [--width 1.0] [--batch-norm]
    python bench/train.py --config SSD300_LITE0_VOC --batch 16

SSD300_VOC (default): both models are the paper's SSD300 (VGG16, 8732 default boxes, 21 classes, random
weights) against torchvision's ssd300_vgg16. SSD300_LITE0_VOC: our SSD300 on EfficientNet-Lite0 (its ImageNet
weights, the preset's frozen layers, as training uses it) against torchvision's ssdlite320_mobilenet_v3_large
(random weights, 320x320 inputs: its own size; 3234 default boxes). A step is forward + matching + MultiBox
loss with 3:1 hard negatives + backward + SGD update (torchvision's own transform resizes/normalises; ours
normalises uint8 on the device and uses the engine's memory format).
Runs alternate between the two models; the table reports medians and their ratio, then where our step's
time goes (forward, matching + loss, backward, SGD update).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ssd  # noqa: E402
from ssd.image import normalise  # noqa: E402
from train.engine import compute_loss, memory_format, parameter_groups  # noqa: E402


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
    p.add_argument("--config", default="SSD300_VOC", choices=["SSD300_VOC", "SSD300_LITE0_VOC"])
    p.add_argument("--memory-format", default="engine", choices=["engine", "nchw", "channels_last"],
                   help="ours: the engine's choice for this config (default), or force one")
    args = p.parse_args()
    from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    if args.config == "SSD300_VOC":
        cfg = ssd.SSD300_VOC.replace(width=args.width, batch_norm=args.batch_norm)
        tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).train()
        tv_name, tv_size, wd = "ssd300_vgg16", 300, 5e-4
    else:
        cfg = ssd.SSD300_LITE0_VOC
        tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).train()
        tv_name, tv_size, wd = "ssdlite320_mobilenet_v3_large", 320, 4e-5
    fmt = {"engine": memory_format(torch.device("cpu"), cfg), "nchw": torch.contiguous_format,
           "channels_last": torch.channels_last}[args.memory_format]
    ours = ssd.build_ssd(cfg, pretrained_base=True).to(memory_format=fmt).train()  # as the engine
    priors = ssd.default_boxes(cfg)
    criterion = ssd.MultiBoxLoss(cfg)
    opt_ours = torch.optim.SGD(parameter_groups(ours, wd), lr=1e-4, momentum=0.9)
    opt_tv = torch.optim.SGD(tv.parameters(), lr=1e-4, momentum=0.9, weight_decay=wd)
    images, boxes, labels = make_batch(args.batch)
    tv_images = [im.float() / 255 for im in make_batch(args.batch, size=tv_size)[0]]
    tv_targets = [{"boxes": b * tv_size, "labels": lab} for b, lab in zip(boxes, labels)]

    def step_ours():
        loc, conf = compute_loss(ours, criterion, images, boxes, labels, fmt=fmt)
        opt_ours.zero_grad(set_to_none=True)
        (loc + conf).backward()
        opt_ours.step()

    def step_tv():
        losses = tv(tv_images, tv_targets)
        opt_tv.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt_tv.step()

    times = {"ours": [], "torchvision": []}
    for i in range(args.runs + 1):  # the first round is warm-up
        for name, fn in (("ours", step_ours), ("torchvision", step_tv)):
            t = time.perf_counter()
            fn()
            if i:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{cfg.name} training step, batch {args.batch}, CPU threads {torch.get_num_threads()}, memory format "
          f"{'channels_last' if fmt == torch.channels_last else 'NCHW'}"
          + (f", ours: width {args.width} batch_norm {args.batch_norm}" if cfg.backbone == "vgg16" else ""))
    print(f"{'model':<32} {'s/step':>8} {'img/s':>8}")
    for k, v in med.items():
        print(f"{(tv_name if k == 'torchvision' else 'ours ' + cfg.name):<32} {v:8.3f} {args.batch / v:8.2f}")
    print(f"ratio ours/torchvision (time): {med['ours'] / med['torchvision']:.2f}")
    print_breakdown(ours, cfg, priors, opt_ours, images, boxes, labels, args.runs, fmt)


def print_breakdown(model, cfg, priors, opt, images, boxes, labels, runs, fmt):
    """Where our step's time goes: the same step as the engine's, cut into its phases."""
    from ssd import match, multibox_loss

    phases = {"forward": [], "matching + loss": [], "backward": [], "SGD update": []}
    for i in range(runs + 1):
        t0 = time.perf_counter()
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
