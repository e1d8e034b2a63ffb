"""Base networks as parts. A base network is chosen by name (`SSDConfig.backbone`) and says everything SSD needs
from it: the modules it adds (the base and its extra layers, with their parameter names), the source feature
maps they give, the memory format its convolutions run fastest in on a CPU, and where its pretrained weights
come from. Adding a base is one module with a `BaseNetwork` subclass, registered in `_register`, and a preset
in `ssd.config`; `SSD`, training and the app ask the part and never test the name.

The parts: `ssd.vgg.VGG16Base` (the paper's, trained from scratch here) and
`ssd.efficientnet_lite.LiteBase` (EfficientNet-Lite0/1/2, ImageNet-pretrained).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import nn

    from .config import SSDConfig


class BaseNetwork:
    """One base network. The methods take the SSD module because the parts' modules live on it, under the
    parameter names that saved weights and checkpoints use (`base.*`, `extras.*`, and VGG16's `fc6`, …)."""

    name: str  # the SSDConfig.backbone that chooses it
    title: str  # as people write it, e.g. "EfficientNet-Lite0"
    sources: int  # source layers the base itself gives; the extra layers give the others
    pretrained: bool  # ImageNet weights ship with the project (else it trains from scratch)
    # On the CPU (the GPU always takes channels_last): oneDNN's NHWC backward of VGG's dense 3x3 convolutions is
    # slower than NCHW, while depthwise convolutions are faster in NHWC (bench/train.py --memory-format).
    cpu_memory_format: torch.memory_format = torch.contiguous_format
    weight_decay: float = 5e-4  # the training recipe's default for this base

    def build(self, ssd: nn.Module, cfg: SSDConfig) -> list[int]:
        """Add the base and its extra layers to `ssd`; return every source layer's channels."""
        raise NotImplementedError

    def features(self, ssd: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """Every source feature map of input `x`, the extra layers' included, in the config's order."""
        raise NotImplementedError

    def init_weights(self, ssd: nn.Module) -> None:
        """Initialise what the part built that does not come pretrained (the extra layers at least)."""
        raise NotImplementedError

    def frozen(self, ssd: nn.Module, cfg: SSDConfig) -> list[nn.Module]:
        """Freeze `cfg.frozen_base_layers` leading layers; return them (SSD keeps them in eval mode)."""
        return []

    def load_pretrained(self, ssd: nn.Module) -> bool:
        """Load the ImageNet weights where the project has them; whether it did."""
        return False

    def weights_info(self) -> dict | str:
        """Where the pretrained weights came from, for the model card."""
        return f"none: {self.title} trained from scratch (no ImageNet {self.title} ships with this project)"

    def describe(self, cfg: SSDConfig) -> str:
        """The base as the app names it, with the config's options, e.g. "VGG16-BN ×0.5"."""
        return self.title


_BASES: dict[str, BaseNetwork] = {}


def _register() -> None:
    from .efficientnet_lite import VARIANTS, LiteBase
    from .vgg import VGG16Base

    for part in (VGG16Base(), *(LiteBase(name) for name in VARIANTS)):
        _BASES[part.name] = part


def bases() -> dict[str, BaseNetwork]:
    """Every base network, by name."""
    if not _BASES:
        _register()
    return dict(_BASES)


def base_network(name: str) -> BaseNetwork:
    try:
        return bases()[name]
    except KeyError:
        raise ValueError(f"no base network {name!r}; there are {sorted(bases())}") from None
