"""The training loop: SGD + warmup/cosine (or multi-step) LR, AMP, channels_last, DDP via torchrun,
time budget, atomic checkpoints with exact resume, a CSV log, and export of the shipped weights.

Exact resume: the data order of epoch e is a permutation seeded by (seed, e), and every sample's
augmentation draws from an RNG seeded by (seed, e, index) (train.datasets.DetectionDataset) — so a run
that stops after any step and resumes sees exactly the batches it would have seen, whatever the number of
DataLoader workers.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import platform
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ssd import Detector, MultiBoxLoss, SSDConfig, build_ssd, export_weights
from ssd.backends import cpu_has_native_bf16
from ssd.evaluation import evaluate_detector
from ssd.heap import keep_freed_memory
from ssd.image import normalise
from ssd.weights_files import CARD_SUFFIX, LOG_SUFFIX, beside

from .card import model_card
from .checks import SubsetSource, check_images
from .datasets import DatasetError, DetectionDataset, collate
from .precision import choose_depthwise_precision, depthwise_layers, set_float32_layers

CHECKPOINT = "last.ckpt"
WEIGHTS = "weights.safetensors"  # the run's export, beside its checkpoint
SNAPSHOTS = "snapshots"
IMAGE_CHECK_CACHE = "checked_images.json"
LOG_CSV = "log.csv"
LOG_FIELDS = ["step", "epoch", "elapsed_s", "img_per_s", "loss", "loc_loss", "conf_loss", "lr", "skipped",
              "val_map", "val_map_area"]


# The exported weights' type (`Trainer.export`). A weight beyond its range would be infinite in the export, so a
# step that puts one there counts as non-finite: the model, its checkpoints and its exports stay within it.
EXPORT_DTYPE = torch.float16
EXPORT_LIMIT = torch.finfo(EXPORT_DTYPE).max


class RunError(ValueError):
    """A run that cannot start or go on for a reason the user can fix (the run folder, its checkpoint, options
    that do not fit it): the command line reports it as one `error:` line."""


class Diverged(RunError):
    """Too many steps of a run were not finite, or all of them were: the run stops without saving or exporting,
    so its checkpoint stays at the last step before those."""


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
    # (timed at start-up, train.precision); "autocast" leaves every layer to autocast.
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


# ----------------------------------------------------------------------------------------------- data
class EpochSampler(Sampler):
    """Yields (epoch, index) pairs: a seeded permutation per epoch, this process's shard of it, and only the
    batches from `start_batch` on (resume mid-epoch). Full batches only, the same count on every process."""

    def __init__(self, n, batch_size, seed, epoch=0, start_batch=0, rank=0, world=1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.start_batch, self.rank, self.world = epoch, start_batch, rank, world

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)
        per_rank = self.batches_per_epoch() * self.batch_size
        mine = order[self.rank::self.world][:per_rank][self.start_batch * self.batch_size:]
        return iter((self.epoch, int(i)) for i in mine)

    def __len__(self):
        return (self.batches_per_epoch() - self.start_batch) * self.batch_size


# ----------------------------------------------------------------------------------------------- pieces
def distributed_context():
    """(rank, world, local_rank) from torchrun's environment; initialises the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def parameter_groups(model: nn.Module, weight_decay: float):
    """Weight decay on conv weights only: not on biases, BatchNorm or the L2Norm scale."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim == 4 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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


def amp_choice(recipe: Recipe, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype of the forward pass (None: float32) and why. `auto`: bfloat16 on a GPU, and on a CPU
    that multiplies bfloat16 in hardware (AVX512-BF16 or AMX), where it trains faster and as well as float32
    (README: Benchmarks, parity check); float32 on other CPUs, which only emulate bfloat16."""
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


def memory_format(device: torch.device, cfg: SSDConfig | None = None):
    """channels_last on the GPU (tensor cores want NHWC). On the CPU it depends on the base network: oneDNN's
    NHWC backward of VGG's dense 3x3 convs is slower than NCHW, while EfficientNet-Lite0's depthwise convs are
    faster in NHWC (bench/train.py measures both; numbers in the README)."""
    if device.type == "cuda" or (cfg is not None and cfg.backbone != "vgg16"):
        return torch.channels_last
    return torch.contiguous_format


def global_positives(world: int):
    """The MultiBox normalizer of data-parallel training: the positives of the *global* batch, per replica, so
    that DDP's gradient average equals the gradient of one process on the whole batch."""

    def normalizer(num_pos: torch.Tensor) -> torch.Tensor:
        if world > 1:
            dist.all_reduce(num_pos)
        return num_pos.clamp_min(1) / world

    return normalizer


def compute_loss(model, criterion: MultiBoxLoss, images, boxes, labels, autocast_dtype=None, fmt=None):
    """MultiBox loss of one (per-process) batch of uint8 images: (loc, conf) losses."""
    cfg, device = criterion.cfg, criterion.priors.device
    x = normalise(images.to(device, non_blocking=True), cfg)
    x = x.contiguous(memory_format=fmt if fmt is not None else memory_format(device, cfg))
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        loc, conf = model(x)
    return criterion(loc, conf, boxes, labels)


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


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, a container or a Space stopping the job, `kill`) arrived during training."""


@contextmanager
def terminate_as_interrupt():
    """SIGTERM stops training the way Ctrl-C does: the last completed step is saved first. Only the main thread
    can take signals; elsewhere (training in a thread) SIGTERM keeps its own meaning."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def ignore_sigterm(worker_id: int = 0) -> None:
    """A DataLoader worker's start: SIGTERM is the main process's to act on. When it reaches the whole process
    group (`kill -- -PGID`, a service manager stopping the job), a worker it killed would make the main process's
    next call, the checkpoint's save included, fail with "DataLoader worker ... killed by signal". The main
    process stops the workers itself once it has saved; a worker whose main process is gone exits on its own."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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


def log_path(weights) -> Path:
    """The training log that goes with exported weights: `<stem>.log.csv` beside them (for the app's Model tab)."""
    return beside(weights, LOG_SUFFIX)


def write_log_csv(path: Path, rows: list[dict]):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_log(run_dir: Path, rows: list[dict]):
    """The run's log.csv; `python -m visualize.plots RUN_DIR` draws its curves (training draws nothing, so it
    imports no plotting library)."""
    write_log_csv(run_dir / LOG_CSV, rows)


# ----------------------------------------------------------------------------------------------- the loop
class LogWindow:
    """The steps since the last log row: their mean losses and images per second. A checkpoint keeps its `state()`,
    so that the first row after a resume averages the same steps as the uninterrupted run's."""

    LOSSES = ("loss", "loc_loss", "conf_loss")

    def __init__(self, saved: dict | None = None):
        self._reset()
        if saved:
            self.images, self.sums, self.steps = saved["images"], list(saved["sums"]), saved["steps"]
            self.start -= saved["seconds"]  # the time between the segments is not training

    def _reset(self):
        self.start, self.images, self.sums, self.steps = time.perf_counter(), 0, [0.0] * 3, 0

    def state(self) -> dict:
        return {"images": self.images, "sums": list(self.sums), "steps": self.steps,
                "seconds": time.perf_counter() - self.start}

    def add(self, losses: tuple[float, float, float] | None, images: int):
        """One step's (loss, loc, conf), or None for a skipped step, which counts for speed only."""
        self.images += images
        if losses is not None:
            self.sums = [a + b for a, b in zip(self.sums, losses)]
            self.steps += 1

    def close(self) -> dict:
        """{"img_per_s", "losses"} of the window, and a new window starts. A window of skipped steps only has no
        loss: NaN, not 0, in the log and the curves."""
        row = {"img_per_s": round(self.images / (time.perf_counter() - self.start), 2),
               "losses": {k: round(v / self.steps, 5) if self.steps else float("nan")
                          for k, v in zip(self.LOSSES, self.sums)}}
        self._reset()
        return row


class Trainer:
    """Train `cfg` on `train_source` (anything with load(i)/len/classes) with `transform`; checkpoints,
    logs and the exported weights go to `run_dir`. `val_source` (optional) is evaluated for val mAP."""

    def __init__(self, cfg: SSDConfig, recipe: Recipe, train_source, transform, run_dir, val_source=None,
                 data_description: str = "", device=None):
        self.rank, self.world, local_rank = distributed_context()
        if device is None:
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        self.cfg, self.recipe = cfg, recipe
        self.train_source, self.val_source = train_source, val_source
        self.class_names = list(train_source.classes)
        self.data_description = data_description
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = lock_run_folder(self.run_dir) if self.is_main else None
        except OSError as e:
            raise RunError(f"cannot use {self.run_dir} as the run folder ({e}); choose another --out") from e
        if self.is_main:
            self._remove_stale_temporary()
        torch.manual_seed(recipe.seed)
        # The base network starts from ImageNet where the project has those weights (EfficientNet-Lite), unless
        # --init-weights holds the same base network, whose tensors replace ImageNet's anyway: then the ImageNet
        # package is not needed (a machine that has only the repository and the init weights can train). A
        # resumed run overwrites either with the checkpoint's.
        self.model = build_ssd(cfg)
        self.inherited_base = self._base_in_init_weights(recipe.init_weights)
        if self.inherited_base is None:
            self.model.load_pretrained_base()
        self.model.to(self.device, memory_format=memory_format(self.device, cfg))
        self.ddp = (nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device] if
                                                        self.device.type == "cuda" else None)
                    if self.world > 1 else self.model)
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, recipe.weight_decay), lr=recipe.lr,
                                         momentum=recipe.momentum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, recipe))
        self.autocast, self.amp_reason = amp_choice(recipe, self.device)
        self.depthwise_float32: list[str] = []  # layers that train in float32 under bf16 autocast
        self._checkpoint_depthwise: list[str] | None = None
        # fp16 needs loss scaling; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast is torch.float16)
        self.criterion = MultiBoxLoss(cfg, global_positives(self.world)).to(self.device)
        self.dataset = DetectionDataset(self._checked(train_source), transform, seed=recipe.seed)
        self.state = TrainState()
        self._window = LogWindow()  # the log's running averages since its last row
        self._skipping = False  # whether the latest step was skipped
        self.resumed = self._maybe_resume()
        self._saved_step = self.state.step  # the step of the checkpoint on disk, if any
        self._sampler()  # at least one batch, checked before any checkpoint is written
        if not self.resumed and recipe.init_weights:
            self._load_init_weights(Path(recipe.init_weights))
        self._choose_depthwise_precision()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _remove_stale_temporary(self):
        """A checkpoint write killed midway (kill -9, a lost machine) leaves its temporary file, as large as a
        checkpoint; with the run folder locked, no other trainer is writing it."""
        tmp = (self.run_dir / CHECKPOINT).with_suffix(".tmp")
        if tmp.exists():
            tmp.unlink()
            print(f"[train] removed {tmp}, left by a checkpoint write that was killed")

    def _checked(self, source):
        """The training images, each decoded once before the run (cached in the run folder): a bad one stops the
        start with the list, or is left out with --skip-bad-images."""
        cache = self.run_dir / IMAGE_CHECK_CACHE if self.is_main else None
        bad = check_images(source, cache, progress=self.is_main)
        if not bad:
            return source
        listing = "\n  ".join(problem for _, problem in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        if not self.recipe.skip_bad_images:
            raise DatasetError(f"{len(bad)} of {len(source)} training images cannot be decoded:\n  {listing}{more}\n"
                               "Fix or remove them, or pass --skip-bad-images to train without them")
        if self.is_main:
            print(f"[train] warning: leaving out {len(bad)} of {len(source)} training images that cannot be "
                  f"decoded:\n  {listing}{more}")
        self.data_description += f"; {len(bad)} undecodable training images left out"
        failed = {i for i, _ in bad}
        return SubsetSource(source, [i for i in range(len(source)) if i not in failed])

    def _maybe_resume(self) -> bool:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return False
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=False)
            ckpt["config"], ckpt["model"], ckpt["state"]  # noqa: B018 (a checkpoint of this engine has them)
        except Exception as e:
            raise RunError(f"{path} cannot be read as a checkpoint ({type(e).__name__}: {str(e)[:200]}); it is "
                           f"truncated or not from this trainer. Move it away to start afresh") from e
        if ckpt["config"] != self.cfg.to_dict():
            raise RunError(f"{path} was trained with config {ckpt['config']['name']} (different fields); "
                             f"use another --out directory or the same config")
        bad = beyond(ckpt["model"], EXPORT_LIMIT)
        if bad:  # written before training kept the weights within the export's range: no step can bring them back
            raise RunError(f"{path} holds weights that are not finite as {EXPORT_DTYPE} ({bad[0]} and {len(bad) - 1} "
                           f"more): its run diverged. Move it away and train afresh with a lower --lr, or start from "
                           f"the last good export with --init-weights")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        self._window = LogWindow(ckpt.get("log_window"))
        set_rng_state(ckpt["rng"])
        self._checkpoint_depthwise = ckpt.get("depthwise_float32")
        changed = self._apply_recipe_changes(ckpt.get("recipe", {}), path)
        if self.is_main:
            print(f"[train] resumed from {path} at step {self.state.step}"
                  + (f"; recipe changes that take effect now: {', '.join(changed)}" if changed else ""))
        return True

    def _apply_recipe_changes(self, old: dict, path: Path) -> list[str]:
        """A resumed run follows the recipe it is given now. The optimizer's own hyper-parameters come back from
        the checkpoint, so new values are written into it; the schedule reads the recipe at every step. What
        would change the data order (batch size, seed) is refused."""
        r = self.recipe
        for name in ("batch_size", "seed"):
            if name in old and old[name] != getattr(r, name):
                flag = "--" + name.replace("_", "-")
                raise RunError(f"{path} was trained with {flag} {old[name]}; resuming with {getattr(r, name)} would "
                                 f"change the data order. Use {flag} {old[name]}, or another --out to start afresh")
        groups = self.optimizer.param_groups
        for g in groups:
            g["initial_lr"], g["momentum"] = r.lr, r.momentum
            g["lr"] = r.lr * lr_factor(self.state.step, r)
        groups[0]["weight_decay"] = r.weight_decay  # parameter_groups: [decayed, not decayed]
        self.scheduler.base_lrs = [r.lr] * len(groups)
        return [f"{k} {old[k]} -> {v}" for k, v in asdict(r).items() if k in old and old[k] != v]

    def _base_in_init_weights(self, init_weights) -> dict | str | None:
        """Where the base of `init_weights` came from (its model card's `base_weights`), when that file holds every
        tensor of our base network with our shapes; else None (the base starts from ImageNet)."""
        if not init_weights or self.cfg.backbone == "vgg16" or not Path(init_weights).is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(init_weights), "pt") as f:
            theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("base.")}
        ours = {k: tuple(v.shape) for k, v in self.model.state_dict().items() if k.startswith("base.")}
        if theirs != ours:
            return None
        card = beside(init_weights, CARD_SUFFIX)
        try:
            info = json.loads(card.read_text()).get("base_weights")
        except (OSError, ValueError):
            info = None
        return info or f"the base network of {Path(init_weights).name} (no card beside it says where it came from)"

    def _load_init_weights(self, path: Path):
        from safetensors.torch import load_file

        if not path.exists():
            raise FileNotFoundError(f"--init-weights {path}: no such file")
        theirs = load_file(str(path))
        ours = self.model.state_dict()
        fits = {k: theirs[k].to(v.dtype) for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape}
        # Another base network (Lite0 weights for a Lite1 SSD): many of its tensors have our names and shapes, in
        # blocks that do other work, so the base keeps its ImageNet weights and only the extra layers and heads
        # are taken.
        base = {k for k in ours if k.startswith("base.")}
        other_base = base != {k for k in theirs if k.startswith("base.")} or any(k not in fits for k in base)
        if other_base:
            fits = {k: v for k, v in fits.items() if not k.startswith("base.")}
        if not fits:
            raise ValueError(f"--init-weights {path}: none of its tensors fits {self.cfg.name} (another base network?)")
        bad = beyond(fits, EXPORT_LIMIT)
        if bad:  # every step from them would be skipped (`_step`)
            raise RunError(f"--init-weights {path}: {len(bad)} of its tensors are not finite as {EXPORT_DTYPE} (e.g. "
                           f"{bad[0]}): a diverged run's weights. Choose an export from before it diverged")
        self.model.load_state_dict(fits, strict=False)
        if self.is_main:
            left = sorted(set(ours) - set(fits) - (base if other_base else set()))
            print(f"[train] initialised {len(fits)}/{len(ours)} tensors from {path}"
                  + (f"; its base network is another one: ours keeps its ImageNet weights ({len(base)} tensors)"
                     if other_base else "")
                  + (f"; kept the initialisation of {len(left)} that do not fit (e.g. {left[0]})" if left else ""))

    def save(self):
        if self.is_main:
            bad = beyond(self.model.state_dict(), EXPORT_LIMIT)
            if bad:  # never replace a good checkpoint with a broken one
                raise RuntimeError(f"the model holds values that are not finite as {EXPORT_DTYPE} ({bad[0]} and "
                                   f"{len(bad) - 1} more); {self.run_dir / CHECKPOINT} was left as it was")
            save_checkpoint(self.run_dir / CHECKPOINT, model=self.model.state_dict(),
                            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                            scaler=self.scaler.state_dict(), state=asdict(self.state), rng=rng_state(),
                            config=self.cfg.to_dict(), recipe=asdict(self.recipe), classes=self.class_names,
                            depthwise_float32=self.depthwise_float32, log_window=self._window.state())
            write_log(self.run_dir, self.state.log)
        self._saved_step = self.state.step

    def _choose_depthwise_precision(self):
        """Under bf16 autocast on a CPU, the depthwise layers that train in float32 (train.precision): timed at a
        fresh start, by the main process for all of them; on a resume, those the checkpoint's run chose, so that
        the resumed run computes what the uninterrupted one would have."""
        layers = depthwise_layers(self.model)
        if not (layers and self.autocast is torch.bfloat16 and self.device.type == "cpu"
                and self.recipe.depthwise_precision == "auto"):
            return
        chosen, how = self._checkpoint_depthwise, "as the checkpoint's run chose"
        if chosen is None:
            how = "faster so on this CPU"
            if self.is_main:
                chosen = choose_depthwise_precision(self.model, self.recipe.batch_size, self.cfg.image_size,
                                                    self.autocast, memory_format(self.device, self.cfg))
            if self.world > 1:
                box = [chosen]
                dist.broadcast_object_list(box, src=0)
                chosen = box[0]
        self.depthwise_float32 = set_float32_layers(self.model, chosen)
        self.amp_reason += f"; {len(chosen)} of {len(layers)} depthwise layers in float32, {how}"

    def _sampler(self, epoch: int = 0, start_batch: int = 0) -> EpochSampler:
        r = self.recipe
        sampler = EpochSampler(len(self.dataset), r.batch_size, r.seed, epoch, start_batch, self.rank, self.world)
        if sampler.batches_per_epoch() == 0:
            raise RunError(f"{len(self.dataset)} training images are fewer than one batch of "
                             f"{r.batch_size} x {self.world} processes; lower --batch-size")
        return sampler

    @property
    def steps_per_epoch(self) -> int:
        return self._sampler().batches_per_epoch()

    def _loader(self, epoch, start_batch) -> DataLoader:
        r = self.recipe
        return DataLoader(self.dataset, batch_size=r.batch_size, sampler=self._sampler(epoch, start_batch),
                          collate_fn=collate, num_workers=r.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, prefetch_factor=4 if r.workers else None, drop_last=True,
                          worker_init_fn=ignore_sigterm if r.workers else None)

    def evaluate(self, limit=None) -> dict | None:
        """VOC mAP on the val source with a copy of the current model (so eval mode / fp16 never leak)."""
        if self.val_source is None or not self.is_main:
            return None
        det = Detector(copy.deepcopy(self.model), self.cfg, self.class_names, device=self.device)
        result = evaluate_detector(det, self.val_source, limit=limit, progress=False)
        return {"val_map": float(result.map_11pt), "val_map_area": float(result.map_area), "result": result}

    def _agree(self, flag: torch.Tensor) -> bool:
        """One decision for all replicas: true only where it is true on every process."""
        if self.world > 1:
            flag = flag.float()
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag)

    def _step(self, images, boxes, labels) -> tuple[float, float, float] | None:
        """One optimisation step: (loss, loc loss, conf loss), or None when the loss or the gradients were not
        finite, or the updated weights or BatchNorm statistics not finite as EXPORT_DTYPE. A skipped step leaves
        the weights, the BatchNorm statistics and the momentum as they were before it (the forward pass updates
        the statistics, with NaN or overflow too, and a finite gradient times a huge lr can still overflow a
        weight, and its momentum the steps after), so the model, and so every checkpoint and export, only ever
        holds values the exported weights can hold."""
        r = self.recipe
        # What a step can change: the trained parameters and the BatchNorm statistics (frozen layers' never move).
        state = [t for t in (*(p for p in self.model.parameters() if p.requires_grad), *self.model.buffers())
                 if t.is_floating_point()]
        saved = [t.detach().clone() for t in state]
        momentum = {p: s["momentum_buffer"].clone() for p, s in self.optimizer.state.items()
                    if s.get("momentum_buffer") is not None}
        loc_loss, conf_loss = compute_loss(self.ddp, self.criterion, images, boxes, labels, self.autocast)
        loss = loc_loss + conf_loss
        self.optimizer.zero_grad(set_to_none=True)
        ok = self._agree(torch.isfinite(loss.detach()))
        if ok:
            self.scaler.scale(loss).backward()
            if self.scaler.is_enabled():  # fp16: the scaler skips steps with overflowing gradients itself
                if r.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip)
            else:
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip or float("inf"))
                ok = self._agree(torch.isfinite(norm))
        if ok:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            ok = self._agree(all_within(state, EXPORT_LIMIT))
        if not ok:
            with torch.no_grad():
                for t, old in zip(state, saved):
                    t.copy_(old)
                for p, s in self.optimizer.state.items():
                    if p in momentum:
                        s["momentum_buffer"].copy_(momentum[p])
                    else:  # the step made it: the next one starts it afresh, as this one would have
                        s.pop("momentum_buffer", None)
            self.optimizer.zero_grad(set_to_none=True)
            return None
        return float(loss.detach()), float(loc_loss.detach()), float(conf_loss.detach())

    def train(self, stop_after_steps: int | None = None) -> TrainState:
        """Train until max_steps, the time budget, or (tests, debugging) `stop_after_steps` more steps. Whatever
        stops it early (an error, Ctrl-C) first saves a checkpoint of the last completed step. The run folder is
        locked from the trainer's start to the end of its training (a later `train()` takes the lock again)."""
        if self.is_main and self._lock is None:
            self._lock = lock_run_folder(self.run_dir)
        try:
            with terminate_as_interrupt():
                return self._train(stop_after_steps)
        except Diverged:
            raise  # its checkpoint stays at the last step before the skipped ones
        except BaseException as stop:
            if self.is_main:
                print(f"[train] stopped at step {self.state.step}; saving {self.run_dir / CHECKPOINT} first, "
                      "so that the same command resumes from here")
            try:
                self.save()
            except RunError as e:
                if isinstance(stop, KeyboardInterrupt):  # not "saved, run the same command to resume": say why
                    raise e from stop
                print(f"[train] {e}")  # the error that stopped the run may be this one: report it, keep the first
            raise
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _train(self, stop_after_steps: int | None) -> TrainState:
        r, st = self.recipe, self.state
        stop_at = r.max_steps if stop_after_steps is None else min(r.max_steps, st.step + stop_after_steps)
        self.ddp.train()
        segment_start, elapsed0, first_step = time.perf_counter(), st.elapsed_s, st.step
        last_ckpt = segment_start
        self._segment_skipped = 0  # --max-skipped counts this run's skipped steps, not those before a resume
        self._skipping = False
        window = self._window
        progress = self._progress_bar()
        # Closed on an interrupt too, so that what the command line prints next starts on a line of its own.
        try:
            out_of_time = False
            while st.step < stop_at and not out_of_time:
                epoch, start_batch = divmod(st.step, self.steps_per_epoch)
                for images, boxes, labels in self._loader(epoch, start_batch):
                    losses = self._step(images, boxes, labels)
                    if losses is None:
                        self._count_skipped_step()
                    self._skipping = losses is None
                    window.add(losses, images.shape[0] * self.world)
                    self.scheduler.step()
                    st.step += 1
                    st.elapsed_s = elapsed0 + time.perf_counter() - segment_start
                    if progress is not None:
                        progress.update(1)
                    # An evaluation step gets a row too, even off the logging grid (--eval-every 750 --log-every 20).
                    if (st.step % r.log_every == 0 or st.step == r.max_steps
                            or (r.eval_every and st.step % r.eval_every == 0)):
                        self._log(window.close(), progress)
                    if r.snapshot_every and st.step % r.snapshot_every == 0:  # after the step's log row, if it has one
                        self.snapshot()
                    out_of_time = r.time_budget_s is not None and time.perf_counter() - segment_start >= r.time_budget_s
                    if out_of_time or st.step >= stop_at:
                        break
                    # Not amid skipped steps: the checkpoint keeps the step before them (`_count_skipped_step`).
                    if time.perf_counter() - last_ckpt > r.checkpoint_every_s and not self._skipping:
                        self.save()
                        last_ckpt = time.perf_counter()
        finally:
            if progress is not None:
                progress.close()
        if st.step > first_step and self._segment_skipped == st.step - first_step:
            raise self._diverged(f"every step of this run ({first_step + 1} to {st.step}) had a non-finite loss, "
                                 "gradients or weights and was skipped")
        self.save()
        if self.is_main and out_of_time:
            print(f"[train] time budget reached at step {st.step}/{r.max_steps}; resume with the same command")
        return st

    def _progress_bar(self):
        if not self.is_main:
            return None
        from tqdm import tqdm

        return tqdm(total=self.recipe.max_steps, initial=self.state.step, desc="train", unit="step",
                    dynamic_ncols=True, mininterval=5.0)

    def _count_skipped_step(self):
        """A step whose loss, gradients or weights were not finite (already undone by `_step`): count it, and stop
        the run when too many happened since it started. The first of a run of skipped steps first saves the
        checkpoint of the step before it (the model is as it was then), which later saves leave alone until a
        step succeeds again: a run that diverges stops with the state to resume from with a lower lr."""
        st, r = self.state, self.recipe
        if not self._skipping:
            self.save()
        st.skipped += 1
        self._segment_skipped += 1
        if self.is_main:
            print(f"[train] non-finite loss, gradients or weights at step {st.step}: step skipped "
                  f"({self._segment_skipped} in this run, {st.skipped} in all)")
        if self._segment_skipped > r.max_skipped:
            raise self._diverged(f"{self._segment_skipped} steps of this run had a non-finite loss, gradients or "
                                 f"weights (more than --max-skipped {r.max_skipped})")

    def _diverged(self, what: str) -> Diverged:
        """The error that stops a diverged run: what happened, the checkpoint it keeps, and how to go on."""
        r, export = self.recipe, self.run_dir / WEIGHTS
        return Diverged(
            f"the run diverged: {what}; nothing was exported. {self.run_dir / CHECKPOINT} keeps step "
            f"{self._saved_step}, from before these steps. The same command with a lower --lr (e.g. --lr "
            f"{r.lr / 10:g}) or more --warmup-steps resumes from there; if it skips every step too, the weights "
            f"there cannot train: start afresh in another --out with a lower --lr"
            + (f", or from this run's last export with --init-weights {export}" if export.exists() else ""))

    def _log(self, window: dict, progress):
        """One row of log.csv (and the curves): the window's losses and speed, the LR, and at every eval_every
        steps the validation mAP."""
        st, r = self.state, self.recipe
        row = {"step": st.step, "epoch": round(st.step / self.steps_per_epoch, 3), "elapsed_s": round(st.elapsed_s, 1),
               "img_per_s": window["img_per_s"], "lr": self.optimizer.param_groups[0]["lr"], "skipped": st.skipped,
               **window["losses"]}
        if r.eval_every and st.step % r.eval_every == 0 and st.step < r.max_steps:
            ev = self.evaluate(r.eval_limit)
            if ev:
                row.update(val_map=round(ev["val_map"], 4), val_map_area=round(ev["val_map_area"], 4))
            self.ddp.train()
        st.log.append(row)
        if progress is not None:
            progress.set_postfix(loss=row["loss"], img_s=row["img_per_s"], lr=f"{row['lr']:.2e}")
            progress.write(json.dumps(row))

    def log_final_evaluation(self, evaluation: dict):
        """The evaluation of the finished model goes into the last row of the log, so that the curves end at the
        mAP the weights' card reports; `_log` leaves that step to the caller's full evaluation. The checkpoint is
        saved again (with log.csv), so that a run resumed past its end with a larger --max-steps keeps the row."""
        st = self.state
        if self.is_main and st.log and st.log[-1]["step"] == st.step:
            st.log[-1].update(val_map=round(evaluation["val_map"], 4),
                              val_map_area=round(evaluation["val_map_area"], 4))
            self.save()

    def snapshot(self) -> Path | None:
        """The weights at this step, in float32 with their card and log, as <run>/snapshots/step_NNNNNN.safetensors:
        the points that stochastic weight averaging averages (python -m train.average). A resumed run writes the
        same files at the same steps."""
        path = self.run_dir / SNAPSHOTS / f"step_{self.state.step:06d}.safetensors"
        return self.export(path, complete=False, dtype=torch.float32)

    def export(self, path=None, evaluation: dict | None = None, dtype=EXPORT_DTYPE, **extra) -> Path | None:
        """The shipped format: fp16 safetensors (or `dtype`) + model card with what the run was and what it
        measured, and the training log beside them (`<stem>.log.csv`, the same rows as the run's log.csv).
        Weights that are not finite in `dtype` are refused (RunError), and the files there left as they were."""
        if not self.is_main:
            return None
        st, r = self.state, self.recipe
        card = model_card(self.cfg, r, st, self.world, self.steps_per_epoch, self.data_description, evaluation,
                          base_weights=self.inherited_base, **extra)
        path = Path(path) if path else self.run_dir / WEIGHTS
        try:
            path = export_weights(self.model, self.cfg, self.class_names, path, dtype=dtype, **card)
        except ValueError as e:
            raise RunError(f"{e}. Train again with a lower --lr, or start from the last good export with "
                           "--init-weights") from e
        write_log_csv(log_path(path), st.log)  # the curves of how these weights were trained
        return path
