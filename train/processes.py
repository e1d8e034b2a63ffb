"""The processes of a run: torchrun's ranks (`distributed_context`), the settings a training process makes before
its first step (`speed_up_the_process`), and what data-parallel replicas compute together: the MultiBox
normaliser over the global batch (`global_positives`) and one decision for all (`agree`)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ssd.heap import keep_freed_memory

__all__ = ["agree", "distributed_context", "global_positives", "speed_up_the_process"]


def distributed_context():
    """(rank, world, local_rank) from torchrun's environment; initialises the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def speed_up_the_process() -> str:
    """Process-wide settings for a training process, made before its first step (they hold for threads started
    later): denormal floats flushed to zero, which a trained model's small float32 gradients otherwise hit on
    the CPU (values below 1.2e-38; bfloat16 autocast already rounds far more), and freed memory kept for the next
    step instead of being mapped afresh (`ssd.heap.keep_freed_memory`). Returns what it set, for the start-up
    line."""
    done = ["denormals flushed"] if torch.set_flush_denormal(True) else []
    if keep_freed_memory():
        done.append("freed memory kept")
    return ", ".join(done) or "no process settings (neither applies here)"


def global_positives(world: int):
    """The MultiBox normalizer of data-parallel training: the positives of the *global* batch, per replica, so
    that DDP's gradient average equals the gradient of one process on the whole batch."""

    def normalizer(num_pos: torch.Tensor) -> torch.Tensor:
        if world > 1:
            dist.all_reduce(num_pos)
        return num_pos.clamp_min(1) / world

    return normalizer


def agree(flag: torch.Tensor, world: int) -> bool:
    """One decision for all replicas: true only where it is true on every process."""
    if world > 1:
        flag = flag.float()
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)
