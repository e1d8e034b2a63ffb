"""The Matching tab's MultiBox loss, term by term (paper eq. 1): its section of the page, and the loss of a photo's
ground truth through a model's forward pass, as the page shows it (`loss_page`) and as the /loss API returns it
(`loss_data`). The tab's handlers (`MatchingTab.loss_view`, `MatchingTab.loss_api`) call these."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image

import ssd
from visualize.loss import NEGATIVE_HEADERS, POSITIVE_HEADERS, loss_markdown, loss_terms, negative_table, positive_table
from visualize.matching import GroundTruth, match_ground_truth, parse_ground_truth
from visualize.numbers import counted

from .settings import MAX_GT_ROWS
from .visitor_input import check_number, read_upload

if TYPE_CHECKING:
    from .demo_models import DemoModel

NO_LOSS = ("", None, None)  # the loss section with nothing in it: its text, positives, hard negatives


def loss_section() -> tuple:
    """The loss's button, then its text and two tables: (button, text, positives, hard negatives)."""
    with gr.Row():
        button = gr.Button("The MultiBox loss of this forward pass, term by term (eq. 1)", scale=0,
                           min_width=360, elem_id="match-loss-button")
    text = gr.Markdown(elem_id="match-loss")
    positives = gr.Dataframe(headers=POSITIVE_HEADERS, interactive=False, max_height=320,
                             label="Positives, highest loss first: smooth-L1 of each offset, and cross-entropy",
                             elem_id="match-loss-positives")
    negatives = gr.Dataframe(headers=NEGATIVE_HEADERS, interactive=False, max_height=320,
                             label="Hard negatives, highest loss first", elem_id="match-loss-negatives")
    return button, text, positives, negatives


def loss_page(chosen: DemoModel, cfg: ssd.SSDConfig, display: Image.Image, gt: GroundTruth, problems, threshold,
              photo: str, whose: str = ""):
    """Eq. (1) for photo `photo` as shown (`display`), its ground truth (`gt`, with the problems found reading it)
    and `chosen`'s forward pass: (the sum worked through, the positives' terms, the hard negatives by their loss).
    `whose`: how the text names the model, if it does."""
    m = match_ground_truth(cfg, gt, chosen.class_names, threshold)
    terms = loss_terms(cfg, chosen.predict(display), m, chosen.class_names)
    notes = [f"⚠️ {p}" for p in problems]
    boxes = counted(len(gt.boxes), "ground-truth box", "ground-truth boxes")
    of = f"The loss of **{photo}** with its {boxes} at IoU ≥ {float(threshold):.2f}{whose}."
    return "\n\n".join([*notes, loss_markdown(terms), of]), positive_table(terms), negative_table(terms)


def loss_data(chosen: DemoModel, image, rows, threshold=None) -> dict:
    """The /loss API's answer: the MultiBox loss of `chosen`'s forward pass on `image` against ground-truth `rows`
    (class, x1, y1, x2, y2 in the photo's pixels) at the IoU `threshold` (default: the config's), every term
    listed (`visualize.loss.LossTerms.as_dict`)."""
    cfg = chosen.config
    picture = read_upload(image)
    threshold = cfg.match_threshold if threshold is None else check_number("threshold", threshold, 0.05, 0.95)
    gt, problems = parse_ground_truth(rows or [], chosen.class_names, picture.width, picture.height,
                                      max_rows=MAX_GT_ROWS)
    m = match_ground_truth(cfg, gt, chosen.class_names, threshold)
    terms = loss_terms(cfg, chosen.predict(picture), m, chosen.class_names)
    return {**terms.as_dict(), "iou_threshold": threshold, "ground_truth_problems": problems}
