"""The training loop: SGD + warmup/cosine (or multi-step, or cyclic) LR, AMP, channels_last, DDP via torchrun, a
time budget, non-finite steps undone, and export of the shipped weights. Its pieces live beside it: the recipe and
schedule (`train.recipe`), checkpoints, exact resume and the run folder's lock (`train.checkpoint`), the log
(`train.log`), SIGTERM (`train.signals`), mixed precision (`train.amp`), the processes of a run
(`train.processes`), the starting weights (`train.init_weights`) and the image check (`train.checks`).

Exact resume: the data order of epoch e is a permutation seeded by (seed, e), and every sample's
augmentation draws from an RNG seeded by (seed, e, index) (train.datasets.DetectionDataset) — so a run
that stops after any step and resumes sees exactly the batches it would have seen, whatever the number of
DataLoader workers.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ssd import Detector, MultiBoxLoss, SSDConfig, build_ssd, export_weights
from ssd.bases import base_network
from ssd.detector import NonFiniteWeights
from ssd.evaluation import evaluate_detector
from ssd.image import normalise

from .amp import amp_choice, float32_depthwise
from .card import model_card
from .checkpoint import (
    CHECKPOINT,
    EXPORT_DTYPE,
    EXPORT_LIMIT,
    all_within,
    apply_recipe_changes,
    beyond,
    lock_run_folder,
    read_checkpoint,
    remove_stale_temporary,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .checks import decodable_images
from .datasets import DetectionDataset, collate
from .errors import Diverged, RunError
from .init_weights import base_in_init_weights, load_init_weights
from .log import LogWindow, log_path, progress_bar, write_log, write_log_csv
from .processes import agree, distributed_context, global_positives
from .recipe import Recipe, TrainState, lr_factor, parameter_groups
from .signals import ignore_sigterm, terminate_as_interrupt

WEIGHTS = "weights.safetensors"  # the run's export, beside its checkpoint
SNAPSHOTS = "snapshots"
IMAGE_CHECK_CACHE = "checked_images.json"


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


def memory_format(device: torch.device, cfg: SSDConfig | None = None):
    """channels_last on the GPU (tensor cores want NHWC); on the CPU the base network's own
    (`BaseNetwork.cpu_memory_format`: bench/train.py --memory-format measures both)."""
    if device.type == "cuda":
        return torch.channels_last
    return base_network(cfg.backbone).cpu_memory_format if cfg is not None else torch.contiguous_format


def compute_loss(model, criterion: MultiBoxLoss, images, boxes, labels, autocast_dtype=None, fmt=None):
    """MultiBox loss of one (per-process) batch of uint8 images: (loc, conf) losses."""
    cfg, device = criterion.cfg, criterion.priors.device
    x = normalise(images.to(device, non_blocking=True), cfg)
    x = x.contiguous(memory_format=fmt if fmt is not None else memory_format(device, cfg))
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        loc, conf = model(x)
    return criterion(loc, conf, boxes, labels)


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
            remove_stale_temporary(self.run_dir)
        torch.manual_seed(recipe.seed)
        # The base network starts from ImageNet where the project has those weights (EfficientNet-Lite), unless
        # --init-weights holds the same base network, whose tensors replace ImageNet's anyway: then the ImageNet
        # package is not needed (a machine that has only the repository and the init weights can train). A
        # resumed run overwrites either with the checkpoint's.
        self.model = build_ssd(cfg)
        self.inherited_base = base_in_init_weights(self.model, cfg, recipe.init_weights)
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
        self._checkpoint_depthwise: list[str] | None = None  # on a resume, those of the checkpoint's run
        # fp16 needs loss scaling; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast is torch.float16)
        self.criterion = MultiBoxLoss(cfg, global_positives(self.world)).to(self.device)
        # The training images, each decoded once before the run (cached in the run folder).
        images, left_out = decodable_images(train_source, self.run_dir / IMAGE_CHECK_CACHE if self.is_main else None,
                                            recipe.skip_bad_images, verbose=self.is_main)
        if left_out:
            self.data_description += f"; {left_out} undecodable training images left out"
        self.dataset = DetectionDataset(images, transform, seed=recipe.seed)
        self.state = TrainState()
        self._window = LogWindow()  # the log's running averages since its last row
        self._skipping = False  # whether the latest step was skipped
        self.resumed = self._maybe_resume()
        self._saved_step = self.state.step  # the step of the checkpoint on disk, if any
        self._sampler()  # at least one batch, checked before any checkpoint is written
        if not self.resumed and recipe.init_weights:
            load_init_weights(self.model, cfg, Path(recipe.init_weights), verbose=self.is_main)
        self.depthwise_float32, how = float32_depthwise(  # layers that train in float32 under bf16 autocast
            self.model, recipe, self.autocast, cfg.image_size, memory_format(self.device, cfg),
            self._checkpoint_depthwise, self.is_main, self.world)
        if how:
            self.amp_reason += f"; {how}"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _maybe_resume(self) -> bool:
        path = self.run_dir / CHECKPOINT
        ckpt = read_checkpoint(path, self.cfg, self.device)
        if ckpt is None:
            return False
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        self._window = LogWindow(ckpt.get("log_window"))
        set_rng_state(ckpt["rng"])
        self._checkpoint_depthwise = ckpt.get("depthwise_float32")
        changed = apply_recipe_changes(self.optimizer, self.scheduler, self.recipe, ckpt.get("recipe", {}),
                                       self.state.step, path)
        if self.is_main:
            print(f"[train] resumed from {path} at step {self.state.step}"
                  + (f"; recipe changes that take effect now: {', '.join(changed)}" if changed else ""))
        return True

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
        ok = agree(torch.isfinite(loss.detach()), self.world)
        if ok:
            self.scaler.scale(loss).backward()
            if self.scaler.is_enabled():  # fp16: the scaler skips steps with overflowing gradients itself
                if r.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip)
            else:
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip or float("inf"))
                ok = agree(torch.isfinite(norm), self.world)
        if ok:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            ok = agree(all_within(state, EXPORT_LIMIT), self.world)
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
        progress = progress_bar(r.max_steps, st.step) if self.is_main else None
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
        except NonFiniteWeights as e:  # a card that is not one is a bug here, not a diverged run: it propagates
            raise RunError(f"{e}. Train again with a lower --lr, or start from the last good export with "
                           "--init-weights") from e
        write_log_csv(log_path(path), st.log)  # the curves of how these weights were trained
        return path
