"""Mixed precision: the autocast dtype of a run (`amp_choice`), and which depthwise layers train in float32 under
bfloat16 autocast (`float32_depthwise`).

On some CPUs with AVX512-BF16 a depthwise convolution's forward is faster in bfloat16 but its backward is not:
the 5×5 weight gradient and the strided input gradient can be several times slower than in float32, enough to
make a bfloat16 step slower than a float32 one. Which shapes lose depends on the CPU and the library, so the
engine times each depthwise layer of the base at its training shape both ways, on a copy and random data, and
runs in float32 those that are faster so (`ssd.efficientnet_lite.ConvBN.float32_under_autocast`). Those layers
then round less, not more, than under autocast; the choice is kept in the checkpoint, so a resumed run computes
as the uninterrupted one.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.distributed as dist
from torch import nn

from ssd.backends import cpu_has_native_bf16
from ssd.efficientnet_lite import ConvBN

from .recipe import Recipe

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


def amp_choice(recipe: Recipe, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype of the forward pass (None: float32) and why. `auto`: bfloat16 on a GPU, and on a CPU
    that multiplies bfloat16 in hardware (AVX512-BF16 or AMX), where it trains faster and as well as float32
    (docs/library.md, 'bfloat16'; docs/experiments.md, the parity checks); float32 on other CPUs, which only
    emulate bfloat16."""
    if recipe.amp == "off":
        return None, "off"
    if recipe.amp == "fp16":
        return torch.float16, "fp16"
    if recipe.amp == "bf16":
        return torch.bfloat16, "bf16"
    if device.type == "cuda":
        return torch.bfloat16, "auto: bf16 on the GPU"
    if cpu_has_native_bf16():
        return torch.bfloat16, "auto: bf16, this CPU has native bfloat16"
    return None, "auto: float32, this CPU has no native bfloat16"


def float32_depthwise(model: nn.Module, recipe: Recipe, autocast, image_size: int, memory_format,
                      chosen: list[str] | None = None, is_main: bool = True,
                      world: int = 1) -> tuple[list[str], str | None]:
    """Under bf16 autocast on a CPU (`autocast`, the dtype of `amp_choice`), with --depthwise-precision auto: put
    in float32 the depthwise layers of `model` that train faster so, timed at a fresh start by the main process for
    all of them; on a resume, `chosen`, those the checkpoint's run chose, so that the resumed run computes what the
    uninterrupted one would have. Returns (the layers in float32, in the model's order, what was done for the
    start-up line); ([], None) where it does not apply."""
    layers = depthwise_layers(model)
    device = next(model.parameters()).device
    if not (layers and autocast is torch.bfloat16 and device.type == "cpu" and recipe.depthwise_precision == "auto"):
        return [], None
    how = "as the checkpoint's run chose"
    if chosen is None:
        how = "faster so on this CPU"
        if is_main:
            chosen = choose_depthwise_precision(model, recipe.batch_size, image_size, autocast, memory_format)
        if world > 1:
            box = [chosen]
            dist.broadcast_object_list(box, src=0)
            chosen = box[0]
    return set_float32_layers(model, chosen), f"{len(chosen)} of {len(layers)} depthwise layers in float32, {how}"
