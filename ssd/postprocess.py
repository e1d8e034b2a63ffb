"""Inference post-processing (paper §3): decode, softmax, confidence threshold, per-class NMS, keep the top k.

Batched over images and classes on the predictions' device: one `batched_nms` call for the whole batch (rarely
more, see `postprocess`), with image and class folded into the NMS group id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from .boxes import decode
from .config import SSDConfig

# Candidates per image and class that go on to NMS (as torchvision and the reference implementation keep).
PRE_NMS_TOP_K = 400


@dataclass(frozen=True)
class InferenceSettings:
    """What post-processing keeps: class scores above `score_threshold`, the `pre_nms_top_k` best of each class,
    per-class NMS at IoU `nms_threshold`, then the `top_k` best of all classes.

    One value, resolved once: a `Detector` holds its own (`Detector.settings`: the model card's recommended score
    threshold, the config's NMS IoU and top-k), and evaluation the paper's (`of_config`)."""

    score_threshold: float
    nms_threshold: float
    top_k: int
    pre_nms_top_k: int = PRE_NMS_TOP_K

    @classmethod
    def of_config(cls, cfg: SSDConfig) -> InferenceSettings:
        """The config's (the paper's, §3) inference settings: score 0.01, NMS IoU 0.45, top 200 — what mAP
        counts."""
        return cls(cfg.conf_threshold, cfg.nms_threshold, cfg.top_k)

    def with_overrides(self, score_threshold=None, nms_threshold=None, top_k=None) -> InferenceSettings:
        """These settings with the values given; None keeps this one's."""
        changes = {name: value for name, value in (("score_threshold", score_threshold),
                                                   ("nms_threshold", nms_threshold), ("top_k", top_k))
                   if value is not None}
        return replace(self, **changes) if changes else self


@dataclass
class ImageDetections:
    """Detections of one image, best first. boxes: (K, 4) normalised xyxy; labels in 1..C; prior: (K,).
    candidates: how many class scores were above the score threshold before NMS (at most `pre_nms_top_k` per
    class, only the classes asked for)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    prior: torch.Tensor
    candidates: int


def best_candidates(scores: torch.Tensor, score_threshold: float, pre_nms_top_k: int, window: int):
    """Each image's `window` best class scores, kept where above the threshold and among the `pre_nms_top_k`
    best of their class.

    scores: (B, N, C) class probabilities, background dropped. Returns flat (image, prior, label, score) and a
    (B,) mask of the images whose candidates are all there (the rest may have lower-scoring ones left).
    """
    B, N, C = scores.shape
    top, pos = scores.reshape(B, N * C).topk(min(window, N * C), dim=1)  # best first
    prior, cls = pos // C, pos % C
    # All better-scoring boxes of a class are in this prefix, so counting them gives the rank within the class.
    seen = F.one_hot(cls, C).cumsum(dim=1)  # (B, window, C)
    class_rank = seen.gather(2, cls[..., None]).squeeze(2) - 1
    ok = (top > score_threshold) & (class_rank < pre_nms_top_k)
    complete = ((top[:, -1] <= score_threshold) | (top.shape[1] == N * C)
                | (seen[:, -1] >= pre_nms_top_k).all(dim=1))
    image = torch.arange(B, device=scores.device)[:, None].expand_as(pos)
    return image[ok], prior[ok], cls[ok] + 1, top[ok], complete


def postprocess(
    loc: torch.Tensor,
    conf: torch.Tensor,
    priors_cxcywh: torch.Tensor,
    cfg: SSDConfig,
    settings: InferenceSettings,
    classes=None,
) -> list[ImageDetections]:
    """loc (B, N, 4), conf (B, N, C+1) raw network outputs -> per-image detections: `select_detections` of the
    decoded boxes (with `cfg`'s variances) and softmax scores."""
    boxes = decode(loc.float(), priors_cxcywh.to(loc.device), cfg.variances)
    return select_detections(boxes, conf.float().softmax(dim=-1), settings, classes)


def select_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    settings: InferenceSettings,
    classes=None,
) -> list[ImageDetections]:
    """boxes (B, N, 4) decoded xyxy, scores (B, N, C+1) softmax with background at 0 -> per-image detections.

    Equal to: per image and class, the `pre_nms_top_k` best scores above `score_threshold`, NMS, then the
    `top_k` best of all classes (`settings`; no defaults here: a `Detector` passes its own, evaluation the
    config's, `InferenceSettings.of_config`). `classes` (ids in 1..C) keeps only those classes, before the top-k
    cut. The exported ONNX graph ends where this begins.
    """
    score_threshold, nms_threshold = settings.score_threshold, settings.nms_threshold
    top_k, pre_nms_top_k = settings.top_k, settings.pre_nms_top_k
    B, _, C1 = scores.shape
    scores = scores.float()[..., 1:]
    if classes is not None:
        wanted = torch.zeros(C1 - 1, dtype=torch.bool, device=scores.device)
        wanted[[c - 1 for c in classes]] = True
        scores = scores * wanted  # a class not asked for never passes the threshold
    candidates = (scores > score_threshold).sum(dim=1).clamp(max=pre_nms_top_k).sum(dim=1).tolist()
    # NMS keeps or drops a box looking only at the higher-scoring boxes of its class, so NMS over each image's
    # best `window` candidates decides those exactly, and once top_k of them survive no lower-scoring candidate
    # can enter the top k. Same result as NMS over all candidates, but an untrained model's 20 x 400 candidates
    # do not all go through per-class top-k and NMS.
    window = max(4 * top_k, 1)
    while True:
        image, prior, label, score, complete = best_candidates(scores, score_threshold, pre_nms_top_k, window)
        candidate_boxes = boxes[image, prior].float()
        keep = batched_nms(candidate_boxes, score, image * C1 + label, nms_threshold)  # sorted by score, descending
        survivors = torch.bincount(image[keep], minlength=B)
        if ((survivors >= top_k) | complete).all():
            break
        window *= 2
    image, prior, label, score, boxes = image[keep], prior[keep], label[keep], score[keep], candidate_boxes[keep]
    # Top k per image: a stable sort by image keeps the score order inside each image.
    order = image.argsort(stable=True)
    image, prior, label, score, boxes = image[order], prior[order], label[order], score[order], boxes[order]
    counts = torch.bincount(image, minlength=B)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(image.numel(), device=image.device) - starts[image]
    within = rank < top_k
    image, prior, label, score, boxes = image[within], prior[within], label[within], score[within], boxes[within]
    sizes = torch.bincount(image, minlength=B).tolist()
    return [
        ImageDetections(b, s, lab, p, n)
        for b, s, lab, p, n in zip(boxes.split(sizes), score.split(sizes), label.split(sizes), prior.split(sizes),
                                   candidates)
    ]
