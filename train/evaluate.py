"""The evaluation command line: read a dataset (VOC, COCO or a training pack, with training's readers) and
the weights, and score them with the library's metrics (`ssd.evaluation`: VOC mAP, optionally COCO AP), the
report beside the weights included. `python -m train.evaluate --help` for the options."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ssd import Detector
from ssd.backends import BACKENDS
from ssd.cli import error_exit, program
from ssd.evaluation.analysis import ErrorAnalysis, analyse_errors
from ssd.evaluation.bootstrap import paired_bootstrap
from ssd.evaluation.coco import COCO_STAT_NAMES, evaluate_coco
from ssd.evaluation.report import build_report, report_path, sha256, write_report
from ssd.evaluation.run import collect_detections, score_voc
from ssd.evaluation.voc import VOCResult, format_percent, json_number

from .cli import shown_command
from .sources import add_data_arguments, open_data

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=program(f"python -m {__spec__.name}"),
        description="VOC mAP (VOC07 11-point and area) and COCO AP of SSD weights on a dataset.")
    p.add_argument("--weights", help="a .safetensors file written by training (model card beside it); "
                                     "default: the shipped demo weights")
    add_data_arguments(p, image_set="val")
    p.add_argument("--coco-metrics", action="store_true", help="also COCO AP for VOC / pack data (slower)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="what runs the network (ssd.Detector's backends; default: onnxruntime on the CPU when "
                        "the weights' export is cached, else torch), e.g. to measure what a backend's precision costs")
    p.add_argument("--iou", type=float, default=0.5, help="VOC IoU threshold (default 0.5)")
    p.add_argument("--json", help="write every number (and the PR curves) to this JSON file; "
                                  "visualize.plots draws the curves (ssd-plot FILE)")
    p.add_argument("--report", nargs="?", const="", metavar="FILE",
                   help="write the evaluation report the app's Model tab shows (per-class AP, PR curves, the "
                        "worst false positives and their kinds); FILE defaults to <weights stem>.eval.json beside "
                        "the weights")
    p.add_argument("--baseline", metavar="WEIGHTS",
                   help="also evaluate these weights on the same images and print how far --weights is from them: "
                        "the mAP difference with a paired bootstrap interval over the images (ssd.evaluation."
                        "bootstrap), e.g. a new run against the shipped weights")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap draws for --baseline (default 200)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _load(args):
    """(dataset, detector) named by the command line."""
    detector = Detector.load(args.weights, device=args.device, backend=args.backend)
    # VOC's labels are read as the detector's classes (a pack and a COCO file carry their own). Difficult
    # objects are kept so that detections on them are ignored, as the devkit does.
    coco = bool(args.coco_ann or args.image_dir)
    dataset = open_data(args, classes=None if coco else detector.class_names, keep_difficult=True)
    return dataset, detector


def write_evaluation_report(args, argv, dataset, detector, result: VOCResult, analysis: ErrorAnalysis) -> Path:
    """`--report`: the evaluation report (ssd.evaluation.report) beside the weights, or at the path given, with
    the error analysis `main` printed."""

    import torch

    from ssd.detector import DEFAULT_WEIGHTS

    weights = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    n = result.num_images
    sizes = [dataset.annotation(i)[3:5] for i in range(n)]
    cfg = detector.config
    words = sys.argv[1:] if argv is None else list(argv)
    device = torch.cuda.get_device_name(detector.device) if detector.device.type == "cuda" else "CPU"
    # A pack keeps ids only; every folder of photos names each image's file, which the Model tab lists.
    files = [dataset.file_name(i) for i in range(n)] if hasattr(dataset, "file_name") else None
    report = build_report(
        result, dataset.classes, dataset.ids[:n], sizes, image_files=files,
        weights=weights.name, weights_sha256=sha256(weights),
        data=str(args.pack or args.coco_ann or f"{Path(args.data_root).name} {args.image_set}"),
        command=shown_command(program(f"python -m {__spec__.name}"), words),
        inference={"conf_threshold": cfg.conf_threshold, "nms_threshold": cfg.nms_threshold, "top_k": cfg.top_k},
        device=device,
        # The false positives are counted above the threshold the app starts at: the card's, which training chose
        # at its own best-F1 point; this file's may differ a little (float16 weights, another backend).
        score_threshold=detector.card.score_threshold, analysis=analysis)
    return write_report(args.report or report_path(weights), report)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        dataset, detector = _load(args)
        baseline = Detector.load(args.baseline, device=args.device, backend=args.backend) if args.baseline else None
    except (FileNotFoundError, ValueError) as e:  # missing weights, malformed data (DatasetError): say which
        return error_exit(e)

    detections, ground_truths, seconds = collect_detections(
        detector, dataset, args.limit, args.batch_size, progress=not args.no_progress)
    classes = tuple(dataset.classes)
    result = score_voc(detections, ground_truths, classes, args.iou, seconds)
    n = result.num_images
    print(f"{n} images, detection {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} img/s, {detector.backend_name}), "
          f"VOC evaluation {result.eval_seconds:.2f} s")
    print(result.table())
    print(f"VOC07 11-point mAP: {format_percent(result.map_11pt).strip()}   area mAP (VOC2010+): "
          f"{format_percent(result.map_area).strip()}   (IoU {args.iou})")
    # Counted at the threshold the app starts at (the card's), as the report's false positives are; a card
    # without one: this evaluation's best-F1 point.
    analysis = analyse_errors(result, detector.card.score_threshold)
    print(analysis.table())

    report = {"weights": str(args.weights or "shipped default"), "backend": detector.backend_name,
              "dataset": str(args.pack or args.coco_ann or f"{args.data_root}:{args.image_set}"),
              "voc": result.to_dict(curves=bool(args.json)), "error_analysis": analysis.to_dict(dataset.ids[:n])}
    if baseline is not None:
        base_detections, _, _ = collect_detections(baseline, dataset, args.limit, args.batch_size,
                                                   progress=not args.no_progress)
        compared = paired_bootstrap(base_detections, detections, ground_truths, len(classes), args.resamples,
                                    iou_threshold=args.iou)
        print(f"against the baseline {args.baseline} (A; --weights is B): {compared.summary()}")
        report["baseline"] = {"weights": args.baseline, **{k: json_number(v) for k, v in asdict(compared).items()}}
    coco = None
    if args.coco_ann:
        # COCODataset keeps image ids as strings; the annotation file has them as numbers.
        ids = [int(i) if str(i).isdigit() else i for i in dataset.ids[:n]]
        coco = evaluate_coco(detections, ann_file=args.coco_ann, image_ids=ids, class_names=classes)
    elif args.coco_metrics:
        coco = evaluate_coco(detections, ground_truths, class_names=classes)
    if coco is not None:
        print("COCO " + "  ".join(f"{k} {format_percent(coco[k]).strip()}" for k in COCO_STAT_NAMES[:6]))
        report["coco"] = {k: (json_number(v) if not isinstance(v, dict) else {c: json_number(a) for c, a in v.items()})
                          for k, v in coco.items()}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        # Compact: with PR curves of thousands of points an indented file would run to a million lines.
        Path(args.json).write_text(json.dumps(report) + "\n")
        print(f"wrote {args.json}")
    if args.report is not None:
        path = write_evaluation_report(args, argv, dataset, detector, result, analysis)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
