"""How a run trains (`Recipe`: everything but the model config and the data), where it stands (`TrainState`,
kept in the checkpoint), and what follows from the recipe alone: the learning rate of every step (`lr_factor`)
and which parameters decay (`parameter_groups`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from .errors import RunError

__all__ = ["Recipe", "TrainState", "lr_factor", "parameter_groups"]


@dataclass
class Recipe:
    """How to train (everything except the model config and the data)."""

    batch_size: int = 32  # per process
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # "cosine", "multistep" (x0.1 at 2/3 and 5/6 of training, as the paper's 40k/50k/60k), or "cyclic": a cosine
    # from lr to 0 over every `snapshot_every` steps, so that each snapshot is taken where its cycle ends
    # (stochastic weight averaging's cyclical schedule; python -m train.average averages the snapshots).
    schedule: str = "cosine"
    warmup_steps: int = 500
    max_steps: int = 10_000
    time_budget_s: float | None = None
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bfloat16, else off), bf16, fp16, off
    # Under bf16 autocast on a CPU: "auto" runs in float32 the depthwise layers that train faster so on this CPU
    # (timed at start-up, train.amp); "autocast" leaves every layer to autocast.
    depthwise_precision: str = "auto"
    workers: int = 4
    seed: int = 0
    log_every: int = 20
    eval_every: int = 0  # steps; 0: only at the end
    eval_limit: int | None = None  # evaluate on the first N val images
    checkpoint_every_s: float = 300.0
    max_skipped: int = 50  # non-finite losses tolerated before the run stops
    grad_clip: float | None = None
    # Start from these weights (a .safetensors written by training, e.g. the shipped demo weights) instead of
    # ImageNet; tensors whose name or shape do not fit (another number of classes) keep their initialisation.
    init_weights: str | None = None
    # Train without the images that cannot be decoded (checked once at start-up), instead of stopping.
    skip_bad_images: bool = False
    # Every N steps the weights go to <out>/snapshots/step_NNNNNN.safetensors in float32, with their card, for
    # weight averaging (python -m train.average); 0: none.
    snapshot_every: int = 0

    def __post_init__(self):
        if self.schedule == "cyclic" and self.snapshot_every <= 0:
            raise RunError("--schedule cyclic ends a cycle at every snapshot: it needs --snapshot-every N > 0")


@dataclass
class TrainState:
    step: int = 0
    skipped: int = 0
    elapsed_s: float = 0.0  # training wall time summed over all segments (resumes)
    log: list = field(default_factory=list)


def lr_factor(step: int, recipe: Recipe) -> float:
    """Linear warmup from ~0, then cosine to 0, multi-step x0.1 at 2/3 and 5/6 of max_steps, or cyclic: a cosine
    from 1 to 0 within each `snapshot_every` steps, counted from step 0 so that every snapshot ends a cycle."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    if recipe.schedule == "multistep":
        return 0.1 ** sum(step >= f * recipe.max_steps for f in (2 / 3, 5 / 6))
    if recipe.schedule == "cyclic":
        t = (step % recipe.snapshot_every) / recipe.snapshot_every
        return 0.5 * (1 + math.cos(math.pi * t))
    t = (step - recipe.warmup_steps) / max(1, recipe.max_steps - recipe.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def parameter_groups(model: nn.Module, weight_decay: float):
    """Weight decay on conv weights only: not on biases, BatchNorm or the L2Norm scale."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim == 4 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
