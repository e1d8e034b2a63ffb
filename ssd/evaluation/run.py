"""Evaluating a detector on a dataset: run it over the images (`collect_detections`) and score what it found
with VOC mAP (`evaluate_detector`, `score_voc`). A dataset is anything with `classes`, `__len__`,
`annotation(i)` (boxes, labels, difficult, ...) and `load(i).image`, as training's datasets are."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..postprocess import InferenceSettings
from .inputs import image_detections
from .voc import VOCResult, evaluate_voc

__all__ = ["collect_detections", "evaluate_detector", "score_voc"]


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

    Thresholds left as None are the detector's config's (the paper's inference settings, §3:
    `InferenceSettings.of_config`), not the detector's own.
    Returns (detections, ground_truths, seconds): per image (boxes, scores, labels) numpy arrays with labels
    in the dataset's numbering (detector classes are matched to `dataset.classes` by name), per image
    `dataset.annotation(i)[:3]`, and the wall time of loading + detecting. The next chunk of images is
    decoded on `workers` threads while the current one runs through the network.
    """
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    # mAP counts every detection down to the paper's inference threshold (0.01), not the card's display one.
    paper = InferenceSettings.of_config(detector.config).with_overrides(score_threshold, nms_threshold, top_k)
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
            out = detector.detect_batch(images, score_threshold=paper.score_threshold,
                                        nms_threshold=paper.nms_threshold, top_k=paper.top_k, batch_size=chunk)
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
