"""INT8 inference on the CPU (backend "onnxruntime-int8", ssd.export.int8) against float32: accuracy and time.

Parts, each optional but one, with the shipped SSD384-Lite0 weights:
  --choices C ...  which layers stay float32 (ssd.export.int8.FLOAT32_CHOICES): each quantized with the same
                   calibration (300 VOC trainval_minus_minival photos; files in a temporary folder, not the cache)
                   and its VOC minival mAP measured, with its network time against float32 (one image,
                   interleaved). This is how KEEP_FLOAT32 was chosen.
  (always)         the cached INT8 graph (made with the VOC calibration when it is not cached yet or was
                   calibrated on other images) against the float32 one: minival mAP (area and VOC07 11-point)
                   and, with --coco, coco_voc's; --record writes the minival figures into the INT8 file's record,
                   where `auto` reads them (Int8Record.verdict: faster on this CPU and within 0.5 mAP).
  --runs N         detect time, a 500x375 JPEG file in, detections out (bench/inference.py's photo and
                   settings: score 0.01, NMS 0.45, top 200, so NMS works at full load): float32 onnxruntime,
                   INT8, torch, and torchvision's ssdlite320_mobilenet_v3_large (random weights), interleaved
                   (who goes first alternates), medians; and the network alone (the backend on a resized image).
  --simulated      each INT8 graph's mAP also without onnxruntime's fusions (float32 operators on dequantized int8
                   values): near what exact integer sums give, as a CPU with VNNI or AMX computes them; so a CPU
                   without them can tell what 8-bit weights would score on one (--other-width).

    python bench/int8.py --voc ../shared/data/VOCdevkit/VOC2007 --coco ../shared/data/coco_voc --record \
        [--choices nothing decode after-heads convs-only depthwise heads] [--other-width] [--simulated] \
        [--runs 31 --threads 1 2]

The cache is the library's (SSD_CACHE_DIR, else ~/.cache/ssd), as `python -m ssd.export --cache --int8` uses it.
Measured results: docs/benchmarks.md, "INT8".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
sys.path.insert(0, str(ROOT / "bench"))

from inference import SETTINGS, interleaved, photo_file, torchvision_model  # noqa: E402

import ssd  # noqa: E402
from ssd.backends import OnnxRuntimeBackend, cpu_has_int8_dot_product, cpu_identity  # noqa: E402
from ssd.detector import DEFAULT_WEIGHTS  # noqa: E402
from ssd.evaluation.run import evaluate_detector  # noqa: E402
from ssd.export import cached_export, int8  # noqa: E402
from ssd.export.calibration import calibration_images  # noqa: E402


def datasets(args, classes):
    from train.sources import open_source

    out = {"minival": open_source(voc_root=args.voc, image_set="minival", classes=classes, keep_difficult=True)}
    if args.coco:
        coco = Path(args.coco)
        out["coco_voc"] = open_source(coco_ann=str(coco / "annotations.json"), image_dir=str(coco / "images"),
                                      classes=classes)
    return out


def evaluate(detector, dataset, limit):
    r = evaluate_detector(detector, dataset, limit, progress=False)
    return r.map_area, r.map_11pt, r.num_images, r.detect_seconds


def network_times(models: dict, image, runs: int, warmup: int = 3) -> dict[str, float]:
    """Median ms of each backend on one resized image, interleaved."""
    fns = {name: (lambda m=m: m(image)) for name, m in models.items()}
    return {k: 1e3 * statistics.median(v) for k, v in interleaved(fns, runs, warmup).items()}


def simulated(model, cfg, classes, card, sets: dict, base: dict, limit) -> None:
    """An INT8 graph's mAP without onnxruntime's fusions, against float32's (`base`)."""
    detector = ssd.Detector(OnnxRuntimeBackend(model, optimize=False), cfg, classes, card=card)
    for name, ds in sets.items():
        area, pt11, n, s = evaluate(detector, ds, limit)
        f_area, f_pt11 = base[name][:2]
        print(f"  simulated (no fusions), {name} ({n} images): mAP {100 * area:.2f} area "
              f"({100 * (area - f_area):+.2f}), {100 * pt11:.2f} 11-point ({100 * (pt11 - f_pt11):+.2f}) "
              f"({s:.0f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voc", required=True, help="the VOC2007 folder (calibration: trainval_minus_minival; "
                                                "evaluation: minival)")
    p.add_argument("--coco", help="the coco_voc folder (annotations.json, images/): also its mAP")
    p.add_argument("--choices", nargs="*", default=[], choices=list(int8.FLOAT32_CHOICES),
                   help="also measure these choices of what stays float32 (each quantized afresh)")
    p.add_argument("--other-width", action="store_true",
                   help="also the shipped choice with the weights' other width (8 bits where this CPU takes 7: "
                        "without VNNI, the saturation's cost; 7 where it takes 8)")
    p.add_argument("--simulated", action="store_true",
                   help="also evaluate each INT8 graph without onnxruntime's fusions (float32 operators on dequantized "
                        "int8 values): near what exact integer sums give, as on a CPU with VNNI or AMX")
    p.add_argument("--record", action="store_true", help="write the cached INT8 file's minival mAP into its record")
    p.add_argument("--runs", type=int, default=0, help="timed runs of each side (0: no timing)")
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--limit", type=int, help="only the first N images of each evaluation set (a quick look)")
    p.add_argument("--timing-only", action="store_true", help="only the detect times (the INT8 file is cached)")
    args = p.parse_args()

    import onnxruntime

    print(f"CPU: {cpu_identity()}, {torch.get_num_threads()} threads; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}")
    float32 = ssd.Detector.load(DEFAULT_WEIGHTS, device="cpu", backend="torch")
    model, cfg, card, classes = float32.model, float32.config, float32.card, float32.class_names
    float_path = cached_export(DEFAULT_WEIGHTS, model, cfg, classes, card)
    if args.timing_only:
        timing(int8.cached_int8(DEFAULT_WEIGHTS, model, cfg, classes, card), float_path, args)
        return
    float32 = ssd.Detector(OnnxRuntimeBackend(float_path), cfg, classes, card=card)
    sets = datasets(args, classes)
    base = {name: evaluate(float32, ds, args.limit) for name, ds in sets.items()}
    for name, (area, pt11, n, s) in base.items():
        print(f"float32 onnxruntime, {name} ({n} images): mAP {100 * area:.2f} area, {100 * pt11:.2f} 11-point "
              f"({s:.0f} s)")

    bits = 7 if int8.reduce_range() else 8
    print(f"weights in {bits} bits on this CPU (int8 dot product: {cpu_has_int8_dot_product()})")
    other = 8 if bits == 7 else 7
    rows = [(choice, bits) for choice in args.choices] + ([(int8.KEEP_FLOAT32, other)] if args.other_width else [])
    if rows:
        calibration = calibration_images(cfg.image_size, args.voc)
        print(f"what stays float32, each calibrated on {calibration.source}:")
        print(f"{'float32':16s}{'quantize s':>11s}{'minival area':>14s}{'11-point':>10s}{'ms int8':>9s}"
              f"{'ms float32':>12s}  what")
        image = calibration.images[:1]
        for choice, width in rows:
            start = time.perf_counter()
            int8.REDUCE_RANGE = width == 7
            try:
                data = int8.quantize(float_path, calibration, keep=choice)
            finally:
                int8.REDUCE_RANGE = None
            took = time.perf_counter() - start
            detector = ssd.Detector(OnnxRuntimeBackend(data), cfg, classes, card=card)
            area, pt11, _, _ = evaluate(detector, sets["minival"], args.limit)
            ms = network_times({"int8": detector.backend, "float32": float32.backend}, image, runs=15)
            name = f"{choice}, {width}-bit"
            print(f"{name:16s}{took:11.0f}{100 * area:14.2f}{100 * pt11:10.2f}{ms['int8']:9.1f}"
                  f"{ms['float32']:12.1f}  {int8.FLOAT32_CHOICES[choice]}", flush=True)
            if args.simulated:
                simulated(data, cfg, classes, card, {"minival": sets["minival"]}, base, args.limit)

    path = int8.cached_int8(DEFAULT_WEIGHTS, model, cfg, classes, card, calibration_source=args.voc)
    record = int8.read_record(path)
    quantized = ssd.Detector(OnnxRuntimeBackend(path), cfg, classes, card=card)
    print(f"INT8 {path.name}: {record.float32}; calibrated on {record.calibration}")
    print(f"its timing when made: INT8 {record.timing.int8_ms:.1f} ms, float32 {record.timing.float32_ms:.1f} ms "
          f"({record.timing.cpu}, {record.timing.threads} threads)")
    for name, ds in sets.items():
        area, pt11, n, s = evaluate(quantized, ds, args.limit)
        f_area, f_pt11 = base[name][:2]
        print(f"INT8, {name} ({n} images): mAP {100 * area:.2f} area ({100 * (area - f_area):+.2f}), {100 * pt11:.2f} "
              f"11-point ({100 * (pt11 - f_pt11):+.2f}) ({s:.0f} s)")
        if name == "minival" and args.record and not args.limit:
            measured = int8.Accuracy(f"{Path(args.voc).name} minival", n, f_area, area, f_pt11, pt11, cpu_identity(),
                                     command="python " + " ".join(sys.argv))
            where = int8.record_accuracy(DEFAULT_WEIGHTS, card, measured)
            print(f"recorded in {where}")
    if args.simulated:
        simulated(path, cfg, classes, card, sets, base, args.limit)
    good, why = int8.read_record(path).verdict()
    print(f"auto {'runs' if good else 'does not run'} INT8 here: {why}")

    if args.runs:
        timing(path, float_path, args)


def timing(int8_path: Path, float_path: Path, args) -> None:
    from torchvision.io import decode_jpeg, read_file

    photo = photo_file(Path(tempfile.mkdtemp()))
    sides = {"onnxruntime-int8": lambda: ssd.Detector.load(int8_path),
             "onnxruntime": lambda: ssd.Detector.load(float_path),
             "torch": lambda: ssd.Detector.load(DEFAULT_WEIGHTS, device="cpu", backend="torch")}
    print(f"500x375 JPEG in, detections out; shipped weights against ssdlite320 (random weights), score 0.01 / NMS "
          f"0.45 / top 200; median of {args.runs} interleaved runs")
    print(f"{'threads':>7s}  {'ours':18s}{'ours ms':>9s}{'tv ms':>9s}{'ours/tv':>9s}{'network ms':>12s}"
          f"{'network / float32':>19s}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        detectors = {name: make() for name, make in sides.items()}  # onnxruntime takes torch's thread count
        tv = torchvision_model("lite0")

        @torch.inference_mode()
        def theirs(tv=tv):
            return tv([decode_jpeg(read_file(str(photo))).float().div(255)])[0]["boxes"]

        fns = {name: (lambda d=d: d.detect(photo, **SETTINGS)) for name, d in detectors.items()}
        fns["torchvision"] = theirs
        med = {k: 1e3 * statistics.median(v) for k, v in interleaved(fns, args.runs, 3).items()}
        image = detectors["onnxruntime"].preprocess([ssd.image.to_rgb(photo)])
        net = network_times({k: d.backend for k, d in detectors.items()}, image, args.runs)
        for name in detectors:
            print(f"{threads:7d}  {name:18s}{med[name]:9.1f}{med['torchvision']:9.1f}"
                  f"{med[name] / med['torchvision']:9.2f}{net[name]:12.1f}{net[name] / net['onnxruntime']:19.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
