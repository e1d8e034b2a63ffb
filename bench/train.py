"""Training-step benchmark: our SSD300 step vs torchvision's ssd300_vgg16 step, same batch, one process.

    python bench/train.py [--batch 8] [--runs 5] [--width 1.0] [--batch-norm]

Both models are the paper's SSD300 (VGG16, 8732 default boxes, 21 classes, random weights). A step is
forward + matching + MultiBox loss with 3:1 hard negatives + backward + SGD update, on 300x300 images
(torchvision's own transform resizes/normalises; ours normalises uint8 on the device and uses NCHW on the
CPU, as the engine does).
Runs alternate between the two models; the table reports medians and their ratio.
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
from train.engine import compute_loss, memory_format, parameter_groups  # noqa: E402


def make_batch(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, 300, 300), dtype=torch.uint8, generator=g)
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
    args = p.parse_args()
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    cfg = ssd.SSD300_VOC.replace(width=args.width, batch_norm=args.batch_norm)
    ours = ssd.build_ssd(cfg).to(memory_format=memory_format(torch.device("cpu"))).train()  # as the engine
    priors = ssd.default_boxes(cfg)
    opt_ours = torch.optim.SGD(parameter_groups(ours, 5e-4), lr=1e-4, momentum=0.9)
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).train()
    opt_tv = torch.optim.SGD(tv.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    images, boxes, labels = make_batch(args.batch)
    tv_images = [im.float() / 255 for im in images]
    tv_targets = [{"boxes": b * 300, "labels": lab} for b, lab in zip(boxes, labels)]

    def step_ours():
        loc, conf = compute_loss(ours, cfg, priors, images, boxes, labels)
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
    print(f"SSD300 training step, batch {args.batch}, CPU threads {torch.get_num_threads()}, "
          f"ours: width {args.width} batch_norm {args.batch_norm}")
    print(f"{'model':<12} {'s/step':>8} {'img/s':>8}")
    for k, v in med.items():
        print(f"{k:<12} {v:8.3f} {args.batch / v:8.2f}")
    print(f"ratio ours/torchvision (time): {med['ours'] / med['torchvision']:.2f}")


if __name__ == "__main__":
    main()
