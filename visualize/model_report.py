"""What training and evaluation leave beside a model's weights, read back for the app's Model tab, which shows
them and evaluates nothing:

* the model card, `<stem>.json` (written with the weights by `ssd.export_weights`);
* the training log, `<stem>.log.csv` (the trainer's export writes it: the rows of the run's log.csv);
* the evaluation report, `<stem>.eval.json` (`python -m train.evaluate --report`, see `ssd.evaluation.report`).

Also: a false positive of the report drawn on its photo, when the photo is at hand (the VOC folder is not
part of the project, and the hosted demo has none).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from ssd.card import ModelCard, read_card
from ssd.weights_files import CARD_SUFFIX, LOG_SUFFIX, REPORT_FORMAT, REPORT_SUFFIX, beside, sha256

from .draw import GT_COLOUR, class_colour, draw_box, fit, line_width_for

__all__ = ["CARD_SUFFIX", "LOG_SUFFIX", "REPORT_SUFFIX", "ModelFiles", "beside", "draw_false_positive",
           "read_log", "read_report", "voc_photo"]


def read_log(path) -> list[dict]:
    """The training log's rows (strings, as csv.DictReader gives them: `visualize.plots.plot_training_curves`
    reads them as they are). ValueError when it is not a training log."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "step" not in reader.fieldnames or "loss" not in reader.fieldnames:
            raise ValueError(f"{path} is not a training log (no 'step' and 'loss' columns)")
        return list(reader)


def read_report(path) -> dict:
    """The evaluation report. ValueError when it is not one this code can read."""
    try:
        report = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e})") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT or "per_class" not in report:
        raise ValueError(f"{path} is not an evaluation report of format {REPORT_FORMAT}")
    return report


@dataclass
class ModelFiles:
    """The card, log and report beside `weights`; each None when absent. `problems`: files that are there but
    could not be read (one line each). `report_is_current`: whether the report says it measured these very
    weights (their SHA-256); None when there is no report or the weights file cannot be read."""

    weights: Path
    card: ModelCard | None = None
    log: list[dict] | None = None
    report: dict | None = None
    problems: list[str] = field(default_factory=list)
    report_is_current: bool | None = None

    @property
    def log_path(self) -> Path:
        return beside(self.weights, LOG_SUFFIX)

    @property
    def report_path(self) -> Path:
        return beside(self.weights, REPORT_SUFFIX)

    @classmethod
    def read(cls, weights) -> ModelFiles:
        files = cls(Path(weights))
        for name, suffix, reader in (("card", CARD_SUFFIX, read_card),
                                     ("log", LOG_SUFFIX, read_log), ("report", REPORT_SUFFIX, read_report)):
            path = beside(files.weights, suffix)
            if not path.is_file():
                continue
            try:
                setattr(files, name, reader(path))
            except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
                files.problems.append(f"{path.name}: {e}")
        if files.report is not None and files.weights.is_file():
            files.report_is_current = files.report.get("weights_sha256") == sha256(files.weights)
        return files


def voc_photo(voc_root, image_id: str) -> Path | None:
    """`<voc_root>/JPEGImages/<image_id>.jpg` when it is there (voc_root None: never)."""
    if not voc_root:
        return None
    path = Path(voc_root) / "JPEGImages" / f"{image_id}.jpg"
    return path if path.is_file() else None


def draw_false_positive(image: Image.Image, fp: dict, class_names, max_side: int = 640) -> Image.Image:
    """A false positive of the report (an entry of `false_positives.worst`) on its photo: the detection in its
    class's colour with class and score, and the ground-truth box its kind of error was decided by, dashed white,
    with its class and IoU. Boxes are scaled from the image size the report gives to the photo's size."""
    photo = image.convert("RGB")
    w, h = fp.get("image_size") or photo.size
    shown, _ = fit(photo, max_side)
    sx, sy = shown.width / w, shown.height / h
    out = shown.copy()
    draw = ImageDraw.Draw(out)
    width = line_width_for(out)
    text = max(11, round(min(out.size) / 32))

    def scaled(box):
        return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]

    truth = fp.get("ground_truth")
    if truth:
        draw_box(draw, scaled(truth["box"]), GT_COLOUR, width, f"truth: {truth['class']} (IoU {fp['iou']:.2f})",
                 text, dashed=True, label_inside=True)
    names = list(class_names)
    colour = class_colour(names.index(fp["class"]) + 1) if fp["class"] in names else (255, 0, 0)
    draw_box(draw, scaled(fp["box"]), colour, width, f"{fp['class']} {fp['score']:.2f}", text)
    return out
