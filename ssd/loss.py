"""MultiBox loss (paper eq. 1): smooth-L1 localisation on positives + softmax confidence loss over the
positives and the hardest negatives (at most `neg_pos_ratio` negatives per positive), normalised by the
number of positives N (the loss is 0 when N = 0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SSDConfig
from .matching import match
from .priors import default_boxes


def hard_negatives(conf_loss: torch.Tensor, positives: torch.Tensor, neg_pos_ratio: int = 3) -> torch.Tensor:
    """(B, N) mask of the negatives with the highest confidence loss, neg_pos_ratio per positive per image.

    conf_loss: (B, N) per-default-box cross-entropy with the background class as target.
    """
    loss = conf_loss.detach().masked_fill(positives, float("-inf"))
    num_neg = (positives.sum(dim=1, keepdim=True) * neg_pos_ratio).clamp(max=positives.shape[1] - 1)
    order = loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return (rank < num_neg) & ~positives


class MultiBoxLoss(nn.Module):
    """loss(loc, conf, gt_boxes, gt_labels) -> (loc_loss, conf_loss), each already divided by N.

    gt_boxes: list of (M_i, 4) normalised xyxy; gt_labels: list of (M_i,) in 1..num_classes.
    """

    def __init__(self, cfg: SSDConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("priors", default_boxes(cfg), persistent=False)

    def forward(self, loc, conf, gt_boxes, gt_labels, normalizer=None):
        m = match(gt_boxes, gt_labels, self.priors, self.cfg.match_threshold)
        loc_t = m.loc_targets(self.priors, self.cfg.variances)
        return multibox_loss(loc, conf, loc_t, m.labels, self.cfg.neg_pos_ratio, normalizer)


def multibox_loss(loc, conf, loc_targets, labels, neg_pos_ratio: int = 3, normalizer=None):
    """The loss given matched targets: loc/loc_targets (B, N, 4), conf (B, N, C+1), labels (B, N).

    `normalizer` replaces N, the batch's number of positives — data-parallel training passes the
    positives of the global batch (per replica), so that averaging replicas' gradients equals one big batch.
    """
    loc, conf = loc.float(), conf.float()
    positives = labels > 0
    num_pos = positives.sum().clamp_min(1).float() if normalizer is None else normalizer
    loc_loss = F.smooth_l1_loss(loc[positives], loc_targets[positives], reduction="sum")
    ce = F.cross_entropy(conf.reshape(-1, conf.shape[-1]), labels.reshape(-1), reduction="none")
    ce = ce.view_as(labels)
    # Mining ranks negatives by their background loss, which is ce itself where the label is 0.
    negatives = hard_negatives(ce, positives, neg_pos_ratio)
    conf_loss = ce[positives | negatives].sum()
    return loc_loss / num_pos, conf_loss / num_pos
