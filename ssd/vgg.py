"""The paper's base network: VGG16 with pool5 made 3x3 stride 1, fc6/fc7 as (atrous) convolutions and L2Norm on
conv4_3 (§3), followed by the extra layers conv8 .. conv11 (conv12 for SSD512). No ImageNet VGG16 ships with this
project, so it trains from scratch (with `batch_norm` and `width`, the ScratchDet/DSOD options)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base_network import BaseNetwork
from .layers import conv_relu, init_added, zero_biases

# VGG16 conv stages (channels per conv); a 2x2 max-pool follows each stage except the last, whose pool5
# becomes 3x3 stride 1 so that fc6/fc7 keep conv5's resolution (§3, "atrous").
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class L2Norm(nn.Module):
    """Normalise each position's feature vector to unit L2 norm, then scale per channel (ParseNet, §3.1).
    conv4_3's features have a larger scale than the later layers'; the learnable scale starts at 20."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x):
        return F.normalize(x, p=2.0, dim=1, eps=1e-10) * self.weight.view(1, -1, 1, 1)


class VGG16Base(BaseNetwork):
    """conv4_3 (after L2Norm) and fc7 are the first two sources; each extra layer's second conv adds one."""

    name = "vgg16"
    title = "VGG16"
    sources = 2
    pretrained = False

    def build(self, ssd, cfg) -> list[int]:
        bn = cfg.batch_norm

        def ch(c):
            return max(8, int(round(c * cfg.width)))

        names, modules, cin = [], [], 3
        for s, stage in enumerate(VGG16_STAGES, start=1):
            for i, c in enumerate(stage, start=1):
                names.append(f"conv{s}_{i}")
                modules.append(conv_relu(cin, ch(c), bn, kernel_size=3, padding=1))
                cin = ch(c)
            if s < 5:
                # ceil_mode makes 75 -> 38 after pool3 for a 300 input, as in the Caffe model.
                names.append(f"pool{s}")
                modules.append(nn.MaxPool2d(2, 2, ceil_mode=(s == 3)))
        ssd.base = nn.ModuleDict(zip(names, modules))
        ssd.l2norm = L2Norm(ch(512), cfg.l2norm_scale)
        ssd.pool5 = nn.MaxPool2d(3, 1, padding=1)
        ssd.fc6 = conv_relu(ch(512), ch(1024), bn, kernel_size=3, padding=6, dilation=6)
        ssd.fc7 = conv_relu(ch(1024), ch(1024), bn, kernel_size=1)

        # Extra layers conv8 .. conv11 (conv12 for SSD512): a 1x1 bottleneck then a 3x3 that shrinks the map.
        ssd.extras = nn.ModuleDict()
        source_channels = [ch(512), ch(1024)]
        cin = ch(1024)
        for k in range(2, len(cfg.feature_maps)):
            mid, out = (256, 512) if k == 2 else (128, 256)
            n = k + 6  # conv8 for the third source
            kernel, stride, padding = cfg.extra_layers[k - 2]
            ssd.extras[f"conv{n}_1"] = conv_relu(cin, ch(mid), bn, kernel_size=1)
            ssd.extras[f"conv{n}_2"] = conv_relu(ch(mid), ch(out), bn, kernel_size=kernel, stride=stride,
                                                 padding=padding)
            cin = ch(out)
            source_channels.append(cin)
        return source_channels

    def features(self, ssd, x) -> list[torch.Tensor]:
        sources = []
        for name, layer in ssd.base.items():
            x = layer(x)
            if name == "conv4_3":
                sources.append(ssd.l2norm(x))
        x = ssd.fc7(ssd.fc6(ssd.pool5(x)))
        sources.append(x)
        for name, layer in ssd.extras.items():
            x = layer(x)
            if name.endswith("_2"):
                sources.append(x)
        return sources

    def init_weights(self, ssd) -> None:
        # From scratch: He init for the VGG16 convolutions, Xavier for the layers the paper adds (§3).
        for m in ssd.base.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        zero_biases([ssd.base])
        init_added([ssd.fc6, ssd.fc7, ssd.extras])

    def describe(self, cfg) -> str:
        return f"VGG16{'-BN' if cfg.batch_norm else ''}" + (f" ×{cfg.width:g}" if cfg.width != 1 else "")
