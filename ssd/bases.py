"""Base networks as parts. A base network is chosen by name (`SSDConfig.backbone`) and says everything SSD needs
from it (`ssd.base_network.BaseNetwork`): the modules it adds (the base and its extra layers, with their parameter
names), the source feature maps they give, the memory format its convolutions run fastest in on a CPU, and where
its pretrained weights come from. Adding a base is one module with a `BaseNetwork` subclass, registered in
`_BASES`, and a preset in `ssd.config`; `SSD`, training and the app ask the part and never test the name.

The parts: `ssd.vgg.VGG16Base` (the paper's, trained from scratch here) and
`ssd.efficientnet_lite.LiteBase` (EfficientNet-Lite0/1/2, ImageNet-pretrained).
"""

from __future__ import annotations

from .base_network import BaseNetwork
from .efficientnet_lite import VARIANTS, LiteBase
from .vgg import VGG16Base

_BASES: dict[str, BaseNetwork] = {part.name: part for part in (VGG16Base(), *(LiteBase(name) for name in VARIANTS))}


def bases() -> dict[str, BaseNetwork]:
    """Every base network, by name."""
    return dict(_BASES)


def base_network(name: str) -> BaseNetwork:
    try:
        return _BASES[name]
    except KeyError:
        raise ValueError(f"no base network {name!r}; there are {sorted(_BASES)}") from None
