"""Which depthwise layers train in float32 under bfloat16 autocast.

On an AMD EPYC with AVX512-BF16 (torch 2.14.1, oneDNN), a depthwise convolution's forward is faster in bfloat16,
but its backward is not always: the 5×5 weight gradient and the strided input gradient ran 2–7× slower than in
float32, so that in a bfloat16 step the depthwise layers took twice as long as in a float32 one. Which shapes lose
depends on the CPU and the library, so the engine times each depthwise layer of the base at its training shape
both ways, on a copy and random data, and runs in float32 those that are faster so
(`ssd.efficientnet_lite.ConvBN.float32_under_autocast`). Those layers then round less, not more, than under
autocast; the choice is kept in the checkpoint, so a resumed run computes as the uninterrupted one.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from ssd.efficientnet_lite import ConvBN

MARGIN = 0.9  # float32 must take at most this share of the bfloat16 time: a clear win, not noise


def depthwise_layers(model: nn.Module) -> dict[str, ConvBN]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, ConvBN) and m[0].groups > 1 and m[0].groups == m[0].in_channels}


def set_float32_layers(model: nn.Module, names) -> list[str]:
    """Run exactly the depthwise layers `names` in float32 under autocast; returns them in the model's order."""
    names = set(names)
    unknown = names - set(depthwise_layers(model))
    if unknown:
        raise ValueError(f"not depthwise layers of this model: {sorted(unknown)}")
    for name, layer in depthwise_layers(model).items():
        layer.float32_under_autocast = name in names
    return [name for name in depthwise_layers(model) if name in names]


def input_shapes(model: nn.Module, layers: dict[str, ConvBN], image_size: int, device, memory_format):
    """Each layer's input shape for one image (an eval-mode pass, so BatchNorm's statistics stay as they are)."""
    shapes, hooks = {}, []

    def record(name):
        def hook(_, args):
            shapes.setdefault(name, args[0].shape)  # returns None: the input goes on unchanged
        return hook

    for name, m in layers.items():
        hooks.append(m.register_forward_pre_hook(record(name)))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device).contiguous(memory_format=memory_format))
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return shapes


def _time(layer: ConvBN, x: torch.Tensor, dtype, in_float32: bool, repeats: int) -> float:
    layer.float32_under_autocast = in_float32
    trains = any(p.requires_grad for p in layer.parameters())
    seconds = []
    for i in range(repeats + 1):  # the first is warm-up
        inp = x.detach().requires_grad_(trains)
        start = time.perf_counter()
        with torch.autocast(x.device.type, dtype=dtype):
            y = layer(inp)
        if trains:
            y.backward(torch.ones_like(y))
        if i:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def choose_depthwise_precision(model: nn.Module, batch_size: int, image_size: int, dtype=torch.bfloat16,
                               memory_format=torch.channels_last, repeats: int = 3) -> list[str]:
    """Mark the depthwise layers of `model` that train faster in float32 than in `dtype` autocast (their forward
    and, if they train, backward, at `batch_size`); returns their names. Layers of one shape are timed once."""
    layers = depthwise_layers(model)
    if not layers:
        return []
    device = next(model.parameters()).device
    shapes = input_shapes(model, layers, image_size, device, memory_format)
    verdicts, chosen = {}, []
    for name, layer in layers.items():
        conv = layer[0]
        key = (tuple(shapes[name][1:]), conv.kernel_size, conv.stride, layer.training,
               any(p.requires_grad for p in layer.parameters()))
        if key not in verdicts:
            trial = copy.deepcopy(layer)
            x = torch.randn(batch_size, *shapes[name][1:], device=device, dtype=dtype).contiguous(
                memory_format=memory_format)
            low = _time(trial, x, dtype, False, repeats)
            high = _time(trial, x, dtype, True, repeats)
            verdicts[key] = high <= MARGIN * low
        layer.float32_under_autocast = verdicts[key]
        if verdicts[key]:
            chosen.append(name)
    return chosen
