"""A light top-down path over the source layers (FPN, Lin et al. 2017; FSSD, Li & Zhou 2017). Not in the SSD
paper, whose network is `SSDConfig.top_down = 0`.

SSD finds its smallest objects on its first source layer (conv4_3, or the stride-8 map of an EfficientNet-Lite
base), which comes early in the base and knows little of what things are. The path adds the next coarser, deeper
source to it: projected to its channels by a 1×1 convolution and upsampled (nearest) to its size. With `k` sources
on the path it runs from source k down to source 0, each step adding the one above it, already fused, so the
stride-8 map hears of the deepest one on the path. Only the heads see the fused maps; the extra layers are
computed from the base's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def described(k: int) -> str:
    """How the page and the model card name a path into `k` source layers."""
    return "a top-down path into its first " + ("source layer" if k == 1 else f"{k} source layers")


class TopDown(nn.Module):
    """forward(sources) -> the same list with the first `k` maps fused; `channels`: every source's channels."""

    def __init__(self, channels: Sequence[int], k: int):
        super().__init__()
        if not 0 < k < len(channels):
            raise ValueError(f"a top-down path into {k} of {len(channels)} source layers: k must be 1 to "
                             f"{len(channels) - 1} (the last source has none above it)")
        # project[i]: source i+1's channels -> source i's.
        self.project = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 1) for i in range(k))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero: the path adds nothing until training teaches it to, so weights trained without it (the shipped
        file, a run's export) load into a network with it and compute what they computed (`--init-weights`)."""
        for conv in self.project:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        fused = list(sources)
        for i in reversed(range(len(self.project))):
            above = self.project[i](fused[i + 1])  # 1×1 on the smaller map, then upsample: the cheaper order
            fused[i] = fused[i] + F.interpolate(above, size=fused[i].shape[-2:], mode="nearest")
        return fused
