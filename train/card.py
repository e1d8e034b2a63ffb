"""The model card a training run writes beside its weights: what the run was (data, recipe, steps, epochs, wall
time, hardware, speed, where the base's ImageNet weights came from) and what it measured (val mAP, per-class AP,
the recommended score threshold), as the fields of `ssd.card.ModelCard`: `ssd.export_weights` checks them and writes
the card; `ssd.Detector` and the app read it back as a ModelCard."""

from __future__ import annotations

import math
import platform
from dataclasses import asdict

import numpy as np
import torch

from ssd import SSDConfig


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def base_weights_info(cfg: SSDConfig) -> dict | str:
    from ssd.bases import base_network

    return base_network(cfg.backbone).weights_info()


def model_card(cfg: SSDConfig, recipe, state, world: int, steps_per_epoch: int, data: str,
               evaluation: dict | None = None, base_weights: dict | str | None = None, **extra) -> dict:
    """The card's fields for a run at `state` (the engine's TrainState: step, elapsed_s, skipped, log rows) of
    `recipe` on `world` processes; `evaluation` is `Trainer.evaluate()`'s, when the run was evaluated.
    `base_weights`: where the base came from when the run took it from its init weights (their card's entry);
    None names the ImageNet weights the project has for `cfg`'s base."""
    imgs = [row["img_per_s"] for row in state.log[1:]] or [row["img_per_s"] for row in state.log]
    card = {
        "data": data,
        "recipe": {**asdict(recipe), "world_size": world, "global_batch": recipe.batch_size * world,
                   "optimizer": "SGD", "weight_decay_on": "conv weights only"},
        "steps": state.step,
        "epochs": round(state.step / steps_per_epoch, 2),
        "wall_time_s": round(state.elapsed_s, 1),
        "hardware": hardware(),
        "train_img_per_s": round(float(np.median(imgs)), 2) if imgs else None,
        "skipped_steps": state.skipped,
        "torch": torch.__version__,
        "backbone": cfg.backbone,
        "base_weights": base_weights if base_weights is not None else base_weights_info(cfg),
        **extra,
    }
    if evaluation:
        card.update(evaluation_fields(evaluation["result"]))
    return card


def schedule_fields(recipe, state, steps_per_epoch: int, stopped_by: str, command: str, checkpoint) -> dict:
    """`complete`, and for a run stopped before the end of its schedule (by `stopped_by`: the time budget, Ctrl-C,
    SIGTERM) how far it got and the command that finishes it: `progress`, and a `status` the app shows."""
    if state.step >= recipe.max_steps:
        return {"complete": True}
    epochs, of_epochs = round(state.step / steps_per_epoch, 2), round(recipe.max_steps / steps_per_epoch, 2)
    progress = {"step": state.step, "max_steps": recipe.max_steps, "epochs": epochs, "max_epochs": of_epochs,
                "stopped_by": stopped_by, "finish_command": command, "resumes_from": str(checkpoint)}
    return {"complete": False, "progress": progress,
            "status": f"incomplete: stopped by {stopped_by} at step {state.step} of {recipe.max_steps} ({epochs} of "
                      f"{of_epochs} epochs); the same command finishes it, resuming from {checkpoint}: {command}"}


def evaluation_fields(res) -> dict:
    """The card's fields from a val evaluation (`ssd.evaluation`'s VOCResult): `val` (mAP, per-class AP, the best
    F1) and `score_threshold`, the recommended one (where F1 is best)."""
    best = res.best_f1_threshold()
    fields = {"val": {"map_11pt": float(res.map_11pt), "map_area": float(res.map_area),
                      "images": res.num_images, "best_f1": best,
                      "per_class": {str(k): v.to_dict() for k, v in res.per_class.items()}}}
    if math.isfinite(best["score"]):
        # The default of the app's slider and the CLI's --score (Detector.score_threshold).
        fields["score_threshold"] = math.floor(best["score"] * 100) / 100
    return fields
