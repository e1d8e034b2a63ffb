"""The inference graph: the network with its input scaling and box decoding folded in, so that what runs is
exactly what is exported to ONNX (`ssd.export`) — from resized uint8 pixels to one box and one set of class
probabilities per default box. Per-class NMS (`ssd.postprocess.select_detections`) starts where it ends."""

from __future__ import annotations

import torch
from torch import nn

from .boxes import decode
from .config import SSDConfig
from .image import normalise
from .priors import prior_layout

# The graph's input and outputs by name, as the ONNX export writes them and onnxruntime reads them.
INPUT, OUTPUTS = "images", ("boxes", "scores")


class InferenceGraph(nn.Module):
    """images uint8 (B, S, S, 3) RGB, already resized to the network size S ->
    boxes float32 (B, N, 4) normalised (x1, y1, x2, y2), scores float32 (B, N, C+1) softmax, background at 0.

    `network` runs in `dtype` (the input is normalised straight into it); decoding and softmax are float32.
    """

    def __init__(self, network: nn.Module, cfg: SSDConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.network = network
        self.cfg = cfg
        self.dtype = dtype
        # Not in the state dict: the config makes them. Stays float32 when the network goes half precision.
        self.register_buffer("priors", prior_layout(cfg).boxes, persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # NHWC -> NCHW as a view: the result is already in channels-last memory order, which convolutions prefer.
        x = normalise(images.permute(0, 3, 1, 2), self.cfg, self.dtype)
        loc, conf = self.network(x)
        return decode(loc.float(), self.priors, self.cfg.variances), conf.float().softmax(dim=-1)
