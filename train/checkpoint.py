"""A run's checkpoint, <run>/last.ckpt: written atomically, read back checked, and resumed exactly; the lock that
keeps one trainer per run folder; and the bound every saved weight stays within.

A checkpoint is a torch.save'd dict: "model", "optimizer", "scheduler" and "scaler" (state dicts), "state"
(`TrainState` as a dict), "rng" (`rng_state`), "config" (`SSDConfig.to_dict`), "recipe" (`Recipe` as a dict),
"classes", "depthwise_float32" (the layers `train.amp` put in float32) and "log_window" (`LogWindow.state`).
Checkpoints written before the last three keys existed resume too.
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ssd import SSDConfig

from .errors import RunError
from .recipe import Recipe, lr_factor

__all__ = ["CHECKPOINT", "EXPORT_DTYPE", "EXPORT_LIMIT", "all_within", "apply_recipe_changes", "beyond",
           "lock_run_folder", "read_checkpoint", "remove_stale_temporary", "rng_state", "save_checkpoint",
           "set_rng_state"]

CHECKPOINT = "last.ckpt"

# The exported weights' type (`Trainer.export`). A weight beyond its range would be infinite in the export, so a
# step that puts one there counts as non-finite: the model, its checkpoints and its exports stay within it.
EXPORT_DTYPE = torch.float16
EXPORT_LIMIT = torch.finfo(EXPORT_DTYPE).max


def all_within(tensors, limit: float) -> torch.Tensor:
    """One boolean tensor: every value of every tensor is finite and at most `limit` in magnitude."""
    inf = float("inf")
    return torch.stack([torch.linalg.vector_norm(t.detach(), inf).float() for t in tensors]).max() <= limit


def beyond(state: dict, limit: float) -> list[str]:
    """The names of the floating-point tensors of `state` with a value that is not finite or beyond `limit`."""
    return [k for k, v in state.items() if v.is_floating_point() and v.numel() and not all_within([v], limit)]


def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state):
    """Write to a temporary file, then rename: a run killed mid-write never leaves a broken checkpoint, and a
    write that fails (a full disk, a read-only folder) leaves neither a partial file nor a changed checkpoint."""
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise RunError(f"could not write {path} ({e}); free some space or choose another --out") from e


def read_checkpoint(path: Path, cfg: SSDConfig, device) -> dict | None:
    """The checkpoint at `path` on `device`, or None when there is none. RunError, saying what to do, when it
    cannot be read, was trained with another config, or holds weights beyond the export's range."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        ckpt["config"], ckpt["model"], ckpt["state"]  # noqa: B018 (a checkpoint of this engine has them)
    except Exception as e:
        raise RunError(f"{path} cannot be read as a checkpoint ({type(e).__name__}: {str(e)[:200]}); it is "
                       f"truncated or not from this trainer. Move it away to start afresh") from e
    if ckpt["config"] != cfg.to_dict():
        raise RunError(f"{path} was trained with config {ckpt['config']['name']} (different fields); "
                         f"use another --out directory or the same config")
    bad = beyond(ckpt["model"], EXPORT_LIMIT)
    if bad:  # written before training kept the weights within the export's range: no step can bring them back
        raise RunError(f"{path} holds weights that are not finite as {EXPORT_DTYPE} ({bad[0]} and {len(bad) - 1} "
                       f"more): its run diverged. Move it away and train afresh with a lower --lr, or start from "
                       f"the last good export with --init-weights")
    return ckpt


def apply_recipe_changes(optimizer, scheduler, recipe: Recipe, old: dict, step: int, path: Path) -> list[str]:
    """A resumed run follows the recipe it is given now (`old`: the checkpoint's, `step`: where it resumes). The
    optimizer's own hyper-parameters come back from the checkpoint, so new values are written into it; the
    schedule reads the recipe at every step. What would change the data order (batch size, seed) is refused.
    Returns the changes, for the start-up line."""
    r = recipe
    for name in ("batch_size", "seed"):
        if name in old and old[name] != getattr(r, name):
            flag = "--" + name.replace("_", "-")
            raise RunError(f"{path} was trained with {flag} {old[name]}; resuming with {getattr(r, name)} would "
                             f"change the data order. Use {flag} {old[name]}, or another --out to start afresh")
    groups = optimizer.param_groups
    for g in groups:
        g["initial_lr"], g["momentum"] = r.lr, r.momentum
        g["lr"] = r.lr * lr_factor(step, r)
    groups[0]["weight_decay"] = r.weight_decay  # parameter_groups: [decayed, not decayed]
    scheduler.base_lrs = [r.lr] * len(groups)
    return [f"{k} {old[k]} -> {v}" for k, v in asdict(r).items() if k in old and old[k] != v]


def lock_run_folder(run_dir: Path):
    """An exclusive lock on `run_dir` for as long as the returned file stays open: a second trainer on the same
    --out is refused at its start instead of failing late or resuming from the other run's checkpoint."""
    import fcntl

    handle = open(run_dir / "run.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise RunError(f"{run_dir} is in use by another trainer ({owner}); wait for it or choose another --out"
                       ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {platform.node()}")
    handle.flush()
    return handle


def remove_stale_temporary(run_dir: Path) -> None:
    """A checkpoint write killed midway (kill -9, a lost machine) leaves its temporary file, as large as a
    checkpoint; with the run folder locked, no other trainer is writing it."""
    tmp = (run_dir / CHECKPOINT).with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
        print(f"[train] removed {tmp}, left by a checkpoint write that was killed")
