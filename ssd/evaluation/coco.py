"""COCO box AP (IoU 0.5:0.95, AP50, AP75, by object size) through pycocotools' COCOeval, from in-memory
ground truth or a COCO annotation file."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from .inputs import flatten, image_detections, image_ground_truth

__all__ = ["COCO_STAT_NAMES", "evaluate_coco"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _coco_from_dataset(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    _quiet(coco.createIndex)
    return coco


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def evaluate_coco(detections, ground_truths=None, *, num_classes: int | None = None, class_names=None,
                  ann_file=None, coco_gt=None, image_ids=None, category_ids=None) -> dict:
    """COCO box AP (IoU 0.5:0.95), AP50, AP75, AP/AR by object size, computed by pycocotools' COCOeval
    with its standard settings (maxDets 1/10/100: at most the 100 best detections of each image count).

    Ground truth either in memory — `ground_truths` as for `evaluate_voc`; boxes marked difficult become
    COCO "iscrowd" regions (detections on them are neither right nor wrong); areas are box areas — or from a
    COCO annotation file (`ann_file`, or an already loaded `coco_gt`). With a file, `image_ids[i]` is the COCO
    image id of `detections[i]` (default: the file's sorted image ids) and label k maps to
    `category_ids[k-1]` (default: by `class_names` matched to the file's category names, else the sorted
    category ids). Only the images in `image_ids` are evaluated.

    Returns {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
    "AR_medium", "AR_large"} (nan where COCO reports -1: no ground truth in that size range) and
    "per_class_AP" (AP@[.5:.95] per class, nan for classes without ground truth).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if ann_file is not None or coco_gt is not None:
        gt = coco_gt if coco_gt is not None else _quiet(COCO, str(ann_file))
        image_ids, category_ids, names = _file_ids(gt, len(detections), class_names, image_ids, category_ids)
    else:
        gt, image_ids, category_ids, names = _in_memory_ground_truth(detections, ground_truths, num_classes,
                                                                     class_names)
    dt = _coco_from_dataset({"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                             "annotations": _results(detections, image_ids, category_ids)})
    E = COCOeval(gt, dt, "bbox")
    E.params.imgIds = list(image_ids)
    E.params.catIds = list(category_ids)
    _quiet(E.evaluate)
    _quiet(E.accumulate)
    _quiet(E.summarize)
    out = {k: (float("nan") if v < 0 else float(v)) for k, v in zip(COCO_STAT_NAMES, E.stats, strict=True)}
    out["per_class_AP"] = _per_class_ap(E, names)
    return out


def _file_ids(gt, n_images: int, class_names, image_ids, category_ids):
    """(image ids, category ids, class names) of detections evaluated against an annotation file `gt`, checked
    against it; the defaults as `evaluate_coco` says."""
    if image_ids is None:
        image_ids = sorted(gt.getImgIds())[:n_images]
    image_ids = list(image_ids)
    if len(image_ids) != n_images:
        raise ValueError(f"{n_images} images of detections but {len(image_ids)} image_ids")
    unknown = [i for i in image_ids if i not in gt.imgs]
    if unknown:
        raise ValueError(f"image ids {unknown[:5]} are not in the COCO annotations")
    cats = sorted(gt.getCatIds())
    if category_ids is None:
        if class_names is not None:
            by_name = {c["name"]: c["id"] for c in gt.loadCats(cats)}
            missing = [n for n in class_names if n not in by_name]
            if missing:
                raise ValueError(f"classes {missing[:5]} are not categories of the COCO annotations "
                                 f"(which has {sorted(by_name)[:10]}...)")
            category_ids = [by_name[n] for n in class_names]
        else:
            category_ids = cats
    category_ids = list(category_ids)
    names = list(class_names) if class_names is not None else [gt.cats[c]["name"] for c in category_ids]
    return image_ids, category_ids, names


def _in_memory_ground_truth(detections, ground_truths, num_classes, class_names):
    """(COCO ground truth, image ids 1..N, category ids 1..C, class names) built from `ground_truths`."""
    if ground_truths is None:
        raise ValueError("evaluate_coco needs ground_truths, ann_file or coco_gt")
    if len(ground_truths) != len(detections):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truths)} of ground truth")
    if num_classes is None:
        if class_names is None:
            raise ValueError("evaluate_coco with in-memory ground truth needs num_classes or class_names")
        num_classes = len(class_names)
    names = list(class_names) if class_names is not None else [str(c) for c in range(1, num_classes + 1)]
    image_ids = list(range(1, len(ground_truths) + 1))
    category_ids = list(range(1, num_classes + 1))
    _, counts, (boxes, labels, difficult) = flatten(ground_truths, image_ground_truth, "ground_truths", num_classes)
    anns = []
    if counts.sum():
        xywh = _xywh(boxes)
        img = np.repeat(image_ids, counts)
        # Annotation ids start at 1: COCOeval stores matches as ids and reads 0 as "unmatched".
        anns = [{"id": k + 1, "image_id": int(img[k]), "category_id": int(labels[k]),
                 "bbox": xywh[k].tolist(), "area": float(xywh[k, 2] * xywh[k, 3]),
                 "iscrowd": int(difficult[k])} for k in range(len(labels))]
    gt = _coco_from_dataset({
        "images": [{"id": i} for i in image_ids],
        "categories": [{"id": c, "name": n} for c, n in zip(category_ids, names, strict=True)],
        "annotations": anns,
    })
    return gt, image_ids, category_ids, names


def _results(detections, image_ids, category_ids) -> list[dict]:
    """The detections as COCO results. The evaluation builds them into a COCO object directly rather than with
    COCO.loadRes, which cannot take an empty result list."""
    _, counts, (boxes, scores, labels) = flatten(detections, image_detections, "detections", len(category_ids))
    if not counts.sum():
        return []
    xywh = _xywh(boxes)
    img = np.repeat(np.asarray(image_ids), counts)
    cat = np.asarray(category_ids)[labels - 1]
    return [{"id": k + 1, "image_id": int(img[k]), "category_id": int(cat[k]), "bbox": xywh[k].tolist(),
             "score": float(scores[k]), "area": float(xywh[k, 2] * xywh[k, 3])}
            for k in range(len(labels))]


def _per_class_ap(E, names) -> dict:
    """AP@[.5:.95] per class from an evaluated COCOeval, nan for a class without ground truth."""
    # precision: [T iou, R recall, K class, A area, M maxDets]; -1 where a class has no ground truth.
    p = E.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, n in enumerate(names):
        v = p[:, :, k]
        per_class[n] = float(v[v > -1].mean()) if (v > -1).any() else float("nan")
    return per_class
