"""What the Detect tab keeps of a detection (`DetectState`: the network's outputs, per session) and one
post-processing of it at the sliders' values (`Shown`); and its two views of that post-processing, beside its
picture and table: NMS step by step for one class, and one detection's journey (its default box, the offsets the
network predicted, their decoding, its class scores and what NMS did), with the accordions that hold them. The
tab's handlers (`DetectTab.nms_view`, `DetectTab.journey_view`, ...) call these."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
from PIL import Image

import ssd
from visualize.journey import class_bars, draw_journey, journey, journey_markdown
from visualize.nms import NMS_HEADERS, nms_summary, nms_table, nms_trace
from visualize.numbers import counted

from .demo_models import DemoModel
from .pictures import drawn_picture
from .visitor_input import from_jpeg, served, to_jpeg


@dataclass
class DetectState:
    """What the sliders need to redraw without running the network again, kept per browser session: the
    graph's boxes and its scores in half precision, and the picture as JPEG (about 0.7 MB for a 1024-pixel photo, where
    full-precision outputs and a raw picture took 5 MB), and the name of the model whose outputs they are, so
    the sliders post-process them as that model does even after the page's choice has moved on. Sessions let go of
    it after STATE_TTL_S."""

    raw: ssd.RawPrediction
    jpeg: bytes
    scale: float
    model: str = ""  # a DemoModels name ("": the default)
    source: str | None = None  # the received file these are the outputs of (None: a pasted image, an array)

    @classmethod
    def of(cls, raw: ssd.RawPrediction, display: Image.Image, scale: float, model: str = "",
           source: str | None = None) -> DetectState:
        small = ssd.RawPrediction(raw.boxes.cpu(), raw.scores.half().cpu(), raw.width, raw.height, raw.seconds)
        return cls(small, to_jpeg(display), scale, model, source)

    def display(self) -> Image.Image:
        return from_jpeg(self.jpeg)


@dataclass
class Shown:
    """One post-processing of a DetectState at the sliders' values: what the picture, the table and the NMS view
    are drawn from, so that one slider move post-processes once."""

    name: str  # the DemoModels name of the model whose outputs these are
    model: DemoModel
    dets: ssd.Detections
    post_ms: float
    score_threshold: float
    nms_threshold: float
    top_k: int
    wanted: list[str]


JOURNEY_PROMPT = ("Click a detection in the table: its default box, the offsets the network predicted, their decoding, "
                  "its class scores and NMS.")
JOURNEY_GONE = ("The detection whose journey was shown is not among the detections at these settings: click a row "
                "of the table.")
# The NMS view's outputs while its accordion is closed: nothing computed, and nothing left of other detections
# (opening it computes the view again). The class chosen stays.
NO_NMS = ("", None, gr.skip())
# The journey's outputs (text, picture, class scores, the detection it follows) when the detections it came from
# are replaced: a new photo, another model, Detect again, a failed upload.
NO_JOURNEY = (JOURNEY_PROMPT, None, None, None)


# ------------------------------------------------------------------------------------------ NMS step by step
def nms_section(class_names) -> tuple:
    """The NMS view's accordion (closed): (the accordion, its class picker, its summary, its table)."""
    with gr.Accordion("NMS step by step, for one class", open=False, elem_id="nms") as accordion:
        with gr.Row():
            nms_class = gr.Dropdown(list(class_names), value=None, label="Class", scale=1,
                                    allow_custom_value=True, elem_id="nms-class")
            nms_text = gr.Markdown(elem_id="nms-summary")
        nms_rows = gr.Dataframe(headers=NMS_HEADERS, interactive=False, max_height=360, elem_id="nms-table",
                                label="Candidates of the class, best score first")
    return accordion, nms_class, nms_text, nms_rows


def nms_of(state: DetectState, shown: Shown, class_name):
    """The NMS view of one post-processing: (summary, table, the class chosen). No class chosen yet: the best
    detection's, else the class with the best candidate."""
    dets, names = shown.dets, list(shown.model.class_names)
    if class_name not in names:
        best = int(state.raw.scores[0, :, 1:].float().max(0).values.argmax())
        class_name = dets[0].label if dets else names[best]
    (label,) = shown.model.require().class_ids([class_name])
    trace = nms_trace(state.raw, label, shown.score_threshold, shown.nms_threshold)
    detected = {d.prior_index for d in dets if d.label == class_name}
    return (nms_summary(trace, class_name, shown.score_threshold, shown.nms_threshold)
            + f" Of the {counted(len(dets), 'detection')} shown (top-k {shown.top_k} over all classes), "
            f"{len(detected)} {'is' if len(detected) == 1 else 'are'} {class_name}.",
            nms_table(trace, state.raw.width, state.raw.height, detected), gr.update(value=class_name))


# ------------------------------------------------------------------------------------------ a detection's journey
def journey_section() -> tuple:
    """The journey's accordion (open): (its text, its class scores, its picture)."""
    with gr.Accordion("A detection's journey: click a row of the table", open=True, elem_id="journey"):
        with gr.Row():
            with gr.Column(scale=3):
                journey_text = gr.Markdown(JOURNEY_PROMPT, elem_id="journey-text")
                journey_bars = gr.Dataframe(headers=["class", "p", ""], interactive=False,
                                            label="Its class scores (softmax)", elem_id="journey-scores")
            with gr.Column(scale=2):
                journey_image = drawn_picture("Its default box and the candidates it suppressed",
                                              format="jpeg", elem_id="journey-output")
    return journey_text, journey_bars, journey_image


def journey_in(model: DemoModel, raw: ssd.RawPrediction, d: ssd.Detection, score_threshold, nms_threshold):
    """The journey of detection `d` of `raw` (`visualize.journey.journey`)."""
    trace = nms_trace(raw, d.class_id, score_threshold, nms_threshold)
    return journey(model.config, raw, d.prior_index, d.class_id, model.class_names, trace)


def journey_page(state: DetectState, shown: Shown, number: int):
    """The journey view of detection `number` (1 = the table's first row) of one post-processing: (text,
    picture, class scores, what it follows: the detection's default box and class)."""
    d = shown.dets[number - 1]
    j = journey_in(shown.model, state.raw, d, shown.score_threshold, shown.nms_threshold)
    return (f"**Detection #{number}: {j['class']}**\n\n" + journey_markdown(j, state.raw.width, state.raw.height),
            served(draw_journey(state.display(), j)), class_bars(j), (d.prior_index, d.class_id))


def journey_follows(state: DetectState, shown: Shown, picked):
    """The journey after the sliders moved: that of the detection `picked` (default box, class) at its new row,
    cleared if it is gone, left as it is if none was picked."""
    if picked is None:
        return (gr.skip(),) * 4
    prior, label = picked
    for number, d in enumerate(shown.dets, 1):
        if d.prior_index == prior and d.class_id == label:
            return journey_page(state, shown, number)
    return (JOURNEY_GONE, None, None, None)
