"""What SSD needs from a base network (the interface of the parts that `ssd.bases` registers by name)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import nn


class BaseNetwork:
    """One base network. `cfg` is the SSDConfig (ssd.config imports this module to check a config's sources, so
    this one does not import it back). The methods take the SSD module because the parts' modules live on it, under the
    parameter names that saved weights and checkpoints use (`base.*`, `extras.*`, and VGG16's `fc6`, …)."""

    name: str  # the SSDConfig.backbone that chooses it
    title: str  # as people write it, e.g. "EfficientNet-Lite0"
    sources: int  # source layers the base itself gives; the extra layers give the others
    pretrained: bool  # ImageNet weights ship with the project (else it trains from scratch)
    # On the CPU (the GPU always takes channels_last): oneDNN's NHWC backward of VGG's dense 3x3 convolutions is
    # slower than NCHW, while depthwise convolutions are faster in NHWC (bench/train.py --memory-format).
    cpu_memory_format: torch.memory_format = torch.contiguous_format
    weight_decay: float = 5e-4  # the training recipe's default for this base

    def build(self, ssd: nn.Module, cfg) -> list[int]:
        """Add the base and its extra layers to `ssd`; return every source layer's channels."""
        raise NotImplementedError

    def features(self, ssd: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """Every source feature map of input `x`, the extra layers' included, in the config's order."""
        raise NotImplementedError

    def init_weights(self, ssd: nn.Module) -> None:
        """Initialise what the part built that does not come pretrained (the extra layers at least)."""
        raise NotImplementedError

    def frozen(self, ssd: nn.Module, cfg) -> list[nn.Module]:
        """Freeze `cfg.frozen_base_layers` leading layers; return them (SSD keeps them in eval mode)."""
        return []

    def load_pretrained(self, ssd: nn.Module) -> bool:
        """Load the ImageNet weights where the project has them; whether it did."""
        return False

    def weights_info(self) -> dict | str:
        """Where the pretrained weights came from, for the model card."""
        return f"none: {self.title} trained from scratch (no ImageNet {self.title} ships with this project)"

    def describe(self, cfg) -> str:
        """The base as the app names it, with the config's options, e.g. "VGG16-BN ×0.5"."""
        return self.title
