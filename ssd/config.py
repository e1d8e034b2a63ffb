"""SSD configurations: the paper's SSD300 / SSD512 for PASCAL VOC and COCO.

All sizes are in pixels of the (square) network input, as the paper's Table/§2.2 and the original Caffe
prototxts state them; `ssd.priors` turns them into normalised default boxes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


@dataclass(frozen=True)
class SSDConfig:
    """Everything that fixes an SSD's architecture, default boxes and inference defaults.

    `num_classes` counts object classes only; the network predicts `num_classes + 1` scores per default
    box because index 0 is background.
    """

    name: str
    image_size: int
    num_classes: int
    # One entry per source layer (paper Fig. 2): names, feature-map sizes, strides ("steps") in pixels,
    # default-box scales s_k·image_size (min_sizes) and s_{k+1}·image_size (max_sizes), and the extra aspect
    # ratios r of each layer (each r adds the boxes r and 1/r; ratio 1 and s'_k are always there).
    source_layers: tuple[str, ...]
    feature_maps: tuple[int, ...]
    steps: tuple[int, ...]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[tuple[int, ...], ...]
    # (kernel, stride, padding) of each extra layer's second conv (conv8_2, conv9_2, ...), as in the released
    # Caffe models: the output size alone does not fix it (4 -> 2 and 5 -> 3 can both be done two ways).
    extra_layers: tuple[tuple[int, int, int], ...] = ((3, 2, 1), (3, 2, 1), (3, 1, 0), (3, 1, 0))
    variances: tuple[float, float] = (0.1, 0.2)
    # The base network, a part chosen by name (ssd.bases): "vgg16" (the paper's, ssd.vgg: conv4_3 and fc7 are the
    # first two sources) or "efficientnet_lite0", "efficientnet_lite1" or "efficientnet_lite2" (ImageNet-pretrained,
    # ssd.efficientnet_lite: the expansions of the blocks that start stages 3 and 5 and the head conv are the first
    # three sources). The extra layers add the rest, so the default boxes are the same.
    backbone: str = "vgg16"
    # Depthwise-separable extras and heads (SSDLite, Sandler et al. 2018) instead of the paper's 3x3 convs.
    separable: bool = False
    # How many of the leading source layers the heads see fused with the next coarser one (ssd.top_down: FPN/FSSD's
    # top-down path, not in the paper; 0 = the paper's network).
    top_down: int = 0
    # Leading base layers ([stem, blocks.0, ...] for EfficientNet-Lite) that keep their ImageNet weights and
    # BatchNorm statistics during training.
    frozen_base_layers: int = 0
    # The base's BatchNorm layers that train keep their running statistics (eval mode, as in detection fine-tuning
    # with small batches: Detectron's FrozenBN); their scale and shift still train. For EfficientNet-Lite they are
    # then folded into their convolutions, which also makes the step cheaper.
    frozen_base_batchnorm: bool = False
    # Options for training from scratch (ScratchDet/DSOD); the presets are the paper's model.
    batch_norm: bool = False
    width: float = 1.0
    l2norm_scale: float = 20.0
    # Training and inference constants from the paper.
    match_threshold: float = 0.5
    neg_pos_ratio: int = 3
    conf_threshold: float = 0.01
    nms_threshold: float = 0.45
    top_k: int = 200
    # Input normalisation (RGB, 0-255 scale) — ImageNet statistics, as torchvision's SSD uses.
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __post_init__(self) -> None:
        per_layer = {
            "source_layers": self.source_layers, "feature_maps": self.feature_maps, "steps": self.steps,
            "min_sizes": self.min_sizes, "max_sizes": self.max_sizes, "aspect_ratios": self.aspect_ratios,
        }
        lengths = {k: len(v) for k, v in per_layer.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"SSDConfig {self.name!r}: per-layer fields must have equal lengths, got {lengths}")
        from .bases import bases  # the parts import torch; a config is plain data

        known = bases()
        if self.backbone not in known:
            raise ValueError(f"SSDConfig {self.name!r}: backbone must be one of {sorted(known)}, "
                             f"got {self.backbone!r}")
        n_extra = len(self.feature_maps) - known[self.backbone].sources
        if len(self.extra_layers) != n_extra:
            raise ValueError(f"SSDConfig {self.name!r}: {len(self.feature_maps)} source layers on {self.backbone} "
                             f"need {n_extra} extra_layers, got {len(self.extra_layers)}")
        if not 0 <= self.top_down < len(self.feature_maps):
            raise ValueError(f"SSDConfig {self.name!r}: top_down must be 0 to {len(self.feature_maps) - 1} (the last "
                             f"source layer has none above it), got {self.top_down}")
        if self.width <= 0:
            raise ValueError(f"SSDConfig {self.name!r}: width must be > 0, got {self.width}")
        if self.num_classes < 1:
            raise ValueError(f"SSDConfig {self.name!r}: num_classes must be >= 1, got {self.num_classes}")

    @property
    def boxes_per_cell(self) -> tuple[int, ...]:
        """4 or 6 per layer: ratio 1 at s_k, ratio 1 at s'_k, and r, 1/r for each extra ratio."""
        return tuple(2 + 2 * len(r) for r in self.aspect_ratios)

    @property
    def num_default_boxes(self) -> int:
        return sum(f * f * b for f, b in zip(self.feature_maps, self.boxes_per_cell))

    def replace(self, **changes) -> SSDConfig:
        """A copy with some fields changed, e.g. `SSD300_VOC.replace(batch_norm=True, width=0.5)`."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SSDConfig:
        """Inverse of `to_dict` (JSON turns tuples into lists; unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown SSDConfig fields {sorted(unknown)}; known: {sorted(names)}")

        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list | tuple) else v

        return cls(**{k: tup(v) for k, v in data.items()})


_SSD300_LAYERS = ("conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")
_SSD512_LAYERS = _SSD300_LAYERS + ("conv12_2",)

SSD300_VOC = SSDConfig(
    name="SSD300_VOC",
    image_size=300,
    num_classes=20,
    source_layers=_SSD300_LAYERS,
    feature_maps=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(30, 60, 111, 162, 213, 264),
    max_sizes=(60, 111, 162, 213, 264, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)

# COCO objects are smaller: conv4_3 at 0.07 and s_min = 0.15 (paper §3.4 / the released models).
SSD300_COCO = SSD300_VOC.replace(
    name="SSD300_COCO",
    num_classes=80,
    min_sizes=(21, 45, 99, 153, 207, 261),
    max_sizes=(45, 99, 153, 207, 261, 315),
)

SSD512_VOC = SSDConfig(
    name="SSD512_VOC",
    image_size=512,
    num_classes=20,
    source_layers=_SSD512_LAYERS,
    feature_maps=(64, 32, 16, 8, 4, 2, 1),
    steps=(8, 16, 32, 64, 128, 256, 512),
    min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
    max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    extra_layers=((3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1), (4, 1, 1)),
)

SSD512_COCO = SSD512_VOC.replace(
    name="SSD512_COCO",
    num_classes=80,
    min_sizes=(20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8),
    max_sizes=(51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72),
)

# SSD300 on an ImageNet-pretrained EfficientNet-Lite0: the same six source sizes and 8732 default boxes as
# the paper's SSD300; the base's stride-8/16/32 maps replace conv4_3, fc7 and conv8_2, and three extra layers
# (10 -> 5 -> 3 -> 1) the rest. Lite0 was trained on inputs scaled as (x - 127) / 128.
SSD300_LITE0_VOC = SSD300_VOC.replace(
    name="SSD300_LITE0_VOC",
    backbone="efficientnet_lite0",
    source_layers=("blocks.5 expand", "blocks.11 expand", "head conv", "extra1", "extra2", "extra3"),
    extra_layers=((3, 2, 1), (3, 2, 1), (3, 1, 0)),
    separable=True,
    frozen_base_layers=6,
    pixel_mean=(127.0, 127.0, 127.0),
    pixel_std=(128.0, 128.0, 128.0),
)

# The same SSD on EfficientNet-Lite1 (Lite0 deeper, the same widths: the extra layers and heads are Lite0's
# shapes). Frozen 8 keeps the stages Lite0's preset freezes (stem, stages 0–2).
SSD300_LITE1_VOC = SSD300_LITE0_VOC.replace(
    name="SSD300_LITE1_VOC",
    backbone="efficientnet_lite1",
    source_layers=("blocks.7 expand", "blocks.15 expand", "head conv", "extra1", "extra2", "extra3"),
    frozen_base_layers=8,
)

# EfficientNet-Lite2: Lite1's depth, every stage 1.1× wider (ImageNet top-1 77.6 against Lite0's 75.1). Its first
# two sources are wider (288, 720 channels), so Lite0/Lite1 files give it only the heads of the later layers.
SSD300_LITE2_VOC = SSD300_LITE1_VOC.replace(name="SSD300_LITE2_VOC", backbone="efficientnet_lite2")

# Larger inputs for small objects on the same base: an SSD300-Lite network at size×size. Every default box
# keeps its size as a fraction of the image (s_k) and the base's strides stay 8/16/32, so the SSD300 model's
# weights fit unchanged.
def _at(ssd300: SSDConfig, size: int, feature_maps: tuple[int, ...]) -> SSDConfig:
    scale = size / ssd300.image_size
    return ssd300.replace(
        name=ssd300.name.replace("SSD300", f"SSD{size}"),
        image_size=size,
        feature_maps=feature_maps,
        steps=tuple(size // f for f in feature_maps),
        min_sizes=tuple(round(m * scale, 2) for m in ssd300.min_sizes),
        max_sizes=tuple(round(m * scale, 2) for m in ssd300.max_sizes),
    )


# 48×48, 24×24, 12×12 from the base, the same three extra layers give 6, 3, 1: 13792 default boxes, 1.64× the
# pixels.
SSD384_LITE0_VOC = _at(SSD300_LITE0_VOC, 384, (48, 24, 12, 6, 3, 1))
# The bigger base at the input that moved Lite0: Lite1's ImageNet base with SSD384-Lite0's default boxes, extra
# layers and heads (`--init-weights` from a Lite0 file takes those).
SSD384_LITE1_VOC = _at(SSD300_LITE1_VOC, 384, (48, 24, 12, 6, 3, 1))
SSD384_LITE2_VOC = _at(SSD300_LITE2_VOC, 384, (48, 24, 12, 6, 3, 1))
# SSD512's input on the same network: 64×64 … 4×4 maps, and the last extra layer (3×3, no padding) turns 4×4
# into 2×2 where SSD300 has 1×1 (the paper's SSD512 adds a seventh layer instead, which these weights lack):
# 24528 default boxes, 2.9× SSD300's pixels.
SSD512_LITE0_VOC = _at(SSD300_LITE0_VOC, 512, (64, 32, 16, 8, 4, 2))

PRESETS = {c.name: c for c in (SSD300_VOC, SSD512_VOC, SSD300_COCO, SSD512_COCO, SSD300_LITE0_VOC,
                               SSD300_LITE1_VOC, SSD300_LITE2_VOC, SSD384_LITE0_VOC, SSD384_LITE1_VOC,
                               SSD384_LITE2_VOC, SSD512_LITE0_VOC)}
