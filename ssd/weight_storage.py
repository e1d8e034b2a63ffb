"""How a weights file stores its tensors: float16 (training's export), float32 (training's snapshots), or int8 for
a file that must be small (the shipped demo weights stay under 10 MB: a 6 M-parameter network is 12 MB in
float16, 6 MB so).

int8 storage: each weight of two or more dimensions (the convolutions') with more than `FLOAT16_ROW_MAX` values per
output channel as int8 with one float32 scale per output channel, `w ~ q * scale`, scale = max |w| of the channel /
127 (symmetric, round to nearest); the other tensors (depthwise convolutions, biases, BatchNorm's) in float16. The
scale sits beside its tensor under `<name>:int8_scale` (no module name holds a ':', so it never meets a network's
own tensor). Reading gives float32 tensors whatever the storage: inference and training see the same state either
way, only rounded differently."""

from __future__ import annotations

import torch

__all__ = ["FLOAT16_ROW_MAX", "SCALE_SUFFIX", "described", "finite_in", "read_tensors", "stored", "tensor_shapes",
           "unpacked"]

SCALE_SUFFIX = ":int8_scale"
_INT8_MAX = 127
# A weight with this many values per output channel or fewer stays float16 under int8 storage: a depthwise
# convolution's output sums only 9 or 25 rounded products, so their rounding errors do not average out as they do
# over a wide convolution's hundreds of inputs. Few bytes (5 % of an EfficientNet-Lite SSD's weights), and int8 there
# cost the SSD384-Lite0 with its top-down path 0.5 minival mAP (docs/experiments.md).
FLOAT16_ROW_MAX = 32


def described(dtype: torch.dtype) -> str:
    """The storage `dtype` in words, for the model card (`ModelCard.storage`)."""
    if dtype is torch.int8:
        return (f"int8 per output channel (weights of 2+ dimensions, more than {FLOAT16_ROW_MAX} values per output"
                " channel), float16 (the rest)")
    return str(dtype).removeprefix("torch.")


def finite_in(dtype: torch.dtype) -> torch.dtype:
    """The floating dtype a state's values must be finite in to be stored as `dtype` (int8 storage keeps the small
    tensors in float16)."""
    return torch.float16 if dtype is torch.int8 else dtype


def stored(state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The tensors to write for `state` (a network's float32 state dict), on the CPU and contiguous: floating
    tensors as `dtype`, or under torch.int8 as the module's docstring says (wide convolutions int8, the rest
    float16); integer tensors (BatchNorm's counters) as they are."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        if not v.is_floating_point():
            out[k] = v.contiguous()
        elif dtype is not torch.int8:
            out[k] = v.to(dtype).contiguous()
        elif v.dim() >= 2 and v.numel() > 0 and v[0].numel() > FLOAT16_ROW_MAX:
            rows = v.float().reshape(v.shape[0], -1)
            scale = rows.abs().amax(dim=1) / _INT8_MAX
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel stays zero
            q = torch.round(rows / safe[:, None]).clamp(-_INT8_MAX, _INT8_MAX)
            out[k] = q.to(torch.int8).reshape(v.shape).contiguous()
            out[k + SCALE_SUFFIX] = scale.contiguous()
        else:
            out[k] = v.to(torch.float16).contiguous()
    return out


def unpacked(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's state from a file's tensors: floating tensors as float32, int8 ones times their scales.
    ValueError names an int8 tensor without its scale or a scale without its tensor (a damaged file: its raw
    integers would load as weights and detect nothing)."""
    out = {}
    for k, v in tensors.items():
        if k.endswith(SCALE_SUFFIX):
            if k.removesuffix(SCALE_SUFFIX) not in tensors:
                raise ValueError(f"{k}: a scale without its int8 tensor (a damaged weights file)")
            continue
        scale = tensors.get(k + SCALE_SUFFIX)
        if v.dtype is torch.int8 and scale is None:
            raise ValueError(f"{k}: an int8 tensor without its scale {k + SCALE_SUFFIX} (a damaged weights file)")
        if scale is not None:
            out[k] = v.float() * scale.float().reshape(-1, *([1] * (v.dim() - 1)))
        else:
            out[k] = v.float() if v.is_floating_point() else v
    return out


def read_tensors(path) -> dict[str, torch.Tensor]:
    """The network's state stored in the .safetensors file `path`, in float32 whatever its storage."""
    from safetensors.torch import load_file

    return unpacked(load_file(str(path)))


def tensor_shapes(path) -> dict[str, tuple[int, ...]]:
    """The network's tensors in the .safetensors file `path` and their shapes, without reading their values."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if not k.endswith(SCALE_SUFFIX)}
