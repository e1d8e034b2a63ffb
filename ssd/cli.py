"""The library's command lines: detect objects in images, and export the network to ONNX.

    python -m ssd IMAGE_OR_DIR [IMAGE_OR_DIR ...] [--weights P] [--score S] [--nms IOU] [--top-k K]
                  [--json] [--device cpu|cuda] [--backend torch|torch-bf16|onnxruntime|onnxruntime-int8|auto]
    python detect.py ... [--out DIR]     (or the installed `ssd-detect`: the same, and it draws)

Directories expand to the image files directly inside them. Without --json, one readable line per detection;
with --json, a JSON list of {image, width, height, device, backend, detections}, `backend` naming what ran the
network. Problems (missing weights, unreadable images)
are reported on stderr and make the exit status non-zero.

    python -m ssd.export --out model.onnx | --cache [--weights W] [--int8 [--calibration DIR]]
                                                                      (export_main; see ssd.export, ssd.export.int8)

Drawing pictures is not the library's job: `main` takes the function that draws (the command-line edge,
visualize.detect, the `ssd-detect` command, passes visualize's), and only then is there an --out DIR for
annotated copies.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path, PurePath

from .backends import BACKENDS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # usage: bad data, options, weights or run folder


def error_exit(problem: Exception | str, status: int = EXIT_USAGE) -> int:
    """One `error:` line on stderr instead of a traceback, for what the user can fix; returns `status`, the exit
    status to end with."""
    print(f"error: {problem}", file=sys.stderr)
    return status


def program(module_form: str) -> str:
    """The command's name as the user ran it, for `--help` and the recorded command: the console script's
    (`ssd-evaluate`, installed by pyproject.toml) or else `module_form` (`python -m train.evaluate`)."""
    name = PurePath(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("ssd-") else module_form


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files as given, directories as their image files (sorted, not recursive); plus error messages."""
    files, errors = [], []
    suffixes = None
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            suffixes = suffixes or _image_suffixes()
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                errors.append(f"{path}: directory contains no image files")
            files += found
        elif path.exists():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or directory")
    return files, errors


KEEP_FORMATS = (".jpg", ".jpeg", ".png", ".webp")


def _parser(prog: str | None, draws: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="SSD (Single Shot MultiBox Detector): detect objects in "
                                "images.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or directories of images")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights (.safetensors with its .json model card beside it, or an .onnx file from "
                        "`python -m ssd.export`); default: the shipped demo weights")
    p.add_argument("--score", type=float, default=None,
                   help="confidence threshold (default: the one the weights' model card recommends)")
    p.add_argument("--nms", type=float, default=None,
                   help="per-class NMS IoU threshold (default: the model config's)")
    p.add_argument("--top-k", type=int, default=None,
                   help="keep at most this many detections per image (default: the model config's)")
    if draws:
        p.add_argument("--out", type=Path, default=None, help="write annotated copies of the images here")
    p.add_argument("--json", action="store_true", help="print the detections as JSON")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="what runs the network: torch, torch-bf16 (bfloat16: about twice as fast on CPUs with "
                        "native bfloat16), onnxruntime (CPU), onnxruntime-int8 (CPU, the export quantized to INT8, "
                        "calibrated on $SSD_CALIBRATION_DATA's training photos or scikit-image's; made once and "
                        "cached), or auto (onnxruntime on the CPU when it is installed, exporting first if need be). "
                        "Default: onnxruntime on the CPU when the weights' export is cached (python -m ssd.export "
                        "--cache), else torch; an .onnx file runs on onnxruntime. auto and the default run a cached "
                        "INT8 graph only where it was measured faster on this CPU and within 0.5 mAP of float32")
    return p


class _Notes(logging.Handler):
    """The library's notes (logger `ssd`, INFO and up) on standard error, e.g. which backend runs and why; it
    looks up sys.stderr at each message, so a caller that swaps it gets them too."""

    def emit(self, record):
        print(f"note: {record.getMessage()}", file=sys.stderr)


def show_notes():
    logger = logging.getLogger("ssd")
    if not any(isinstance(h, _Notes) for h in logger.handlers):
        logger.addHandler(_Notes())
        logger.setLevel(logging.INFO)


def _option_problem(args) -> str | None:
    """What is wrong with the thresholds given, or None."""
    if args.score is not None and not 0.0 <= args.score <= 1.0:
        return f"--score must be in [0, 1], got {args.score}"
    if args.nms is not None and not 0.0 <= args.nms <= 1.0:
        return f"--nms must be in [0, 1], got {args.nms}"
    if args.top_k is not None and args.top_k < 1:
        return f"--top-k must be >= 1, got {args.top_k}"
    return None


def _load_detector(args):
    """(the Detector the options name, None) or (None, the exit status after saying why it cannot load)."""
    import torch

    from .detector import Detector

    if args.device == "cuda" and not torch.cuda.is_available():
        return None, error_exit("--device cuda was asked for, but PyTorch sees no CUDA device; use --device cpu",
                                EXIT_FAILED)
    show_notes()
    try:
        return Detector.load(args.weights, device=args.device, backend=args.backend), None
    except FileNotFoundError as e:
        return None, error_exit(str(e) + ("" if args.weights else " From the command line: --weights PATH."),
                                EXIT_FAILED)
    except Exception as e:  # a corrupt file or card: say which file, not a traceback
        return None, error_exit(f"cannot load weights {args.weights or '(shipped default)'}: {type(e).__name__}: {e}",
                                EXIT_FAILED)


def _out_dir_problem(out_dir: Path) -> str | None:
    """Makes the --out folder; what stops that, or None."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        return f"--out {out_dir}: cannot make this folder, a file is in the way ({e.filename})"
    except PermissionError:
        return f"--out {out_dir}: no permission to create or write this folder"
    return None


def _annotated_copy(out_dir: Path, path: Path, written: set) -> Path:
    """Where the annotated copy of `path` goes: the input's own format where it is a photo format (a JPEG stays a
    JPEG, 5x smaller than a PNG), and another name where two inputs of the same name came from two directories."""
    suffix = path.suffix.lower() if path.suffix.lower() in KEEP_FORMATS else ".png"
    target = out_dir / f"{path.stem}{suffix}"
    n = 1
    while target in written:
        n += 1
        target = out_dir / f"{path.stem}-{n}{suffix}"
    written.add(target)
    return target


def _print_detections(path: Path, dets, score: float) -> None:
    if not dets:
        print(f"{path}: no detections with score >= {score}")
    for d in dets:
        x1, y1, x2, y2 = d.box
        print(f"{path}: {d.label} {d.score:.3f} box=({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})")


def main(argv: list[str] | None = None, draw=None, prog: str | None = "python -m ssd") -> int:
    """Run the command line; `draw(image, detections) -> PIL image` enables --out."""
    args = _parser(prog, draws=draw is not None).parse_args(argv)
    out_dir = getattr(args, "out", None)
    problem = _option_problem(args)
    if problem:
        return error_exit(problem)
    files, errors = expand_inputs(args.inputs)
    for e in errors:
        error_exit(e)
    if not files:
        return EXIT_FAILED

    from .image import to_rgb

    detector, status = _load_detector(args)
    if detector is None:
        return status
    settings = detector.settings.with_overrides(args.score, args.nms, args.top_k)
    problem = out_dir is not None and _out_dir_problem(out_dir)
    if problem:
        return error_exit(problem)

    results, written = [], set()
    failed = bool(errors)
    for path in files:
        try:
            image = to_rgb(path)
        except (ValueError, TypeError) as e:
            error_exit(e)
            failed = True
            continue
        dets = detector.detect(image, settings.score_threshold, settings.nms_threshold, settings.top_k)
        results.append({"image": str(path), "width": image.width, "height": image.height,
                        "device": detector.device.type, "backend": detector.backend_name,
                        "detections": [d.to_dict() for d in dets]})
        if out_dir is not None:
            target = _annotated_copy(out_dir, path, written)
            draw(image, dets).save(target)
        if not args.json:
            _print_detections(path, dets, settings.score_threshold)
            if out_dir is not None:
                print(f"{path}: annotated copy written to {target}")
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_FAILED if failed else EXIT_OK


def export_main(argv: list[str] | None = None) -> int:
    """`python -m ssd.export`: the graph as an ONNX file, or into the export cache (ssd/export/__init__.py)."""
    from . import export
    from .export import int8
    from .export.calibration import calibration_images

    p = argparse.ArgumentParser(prog="python -m ssd.export", description=export.__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="weights (.safetensors with its .json card beside it); "
                   "default: the shipped demo weights")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="the .onnx file to write")
    where.add_argument("--cache", action="store_true",
                       help="write it into the export cache, where Detector.load() and the app look first")
    p.add_argument("--int8", action="store_true",
                   help="the graph quantized to INT8 (onnxruntime static quantization; ssd.export.int8), timed against "
                        "float32 on this CPU; with --cache beside the float32 export, which it makes too")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="--int8's calibration images: a VOC folder (300 of its trainval_minus_minival photos) or a "
                        "folder of photos; default $SSD_CALIBRATION_DATA, else scikit-image's sample photos")
    args = p.parse_args(argv)
    if args.calibration is not None and not args.int8:
        p.error("--calibration goes with --int8")
    import torch

    from .backends import onnxruntime_available
    from .detector import DEFAULT_WEIGHTS, Detector

    try:
        detector = Detector.load(args.weights, device="cpu", backend="torch")
    except (FileNotFoundError, ValueError) as e:
        return error_exit(e, EXIT_FAILED)
    if args.int8:
        show_notes()  # quantizing takes minutes: it says when it starts and ends, and what calibrated it
    if args.cache:
        weights = args.weights or DEFAULT_WEIGHTS
        make = int8.cached_int8 if args.int8 else export.cached_export
        extra = {"calibration_source": args.calibration} if args.int8 else {}
        try:
            path = make(weights, detector.model, detector.config, detector.class_names, detector.card, **extra)
        except (FileNotFoundError, ImportError) as e:
            return error_exit(e, EXIT_FAILED)
        if not isinstance(path, Path):
            return error_exit(f"the cache {export.cache_dir()} is not writable (SSD_CACHE_DIR chooses another)",
                              EXIT_FAILED)
    elif args.int8:
        try:
            calibration = calibration_images(detector.config.image_size, args.calibration)
        except (FileNotFoundError, ImportError) as e:
            return error_exit(e, EXIT_FAILED)
        float_model = export.export_bytes(detector.model, detector.config, detector.class_names, detector.card)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(int8.quantize(float_model, calibration))
        path = args.out
    else:
        path = export.export_onnx(detector, args.out)
    cfg = detector.config
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {cfg.name}, {cfg.num_default_boxes} default boxes, "
          f"{cfg.num_classes} classes, score threshold {detector.score_threshold:g}")
    if onnxruntime_available():
        exported = Detector.load(path)
        images = torch.randint(0, 256, (2, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8).numpy()
        ours, theirs = detector.backend(images), exported.backend(images)
        diff = [float((a - b).abs().max()) for a, b in zip(ours, theirs)]
        print(f"{exported.backend_name} vs PyTorch on 2 random images: max |diff| boxes {diff[0]:.1e}, scores "
              f"{diff[1]:.1e}")
        if args.int8 and args.cache:
            record = int8.read_record(path)
            if record is not None and record.timing is not None:
                t = record.timing
                good, why = record.verdict()
                print(f"INT8 {t.int8_ms:.1f} ms, float32 {t.float32_ms:.1f} ms per image on {t.cpu}, {t.threads} "
                      f"threads; calibrated on {record.calibration}. auto {'runs' if good else 'does not run'} it: "
                      f"{why}")
    else:
        print("onnxruntime is not installed: the export was not checked (pip install onnxruntime)")
    return 0
