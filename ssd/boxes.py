"""Box formats and the paper's offset encoding (eq. 2) with variances.

Inside the library boxes are normalised to [0, 1]; `xyxy` is corners, `cxcywh` is centre and size.
IoU and NMS come from `torchvision.ops`.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, "xyxy", "cxcywh")


def encode(matched_xyxy: torch.Tensor, priors_cxcywh: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """Regression targets g^ of eq. (2): centre offsets in prior widths / v0, log size ratios / v1
    (`SSDConfig.variances`).

    Shapes broadcast: matched (..., N, 4) against priors (N, 4).
    """
    g = xyxy_to_cxcywh(matched_xyxy)
    p = priors_cxcywh
    centre = (g[..., :2] - p[..., :2]) / (variances[0] * p[..., 2:])
    # Degenerate (zero-size) targets only occur for unmatched priors, whose targets are never used.
    size = torch.log(g[..., 2:].clamp_min(1e-8) / p[..., 2:]) / variances[1]
    return torch.cat([centre, size], dim=-1)


def decode(loc: torch.Tensor, priors_cxcywh: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """Inverse of `encode`: predicted offsets (..., N, 4) -> boxes (..., N, 4) as xyxy."""
    p = priors_cxcywh
    centre = p[..., :2] + loc[..., :2] * variances[0] * p[..., 2:]
    size = p[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)
