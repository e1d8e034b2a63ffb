"""CPU end-to-end detect latency (a JPEG file in, detections out), ours against torchvision, in one process.

Two pairs, all with random weights and the same post-processing settings (score 0.01, NMS 0.45, top 200, at
most 400 candidates per class): random weights score every class about 1/21 > 0.01, so NMS works at its
maximum load on both sides.
  Lite0:  our SSD300-Lite0 (torch eager, torch-bf16, onnxruntime)  vs  torchvision ssdlite320_mobilenet_v3_large
  VGG16:  our SSD300-VGG16 (torch eager, torch-bf16, onnxruntime)  vs  torchvision ssd300_vgg16
The ratios are against torchvision in float32, its default. Like for like, torchvision is also run under
bfloat16 autocast, against our torch-bf16 (the rows marked "bf16 autocast"). bfloat16 is fast only on CPUs that
multiply it in hardware (AVX512-BF16, AMX): the header says whether this one does.
Each side gets the same 500x375 JPEG (scikit-image's `chelsea`) the way its API expects it:
  ours:        Detector.detect(path)           -> JPEG decode (PIL), resize, graph, NMS, Detection objects
  torchvision: model([decode_jpeg(file) / 255]) -> its transform, network, post-processing
Runs are interleaved (who goes first alternates) at each thread count; the median is reported. Also: our
post-processing alone against torchvision's on the same network outputs, and the shipped Lite0 weights at
their recommended score threshold (a trained model's real load; no torchvision counterpart).

    python bench/inference.py [--runs 15] [--threads 1 2] [--pairs lite0 vgg16]
    python bench/inference.py --defaults [--candidate runs/l2b/weights.safetensors]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import ssd  # noqa: E402
from ssd.backends import cpu_has_native_bf16  # noqa: E402
from ssd.image import normalise  # noqa: E402
from ssd.postprocess import InferenceSettings, postprocess  # noqa: E402
from ssd.weights_files import CARD_SUFFIX, beside  # noqa: E402

SETTINGS = dict(score_threshold=0.01, nms_threshold=0.45, top_k=200)


def photo_file(folder: Path) -> Path:
    import skimage.data

    path = folder / "chelsea.jpg"
    Image.fromarray(skimage.data.chelsea()).resize((500, 375), Image.BILINEAR).save(path, quality=90)
    return path


def cpu_name() -> str:
    try:
        line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown CPU"


def ours(cfg: ssd.SSDConfig, backend: str, weights=None) -> ssd.Detector:
    """Ours with random weights (seed 0), or the shipped ones; onnxruntime follows torch's thread count."""
    if weights:
        return ssd.Detector.load(weights, device="cpu", backend=backend)
    torch.manual_seed(0)
    return ssd.Detector(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, device="cpu", backend=backend)


def torchvision_model(pair: str):
    from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

    make = ssdlite320_mobilenet_v3_large if pair == "lite0" else ssd300_vgg16
    torch.manual_seed(0)
    return make(num_classes=21, weights=None, weights_backbone=None, score_thresh=0.01, nms_thresh=0.45,
                detections_per_img=200, topk_candidates=400).eval()


def interleaved(fns: dict, runs: int, warmup: int) -> dict[str, list[float]]:
    times = {name: [] for name in fns}
    items = list(fns.items())
    for i in range(warmup + runs):
        for name, fn in (items if i % 2 == 0 else items[::-1]):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=15, help="timed runs of each side (interleaved)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--pairs", nargs="+", choices=("lite0", "vgg16"), default=["lite0", "vgg16"])
    p.add_argument("--defaults", action="store_true",
                   help="only the defaults as a user gets them: `python -m ssd` before and after the export is "
                        "cached, and Detector.load()'s detector in steady state")
    p.add_argument("--candidate", type=Path, default=None, metavar="WEIGHTS",
                   help="with --defaults: also weights that would replace the shipped ones, exported to the cache "
                        "like them and timed in the same steady-state rounds: the ratio candidate/shipped")
    args = p.parse_args()
    if args.candidate is not None and not args.defaults:
        p.error("--candidate goes with --defaults")
    if args.candidate is not None and not (args.candidate.is_file() and beside(args.candidate, CARD_SUFFIX).is_file()):
        p.error(f"--candidate {args.candidate}: no such weights file with its .json card beside it")
    from torchvision.io import decode_jpeg, read_file

    path = photo_file(Path(tempfile.mkdtemp()))
    if args.defaults:
        defaults(path, args.runs, args.warmup, args.candidate)
        return
    configs = {"lite0": ssd.SSD300_LITE0_VOC, "vgg16": ssd.SSD300_VOC}
    names = {"lite0": ("SSD300-Lite0", "ssdlite320_mobilenet_v3_large"), "vgg16": ("SSD300-VGG16", "ssd300_vgg16")}
    print(f"500x375 JPEG in, detections out; random weights, score 0.01 / NMS 0.45 / top 200; torch "
          f"{torch.__version__}; wall clock, median of {args.runs} interleaved runs after {args.warmup} warm-up")
    print(f"CPU: {cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, native bfloat16: {cpu_has_native_bf16()}")
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for pair in args.pairs:
            cfg = configs[pair]
            tv = torchvision_model(pair)
            sides = {name: ours(cfg, name) for name in ("torch", "torch-bf16", "onnxruntime")}

            @torch.inference_mode()
            def run_theirs(tv=tv, bf16=False):
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    return tv([decode_jpeg(read_file(str(path))).float().div(255)])[0]["boxes"]

            fns = {name: (lambda d=d: d.detect(path, **SETTINGS)) for name, d in sides.items()}
            fns["torchvision"] = run_theirs
            fns["torchvision bf16"] = lambda: run_theirs(bf16=True)
            med = {k: statistics.median(v) for k, v in interleaved(fns, args.runs, args.warmup).items()}
            found = {k: len(fn()) for k, fn in fns.items()}
            for name in sides:
                rows.append((threads, f"{names[pair][0]} {name}", names[pair][1], med[name], med["torchvision"],
                             found[name], found["torchvision"]))
            rows.append((threads, f"{names[pair][0]} torch-bf16", f"{names[pair][1]} bf16 autocast",
                         med["torch-bf16"], med["torchvision bf16"], found["torch-bf16"], found["torchvision bf16"]))
    print(f"{'threads':>7s}  {'ours':28s}{'torchvision':45s}{'ours ms':>9s}{'tv ms':>9s}{'ratio':>7s}{'dets':>10s}")
    for threads, a, b, t_a, t_b, n_a, n_b in rows:
        print(f"{threads:7d}  {a:28s}{b:45s}{1e3 * t_a:9.1f}{1e3 * t_b:9.1f}{t_a / t_b:7.2f}{n_a:>5d}/{n_b:<4d}")

    # A trained model's real load: the shipped weights at their own score threshold, each backend.
    shipped = {name: ours(None, name, weights=ssd.detector.DEFAULT_WEIGHTS)
               for name in ("torch", "torch-bf16", "onnxruntime")}
    fns = {name: (lambda d=d: d.detect(path)) for name, d in shipped.items()}
    med = {k: statistics.median(v) for k, v in interleaved(fns, args.runs, args.warmup).items()}
    print(f"shipped SSD300-Lite0 weights at their score threshold {shipped['torch'].score_threshold} "
          f"({torch.get_num_threads()} threads): " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in med.items()))

    # Post-processing alone (decode, softmax, threshold, NMS, top k) on identical network outputs: untrained
    # SSD300-VGG16 logits, the worst case.
    vgg, tv = ours(ssd.SSD300_VOC, "torch"), torchvision_model("vgg16")
    priors = ssd.prior_layout(vgg.config).boxes
    with torch.inference_mode():
        images, _ = tv.transform([decode_jpeg(read_file(str(path))).float().div(255)])
        anchors = tv.anchor_generator(images, list(tv.backbone(images.tensors).values()))
        x = torch.from_numpy(vgg.preprocess([Image.open(path).convert("RGB")])).permute(0, 3, 1, 2)
        loc, conf = vgg.model(normalise(x, vgg.config))

    @torch.inference_mode()
    def post_ours():
        return postprocess(loc, conf, priors, vgg.config, InferenceSettings(**SETTINGS))

    @torch.inference_mode()
    def post_theirs():
        return tv.postprocess_detections({"bbox_regression": loc, "cls_logits": conf}, anchors, images.image_sizes)

    med = {k: statistics.median(v) for k, v in
           interleaved({"ours": post_ours, "torchvision": post_theirs}, args.runs, args.warmup).items()}
    print(f"post-processing alone, untrained SSD300-VGG16 outputs ({int((conf.softmax(-1)[..., 1:] > 0.01).sum())} > "
          f"0.01): ours {1e3 * med['ours']:.2f} ms, torchvision {1e3 * med['torchvision']:.2f} ms, ratio "
          f"{med['ours'] / med['torchvision']:.2f}")


def defaults(path: Path, runs: int, warmup: int, candidate: Path | None = None) -> None:
    """What a user gets without choosing a backend, with the shipped weights: the whole `python -m ssd photo`
    command with an empty export cache (PyTorch, no export) and once `python -m ssd.export --cache` has run
    (onnxruntime), then `Detector.load()`'s detector in steady state against torchvision's ssdlite320 (random
    weights, the settings above), interleaved; with `candidate`, its detector too, exported to the cache the same
    way, in the same rounds."""
    import json
    import os
    import subprocess

    env = {**os.environ, "SSD_CACHE_DIR": tempfile.mkdtemp(prefix="ssd-bench-cache-")}
    os.environ["SSD_CACHE_DIR"] = env["SSD_CACHE_DIR"]

    def command(*args) -> tuple[float, str]:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, check=True)
        return time.perf_counter() - start, out.stdout

    print(f"CPU: {cpu_name()}; defaults with the shipped weights, {torch.get_num_threads()} threads")
    first, out = command("ssd", str(path), "--json")
    print(f"python -m ssd photo.jpg, no cached export: {first:.1f} s (backend {json.loads(out)[0]['backend']})")
    export, _ = command("ssd.export", "--cache")
    print(f"python -m ssd.export --cache: {export:.1f} s")
    again, out = command("ssd", str(path), "--json")
    print(f"python -m ssd photo.jpg, export cached: {again:.1f} s (backend {json.loads(out)[0]['backend']})")
    from torchvision.io import decode_jpeg, read_file

    detector, tv = ssd.Detector.load(device="cpu"), torchvision_model("lite0")
    if candidate is not None:
        export, _ = command("ssd.export", "--cache", "--weights", str(candidate))
        print(f"python -m ssd.export --cache --weights {candidate.name}: {export:.1f} s")
        other = ssd.Detector.load(candidate, device="cpu")

    @torch.inference_mode()
    def theirs():
        return tv([decode_jpeg(read_file(str(path))).float().div(255)])[0]["boxes"]

    fns = {"ours": lambda: detector.detect(path, **SETTINGS), "torchvision": theirs}
    if candidate is not None:
        fns["candidate"] = lambda: other.detect(path, **SETTINGS)
    med = {k: statistics.median(v) for k, v in interleaved(fns, runs, warmup).items()}
    print(f"steady state: {detector!r} {1e3 * med['ours']:.1f} ms, ssdlite320_mobilenet_v3_large "
          f"{1e3 * med['torchvision']:.1f} ms, ratio ours/torchvision (time): {med['ours'] / med['torchvision']:.2f}")
    if candidate is not None:
        print(f"candidate: {other!r} {1e3 * med['candidate']:.1f} ms, ratio candidate/shipped (time): "
              f"{med['candidate'] / med['ours']:.2f}")


if __name__ == "__main__":
    main()
