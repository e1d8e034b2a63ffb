"""The run's log: a row every `log_every` steps (step, epoch, speed, the losses averaged over the steps since the
last row, the LR, skipped steps, and at evaluation steps the val mAP), written as log.csv in the run folder and
as `<stem>.log.csv` beside exported weights; the window of steps a row averages, which the checkpoint keeps;
and the progress bar that shows the rows as they come."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from ssd.weights_files import LOG_SUFFIX, beside

__all__ = ["LOG_CSV", "LOG_FIELDS", "LogWindow", "log_path", "progress_bar", "write_log", "write_log_csv"]

LOG_CSV = "log.csv"
LOG_FIELDS = ["step", "epoch", "elapsed_s", "img_per_s", "loss", "loc_loss", "conf_loss", "lr", "skipped",
              "val_map", "val_map_area"]


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


def progress_bar(total: int, initial: int):
    """The training steps' progress bar, which the log's rows are written through."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, mininterval=5.0)
