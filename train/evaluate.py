"""Evaluating SSD weights on a dataset: run the detector over the images, score the detections with VOC mAP
(`train.voc_eval`) and optionally COCO AP (`train.coco_eval`). `python -m train.evaluate --help` for the
command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ssd.backends import BACKENDS
from train.cli import error_exit, shown_command
from train.coco_eval import COCO_STAT_NAMES, evaluate_coco
from train.eval_inputs import image_detections
from train.eval_report import build_report, report_path, sha256, write_report
from train.voc_eval import ClassAP, VOCResult, evaluate_voc, format_percent, json_number, voc_ap

__all__ = [
    "ClassAP", "VOCResult", "collect_detections", "evaluate_coco", "evaluate_detector", "evaluate_voc",
    "main", "voc_ap",
]


def _label_map(detector_names, dataset_names) -> np.ndarray | None:
    """Detector class id -> dataset label (0 = not a dataset class); None when they are the same list."""
    detector_names, dataset_names = tuple(detector_names), tuple(dataset_names)
    if detector_names == dataset_names:
        return None
    index = {n: k for k, n in enumerate(dataset_names, start=1)}
    table = np.array([0] + [index.get(n, 0) for n in detector_names], dtype=np.int64)
    if not table.any():
        raise ValueError(f"the detector's classes {list(detector_names)[:6]}... share no name with the "
                         f"dataset's classes {list(dataset_names)[:6]}...")
    return table


def collect_detections(detector, dataset, limit: int | None = None, batch_size: int = 16, progress: bool = True,
                       score_threshold: float | None = None, nms_threshold: float | None = None,
                       top_k: int | None = None, workers: int = 2):
    """Run `detector.detect_batch` over the first `limit` images of `dataset`.

    Thresholds left as None are the detector's config's (the paper's inference settings, §3).
    Returns (detections, ground_truths, seconds): per image (boxes, scores, labels) numpy arrays with labels
    in the dataset's numbering (detector classes are matched to `dataset.classes` by name), per image
    `dataset.annotation(i)[:3]`, and the wall time of loading + detecting. The next chunk of images is
    decoded on `workers` threads while the current one runs through the network.
    """
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    # mAP counts every detection down to the paper's inference threshold (0.01), not the card's display one.
    paper_score = detector.config.conf_threshold if score_threshold is None else score_threshold
    names = getattr(detector, "class_names", None)
    table = _label_map(names, dataset.classes) if names is not None else None
    ground_truths = [tuple(dataset.annotation(i)[:3]) for i in range(n)]
    detections = []
    chunk = max(1, int(batch_size))
    starts = range(0, n, chunk)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="evaluate", unit="img", leave=False)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def submit(s):
            return [pool.submit(lambda i: dataset.load(i).image, i) for i in range(s, min(s + chunk, n))]

        pending = submit(0) if n else []
        for s in starts:
            images = [f.result() for f in pending]
            pending = submit(s + chunk) if s + chunk < n else []
            out = detector.detect_batch(images, score_threshold=paper_score, nms_threshold=nms_threshold,
                                        top_k=top_k, batch_size=chunk)
            for dets in out:
                boxes, scores, labels = image_detections(dets, len(detections))
                if table is not None:
                    labels = table[labels]
                    boxes, scores, labels = boxes[labels > 0], scores[labels > 0], labels[labels > 0]
                detections.append((boxes, scores, labels))
            if bar is not None:
                bar.update(len(images))
    if bar is not None:
        bar.close()
    return detections, ground_truths, time.perf_counter() - t0


def evaluate_detector(detector, dataset, limit: int | None = None, batch_size: int = 16, progress: bool = True,
                      iou_threshold: float = 0.5, **detect_kwargs) -> VOCResult:
    """VOC mAP of `detector` on (the first `limit` images of) `dataset`, with the paper's inference settings
    unless `detect_kwargs` say otherwise. `result.detect_seconds` is the loading + detection time."""
    detections, ground_truths, seconds = collect_detections(detector, dataset, limit, batch_size, progress,
                                                            **detect_kwargs)
    return score_voc(detections, ground_truths, dataset.classes, iou_threshold, seconds)


def score_voc(detections, ground_truths, classes, iou_threshold: float, detect_seconds: float) -> VOCResult:
    """VOC mAP of collected detections, with the time it took to detect them."""
    result = evaluate_voc(detections, ground_truths, len(classes), iou_threshold, class_names=tuple(classes))
    result.detect_seconds = detect_seconds
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="VOC mAP (VOC07 11-point and area) and COCO AP of SSD weights on a dataset.")
    p.add_argument("--weights", help="a .safetensors file written by training (model card beside it); "
                                     "default: the shipped demo weights")
    p.add_argument("--data-root", help="VOC folder holding Annotations/, JPEGImages/, ImageSets/Main/")
    p.add_argument("--image-set", default="val", help="VOC ImageSets/Main list (default: val)")
    p.add_argument("--pack", help="evaluate on a training pack file instead")
    p.add_argument("--coco-ann", help="COCO annotation JSON (with --image-dir); adds COCO AP from this file")
    p.add_argument("--image-dir", help="COCO image folder")
    p.add_argument("--coco-metrics", action="store_true", help="also COCO AP for VOC / pack data (slower)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="what runs the network (ssd.Detector's backends; default: onnxruntime on the CPU when "
                        "the weights' export is cached, else torch), e.g. to measure what a backend's precision costs")
    p.add_argument("--iou", type=float, default=0.5, help="VOC IoU threshold (default 0.5)")
    p.add_argument("--json", help="write every number (and the PR curves) to this JSON file")
    p.add_argument("--plot", help="save the precision-recall curves to this PNG")
    p.add_argument("--report", nargs="?", const="", metavar="FILE",
                   help="write the evaluation report the app's Model tab shows (per-class AP, PR curves, the "
                        "worst false positives and their kinds); FILE defaults to <weights stem>.eval.json beside "
                        "the weights")
    p.add_argument("--no-progress", action="store_true")
    return p


def _load(args):
    """(dataset, detector) named by the command line."""
    from ssd import Detector

    from . import datasets

    if args.pack:
        from .pack import PackDataset

        dataset = PackDataset(args.pack)
    elif args.coco_ann or args.image_dir:
        if not (args.coco_ann and args.image_dir):
            raise ValueError("--coco-ann and --image-dir go together")
        dataset = datasets.COCODataset(args.image_dir, args.coco_ann)
    elif args.data_root:
        dataset = None  # built below, with the detector's classes
    else:
        raise ValueError("name the data: --data-root DIR [--image-set val], --pack FILE, or --coco-ann/--image-dir")

    detector = Detector.load(args.weights, device=args.device, backend=args.backend)
    if dataset is None:
        # Difficult boxes are kept so that detections on them are ignored, as the devkit does.
        dataset = datasets.VOCDataset(args.data_root, args.image_set, classes=detector.class_names,
                                      keep_difficult=True)
    return dataset, detector


def write_evaluation_report(args, argv, dataset, detector, result: VOCResult) -> Path:
    """`--report`: the evaluation report (train.eval_report) beside the weights, or at the path given."""

    import torch

    from ssd.detector import DEFAULT_WEIGHTS

    weights = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    n = result.num_images
    sizes = [dataset.annotation(i)[3:5] for i in range(n)]
    cfg = detector.config
    words = sys.argv[1:] if argv is None else list(argv)
    device = torch.cuda.get_device_name(detector.device) if detector.device.type == "cuda" else "CPU"
    report = build_report(
        result, dataset.classes, dataset.ids[:n], sizes,
        weights=weights.name, weights_sha256=sha256(weights),
        data=str(args.pack or args.coco_ann or f"{Path(args.data_root).name} {args.image_set}"),
        command=shown_command("python -m train.evaluate", words),
        inference={"conf_threshold": cfg.conf_threshold, "nms_threshold": cfg.nms_threshold, "top_k": cfg.top_k},
        device=device)
    return write_report(args.report or report_path(weights), report)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        dataset, detector = _load(args)
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

    report = {"weights": str(args.weights or "shipped default"), "backend": detector.backend_name,
              "dataset": str(args.pack or args.coco_ann or f"{args.data_root}:{args.image_set}"),
              "voc": result.to_dict(curves=bool(args.json))}
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
        path = write_evaluation_report(args, argv, dataset, detector, result)
        print(f"wrote {path}")
    if args.plot:
        from visualize.plots import plot_pr_curves

        plot_pr_curves(result, classes, path=args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
