"""Inference post-processing (paper §3): decode, confidence threshold, per-class NMS, keep the top k.

Batched over images and classes on the predictions' device: one `batched_nms` call for the whole batch,
with image and class folded into the NMS group id.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from .boxes import decode


@dataclass
class ImageDetections:
    """Detections of one image, best first. boxes: (K, 4) normalised xyxy; labels in 1..C; prior: (K,)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    prior: torch.Tensor


def select_candidates(conf: torch.Tensor, score_threshold: float, pre_nms_top_k: int):
    """Class scores above the threshold, at most `pre_nms_top_k` per image and class.

    Returns flat (image, prior, label, score) of the candidates. The per-class cap (as torchvision and the
    reference implementation use) bounds NMS work when an untrained model scores everything ~1/(C+1).
    """
    B, N, C1 = conf.shape
    scores = conf.float().softmax(dim=-1)[..., 1:].transpose(1, 2)  # (B, C, N), background dropped
    k = min(pre_nms_top_k, N)
    top_scores, top_prior = scores.topk(k, dim=2)  # (B, C, k)
    keep = top_scores > score_threshold
    image, cls, _ = keep.nonzero(as_tuple=True)
    return image, top_prior[keep], cls + 1, top_scores[keep]


def postprocess(
    loc: torch.Tensor,
    conf: torch.Tensor,
    priors_cxcywh: torch.Tensor,
    variances=(0.1, 0.2),
    score_threshold: float = 0.01,
    nms_threshold: float = 0.45,
    top_k: int = 200,
    pre_nms_top_k: int = 400,
) -> list[ImageDetections]:
    """loc (B, N, 4), conf (B, N, C+1) raw network outputs -> per-image detections."""
    B, _, C1 = conf.shape
    image, prior, label, score = select_candidates(conf, score_threshold, pre_nms_top_k)
    boxes = decode(loc[image, prior].float(), priors_cxcywh[prior].to(loc.device), variances)
    keep = batched_nms(boxes, score, image * C1 + label, nms_threshold)  # sorted by score, descending
    image, prior, label, score, boxes = image[keep], prior[keep], label[keep], score[keep], boxes[keep]
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
        ImageDetections(b, s, lab, p)
        for b, s, lab, p in zip(boxes.split(sizes), score.split(sizes), label.split(sizes), prior.split(sizes))
    ]
