"""CPU inference speed: our Detector.detect against torchvision's ssd300_vgg16, in one process, interleaved.

Both are the paper's SSD300 (VGG16, 21 classes, 8732 default boxes) with random weights, confidence threshold
0.01, NMS 0.45, top 200 — the paper's inference settings. Each side gets the same 500x375 photo
(scikit-image's `chelsea`, resized) the way its API expects it:
  ours:        Detector.detect(PIL image)                     -> list[Detection] in image pixels
  torchvision: model([uint8 image as float CHW tensor / 255]) -> its transform, network, post-processing

Also times post-processing alone (decode + threshold + per-class NMS + top-k) on identical-shaped network
outputs: ours `ssd.postprocess.postprocess` vs torchvision's `SSD.postprocess_detections`.
Random weights score every class ~1/21 > 0.01, so NMS runs on its maximum load (400 candidates x 20 classes):
a worst case for post-processing.

    .venv/bin/python bench/inference.py [--runs 15] [--threads N] [--clock wall|cpu] [--profile]

--clock cpu runs everything on one thread and measures that thread's CPU time (time.thread_time): on a machine
shared with other work it is far steadier than wall-clock time, and still compares like with like.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import ssd  # noqa: E402
from ssd.postprocess import postprocess  # noqa: E402


def photo() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.chelsea()).resize((500, 375), Image.BILINEAR)


CLOCK = time.perf_counter


def timed(fn):
    start = CLOCK()
    out = fn()
    return CLOCK() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=15, help="timed runs of each side (interleaved)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: time.perf_counter; cpu: one thread, time.thread_time (steady on a busy machine)")
    p.add_argument("--profile", action="store_true", help="also break our time down by stage")
    args = p.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.thread_time
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from torchvision.models.detection import ssd300_vgg16

    image = photo()
    array = np.array(image)  # writable HxWx3 uint8
    cfg = ssd.SSD300_VOC
    ours = ssd.Detector(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, device="cpu")
    theirs = ssd300_vgg16(num_classes=21, weights=None, weights_backbone=None, score_thresh=0.01).eval()

    def run_ours():
        return ours.detect(image, score_threshold=0.01, nms_threshold=0.45, top_k=200)

    @torch.inference_mode()
    def run_theirs():  # torchvision's API: a list of float CHW tensors in [0, 1]; it resizes and normalises
        return theirs([torch.from_numpy(array).permute(2, 0, 1).float().div(255)])

    # Post-processing alone, both sides fed the *same* logits (our network's) so they do the same NMS work.
    # dense: random weights, every class scores ~1/21 > 0.01, so 20 x 400 candidates reach NMS (worst case);
    # sparse: background logit +8, as a trained model's mostly-background predictions (fewer candidates).
    with torch.inference_mode():
        raw = ours.predict(image)
        images, _ = theirs.transform([torch.from_numpy(array).permute(2, 0, 1).float().div(255)])
        anchors = theirs.anchor_generator(images, list(theirs.backbone(images.tensors).values()))
        sparse_conf = raw.conf.clone()
        sparse_conf[..., 0] += 8.0
    post_cases = {"dense": raw.conf, "sparse": sparse_conf}

    def post_ours(conf):
        @torch.inference_mode()
        def run():
            return ours.postprocess(ssd.RawPrediction(raw.loc, conf, raw.width, raw.height, 0.0), cfg.conf_threshold)
        return run

    def post_theirs(conf):
        @torch.inference_mode()
        def run():
            heads = {"bbox_regression": raw.loc, "cls_logits": conf}
            return theirs.postprocess_detections(heads, anchors, images.image_sizes)
        return run

    groups = [[("ours", run_ours), ("torchvision", run_theirs)]]
    for case, conf in post_cases.items():
        groups.append([(f"ours post {case}", post_ours(conf)), (f"torchvision post {case}", post_theirs(conf))])
    times = {name: [] for group in groups for name, _ in group}
    for i in range(args.warmup + args.runs):
        for group in groups:
            for name, fn in (group if i % 2 == 0 else group[::-1]):  # alternate who goes first
                t, _ = timed(fn)
                if i >= args.warmup:
                    times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    candidates = {case: int((conf.softmax(-1)[..., 1:] > 0.01).sum()) for case, conf in post_cases.items()}

    clock = "CPU time of 1 thread" if args.clock == "cpu" else f"wall clock, {torch.get_num_threads()} threads"
    print(f"SSD300 VOC (random weights), 500x375 photo, score 0.01 / NMS 0.45 / top 200; torch {torch.__version__}; "
          f"{clock}; median of {args.runs} interleaved runs after {args.warmup} warm-up")
    print(f"{'':36s}{'ours':>10s}{'torchvision':>13s}{'ours/tv':>9s}")
    print(f"{'end to end (s/img)':36s}{med['ours']:10.3f}{med['torchvision']:13.3f}"
          f"{med['ours'] / med['torchvision']:9.2f}")
    print(f"{'  min .. max (s)':36s}{min(times['ours']):5.2f}..{max(times['ours']):4.2f}"
          f"{min(times['torchvision']):8.2f}..{max(times['torchvision']):4.2f}")
    for case in post_cases:
        a, b = med[f"ours post {case}"], med[f"torchvision post {case}"]
        label = f"post-processing {case} (ms/img)"
        print(f"{label:36s}{1e3 * a:10.2f}{1e3 * b:13.2f}{a / b:9.2f}")
        print(f"{'  candidates > 0.01 (before top 400)':36s}{candidates[case]:10d}")
    print(f"{'detections returned (end to end)':36s}{len(run_ours()):10d}{len(run_theirs()[0]['boxes']):13d}")

    if args.profile:
        from ssd.image import to_rgb

        stages = {"to_rgb + resize + normalise": [], "network": [], "ssd.postprocess": [], "Detection objects": []}
        with torch.inference_mode():
            for i in range(args.warmup + args.runs):
                t = [CLOCK()]
                x = ours.preprocess([to_rgb(image)])
                t.append(CLOCK())
                loc, conf = ours.model(x)
                t.append(CLOCK())
                (det,) = postprocess(loc, conf, ours.priors, cfg)  # the paper's 0.01, 0.45, top 200
                t.append(CLOCK())
                ours._to_detections(det, image.width, image.height)
                t.append(CLOCK())
                if i >= args.warmup:
                    for k, a, b in zip(stages, t[:-1], t[1:]):
                        stages[k].append(b - a)
        print("ours by stage (ms, median):")
        for k, v in stages.items():
            print(f"  {k:34s}{1e3 * statistics.median(v):9.2f}")


if __name__ == "__main__":
    main()
