"""Where a run's weights start (--init-weights): a .safetensors written by training, e.g. the shipped weights,
instead of ImageNet's base and fresh extra layers and heads. Tensors whose name or shape do not fit (another
number of classes, another base network) keep their initialisation."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ssd import SSDConfig
from ssd.bases import base_network
from ssd.weight_storage import read_tensors, tensor_shapes
from ssd.weights_files import card_beside

from .checkpoint import EXPORT_DTYPE, EXPORT_LIMIT, beyond
from .errors import RunError

__all__ = ["base_in_init_weights", "load_init_weights", "top_down_of"]


def top_down_of(init_weights, cfg: SSDConfig) -> int:
    """The top-down path (`SSDConfig.top_down`) of the network `init_weights` was trained as, where its card says it
    is one on `cfg`'s base: a fine-tune of a file (the shipped one by default) then keeps every tensor of it, its
    path included. Else `cfg`'s own."""
    if not init_weights or not Path(init_weights).is_file():
        return cfg.top_down
    try:
        theirs = card_beside(init_weights).ssd_config()
        if theirs.backbone != cfg.backbone:
            return cfg.top_down
        return cfg.replace(top_down=theirs.top_down).top_down  # SSDConfig refuses a path past cfg's source layers
    except (OSError, ValueError):
        return cfg.top_down


def base_in_init_weights(model: nn.Module, cfg: SSDConfig, init_weights) -> dict | str | None:
    """Where the base of `init_weights` came from (its model card's `base_weights`), when that file holds every
    tensor of the base network of `model` with its shapes; else None (the base starts from ImageNet)."""
    if not init_weights or not base_network(cfg.backbone).pretrained or not Path(init_weights).is_file():
        return None
    theirs = {k: shape for k, shape in tensor_shapes(init_weights).items() if k.startswith("base.")}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("base.")}
    if theirs != ours:
        return None
    try:
        info = card_beside(init_weights).base_weights
    except (OSError, ValueError):
        info = None
    return info or f"the base network of {Path(init_weights).name} (no card beside it says where it came from)"


def load_init_weights(model: nn.Module, cfg: SSDConfig, path: Path, verbose: bool = True) -> None:
    """Load into `model` the tensors of `path` whose names and shapes fit, the base network's only where the file
    holds the same base network; `verbose`: say what was taken and what kept its initialisation."""
    if not path.exists():
        raise FileNotFoundError(f"--init-weights {path}: no such file")
    theirs = read_tensors(path)
    ours = model.state_dict()
    fits = {k: theirs[k].to(v.dtype) for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape}
    # Another base network (Lite0 weights for a Lite1 SSD): many of its tensors have our names and shapes, in
    # blocks that do other work, so the base keeps its ImageNet weights and only the extra layers and heads
    # are taken.
    base = {k for k in ours if k.startswith("base.")}
    other_base = base != {k for k in theirs if k.startswith("base.")} or any(k not in fits for k in base)
    if other_base:
        fits = {k: v for k, v in fits.items() if not k.startswith("base.")}
    if not fits:
        raise ValueError(f"--init-weights {path}: none of its tensors fits {cfg.name} (another base network?)")
    bad = beyond(fits, EXPORT_LIMIT)
    if bad:  # every step from them would be skipped (`Trainer._step`)
        raise RunError(f"--init-weights {path}: {len(bad)} of its tensors are not finite as {EXPORT_DTYPE} (e.g. "
                       f"{bad[0]}): a diverged run's weights. Choose an export from before it diverged")
    model.load_state_dict(fits, strict=False)
    if verbose:
        left = sorted(set(ours) - set(fits) - (base if other_base else set()))
        print(f"[train] initialised {len(fits)}/{len(ours)} tensors from {path}"
              + (f"; its base network is another one: ours keeps its ImageNet weights ({len(base)} tensors)"
                 if other_base else "")
              + (f"; kept the initialisation of {len(left)} that do not fit (e.g. {left[0]})" if left else ""))
