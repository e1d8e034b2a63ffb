"""MultiBox loss (paper eq. 1): smooth-L1 localisation on positives + softmax confidence loss over the
positives and the hardest negatives (at most `neg_pos_ratio` negatives per positive), normalised by the
number of positives N (the loss is 0 when N = 0)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import SSDConfig
from .matching import match
from .priors import default_boxes


def confidence_loss(conf: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, N) softmax cross-entropy of every default box against its matched label (0: background).

    Where the label is 0 this is the background loss that hard-negative mining ranks by.
    """
    conf = conf.float()
    return F.cross_entropy(conf.reshape(-1, conf.shape[-1]), labels.reshape(-1), reduction="none").view_as(labels)


def hard_negatives(conf_loss: torch.Tensor, positives: torch.Tensor, neg_pos_ratio: int) -> torch.Tensor:
    """(B, N) mask of the negatives with the highest confidence loss, neg_pos_ratio per positive per image.

    conf_loss: (B, N) per-default-box cross-entropy with the background class as target.
    """
    loss = conf_loss.detach().masked_fill(positives, float("-inf"))
    num_neg = (positives.sum(dim=1, keepdim=True) * neg_pos_ratio).clamp(max=positives.shape[1] - 1)
    order = loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return (rank < num_neg) & ~positives


def multibox_loss(loc, conf, loc_targets, labels, neg_pos_ratio: int, normalizer=None):
    """The loss given matched targets: loc/loc_targets (B, N, 4), conf (B, N, C+1), labels (B, N).

    `normalizer` replaces N, the batch's number of positives (see `MultiBoxLoss`).
    """
    positives = labels > 0
    num_pos = positives.sum().clamp_min(1).float() if normalizer is None else normalizer
    loc_loss = F.smooth_l1_loss(loc.float()[positives], loc_targets[positives], reduction="sum")
    ce = confidence_loss(conf, labels)
    negatives = hard_negatives(ce, positives, neg_pos_ratio)
    conf_loss = ce[positives | negatives].sum()
    return loc_loss / num_pos, conf_loss / num_pos


class MultiBoxLoss(nn.Module):
    """loss(loc, conf, gt_boxes, gt_labels) -> (loc_loss, conf_loss), each already divided by N: match the
    ground truth to the default boxes, encode the targets, mine hard negatives (the config's threshold,
    variances and ratio).

    gt_boxes: list of (M_i, 4) normalised xyxy; gt_labels: list of (M_i,) in 1..num_classes.
    `normalizer` maps the batch's number of positives (a 0-d tensor) to the N the losses are divided by;
    by default N itself (at least 1). Data-parallel training passes one that returns the positives of the
    global batch per replica, so that averaging the replicas' gradients equals one big batch.
    """

    def __init__(self, cfg: SSDConfig, normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.cfg = cfg
        self.normalizer = normalizer
        self.register_buffer("priors", default_boxes(cfg), persistent=False)

    def forward(self, loc, conf, gt_boxes, gt_labels):
        cfg = self.cfg
        m = match(gt_boxes, gt_labels, self.priors, cfg.match_threshold)
        num_pos = m.positives.sum().float()
        normalizer = num_pos.clamp_min(1) if self.normalizer is None else self.normalizer(num_pos)
        return multibox_loss(loc, conf, m.loc_targets(self.priors, cfg.variances), m.labels, cfg.neg_pos_ratio,
                             normalizer)
