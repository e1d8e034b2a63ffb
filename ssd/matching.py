"""Matching default boxes to ground truth (paper §2.2, "Matching strategy").

1. Each ground-truth box is matched to the default box with the best Jaccard overlap (forced positive,
   whatever its IoU), so every object has at least one positive.
2. Every other default box is matched to the ground truth it overlaps most, if that IoU is >= threshold.
Everything else is background (label 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from .boxes import cxcywh_to_xyxy, encode


@dataclass
class MatchResult:
    """Per image and default box: which ground truth it was assigned (-1: none) and the targets.

    labels:     (B, N) int64, class index of the matched ground truth (1..C) or 0 for background
    matched_gt: (B, N) int64, index of the assigned ground truth within its image (-1 for background)
    iou:        (B, N) IoU with the best-overlapping ground truth (forced matches keep their real IoU)
    boxes:      (B, N, 4) xyxy of the matched ground truth (zeros for background)
    forced:     (B, N) bool, True where a default box is some ground truth's best match
    """

    labels: torch.Tensor
    matched_gt: torch.Tensor
    iou: torch.Tensor
    boxes: torch.Tensor
    forced: torch.Tensor

    @property
    def positives(self) -> torch.Tensor:
        return self.labels > 0

    def loc_targets(self, priors_cxcywh: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
        """Encoded offsets (B, N, 4) of each default box's matched ground truth (meaningless for background)."""
        return encode(self.boxes, priors_cxcywh, variances)


def match(
    gt_boxes: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
    priors_cxcywh: torch.Tensor,
    threshold: float,
) -> MatchResult:
    """Match a batch of images' ground truth (normalised xyxy boxes, labels 1..C) to the default boxes.

    One `box_iou` call covers the whole batch; images may have no objects.
    """
    device = priors_cxcywh.device
    B, N = len(gt_boxes), priors_cxcywh.shape[0]
    counts = [int(b.shape[0]) for b in gt_boxes]
    M = max(counts, default=0)
    labels = torch.zeros(B, N, dtype=torch.long, device=device)
    matched_gt = torch.full((B, N), -1, dtype=torch.long, device=device)
    best_iou = torch.zeros(B, N, device=device)
    boxes = torch.zeros(B, N, 4, device=device)
    forced = torch.zeros(B, N, dtype=torch.bool, device=device)
    if M == 0:
        return MatchResult(labels, matched_gt, best_iou, boxes, forced)

    flat_boxes = torch.cat([b.to(device, torch.float32).reshape(-1, 4) for b in gt_boxes])
    flat_labels = torch.cat([lab.to(device, torch.long).reshape(-1) for lab in gt_labels])
    image_of = torch.repeat_interleave(torch.arange(B, device=device), torch.tensor(counts, device=device))
    slot_of = torch.cat([torch.arange(c, device=device) for c in counts])

    # (B, M, N) IoU; padded ground-truth slots get -1 so they never win.
    iou = torch.full((B, M, N), -1.0, device=device)
    iou[image_of, slot_of] = box_iou(flat_boxes, cxcywh_to_xyxy(priors_cxcywh))

    best_iou, matched_gt = iou.max(dim=1)  # best ground truth for every default box
    best_prior = iou.argmax(dim=2)  # best default box for every ground truth (B, M)
    valid = torch.arange(M, device=device)[None, :] < torch.tensor(counts, device=device)[:, None]
    # Forced matches, ground truth by ground truth so that a later one wins a shared best prior
    # deterministically (as in the reference implementation).
    batch = torch.arange(B, device=device)
    for m in range(M):
        b = batch[valid[:, m]]
        p = best_prior[b, m]
        matched_gt[b, p] = m
        forced[b, p] = True

    positive = forced | (best_iou >= threshold)
    gt_index = torch.zeros(B, M, dtype=torch.long, device=device)
    gt_index[image_of, slot_of] = torch.arange(flat_boxes.shape[0], device=device)
    flat_index = gt_index.gather(1, matched_gt.clamp_min(0))
    labels = torch.where(positive, flat_labels[flat_index], torch.zeros_like(flat_index))
    boxes = torch.where(positive[..., None], flat_boxes[flat_index], torch.zeros(1, device=device))
    matched_gt = torch.where(positive, matched_gt, torch.full_like(matched_gt, -1))
    # Report each box's real IoU with its assigned ground truth (a forced match may not be its best).
    real_iou = iou.gather(1, matched_gt.clamp_min(0)[:, None, :]).squeeze(1)
    best_iou = torch.where(positive, real_iou, best_iou.clamp_min(0))
    return MatchResult(labels, matched_gt, best_iou, boxes, forced)
