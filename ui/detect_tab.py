"""The Detect tab: boxes, scores and where each detection came from; the sliders re-run only post-processing. With
two models or more, the page's model choice says which network runs (each handler takes it as its last input). What
a session keeps (`DetectState`), the NMS view and a detection's journey: `ui.detect_views`."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

import ssd
from visualize.draw import draw_detections, fit
from visualize.examples import write_examples
from visualize.nms import nms_trace, pixels
from visualize.numbers import box_text, pixel_box, score_text

from .demo_models import NO_MODEL, DemoModel, DemoModels
from .detect_views import (
    NO_JOURNEY,
    NO_NMS,
    DetectState,
    Shown,
    journey_follows,
    journey_in,
    journey_page,
    journey_section,
    nms_of,
    nms_section,
)
from .links import Controls
from .pictures import drawn_picture
from .settings import DISPLAY_SIDE, LIVE_EVERY_S, LIVE_LIMIT_S, LIVE_SIDE, LIVE_STREAMS, STATE_TTL_S
from .visitor_input import Refused, check_parameters, read_upload, served, upload_source

INTRO = ("One forward pass scores every default box: four offsets that move and resize it, and a confidence per "
         "class. Boxes above the score threshold are decoded with the variances, non-maximum suppression keeps the "
         "best of each class where boxes overlap by more than the NMS IoU, and the top-k remain. The table names the "
         "default box each detection came from.")
TABLE_HEADERS = ["#", "class", "score", "box (x1, y1, x2, y2) px", "feature map", "default box"]


PAGE_OUTPUTS = 12  # detect_page's: picture, table, data, summary, state, the NMS view's 3, the journey's 4


def uploaded_file(image) -> str | None:
    """The received file an image input names (its real path), or None: a pasted image, an array, nothing, or a
    path the app did not receive (whose refusal comes from read_upload)."""
    if image is None or isinstance(image, Image.Image | np.ndarray):
        return None
    try:
        source = upload_source(image)
    except gr.Error:
        return None
    return source[0] if source is not None and isinstance(source[0], str) else None


def live_section() -> tuple:
    """The live view's accordion (closed): (the webcam's stream, its frames with their detections, a summary)."""
    with gr.Accordion("Live: detect on your webcam's stream", open=False, elem_id="live"):
        gr.Markdown(f"Frames go to the server about {1 / LIVE_EVERY_S:.0f} times a second, with the sliders "
                    f"above; each stream stops after {LIVE_LIMIT_S} s (press record again to go on). Your "
                    "browser asks for the camera first.")
        with gr.Row():
            webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                              elem_id="live-input", height=320)
            with gr.Column():  # its title above it, not a column of its own beside it
                live_out = drawn_picture("Live detections", format="jpeg", elem_id="live-output", height=320)
        live_summary = gr.Markdown(elem_id="live-summary")
    return webcam, live_out, live_summary


class DetectTab:
    def __init__(self, models: DemoModel | DemoModels):
        self.models = DemoModels.of(models)

    @property
    def model(self) -> DemoModel:
        """The default model."""
        return self.models.default

    def parameters(self, score_threshold, nms_threshold, top_k, classes, model: DemoModel | None = None):
        """The thresholds asked for, checked (`Refused` when not valid); None is the model's setting
        (`DemoModel.settings`)."""
        model = model or self.model
        s = model.settings.with_overrides(score_threshold, nms_threshold, top_k)
        return check_parameters(s.score_threshold, s.nms_threshold, s.top_k, classes, model.class_names,
                                model.config.top_k)

    def where(self, prior_index: int, cfg: ssd.SSDConfig | None = None) -> dict:
        """The feature map, cell and shape of a default box (of `cfg`, by default the default model's), for the
        table and the data."""
        d = ssd.prior_layout(cfg or self.model.config).describe(prior_index)  # prior_layout is cached
        return {"feature_map": f"{d['feature_map']}x{d['feature_map']}", "cell": [d["row"], d["col"]],
                "default_box_shape": d["shape"]}

    def shown(self, state: DetectState, score_threshold, nms_threshold, top_k, classes=None) -> Shown:
        """Post-processing only, on the cached network outputs, by the model that produced them (the state's)."""
        name = self.models.name(state.model)
        model = self.models.get(name)
        score_threshold, nms_threshold, top_k, wanted = self.parameters(score_threshold, nms_threshold, top_k,
                                                                        classes, model)
        detector = model.require()
        start = time.perf_counter()
        dets = detector.postprocess(state.raw, score_threshold, nms_threshold, top_k, classes=wanted or None)
        return Shown(name, model, dets, (time.perf_counter() - start) * 1000, score_threshold, nms_threshold, top_k,
                     wanted)

    def drawn(self, state: DetectState, shown: Shown):
        """(annotated image, table, data, summary) of one post-processing."""
        name, dets, post_ms, wanted = shown.name, shown.dets, shown.post_ms, shown.wanted
        score_threshold, nms_threshold, top_k = shown.score_threshold, shown.nms_threshold, shown.top_k
        detector, raw, cfg = shown.model.require(), state.raw, shown.model.config
        picture = draw_detections(state.display(), dets, scale=state.scale)
        rows = []
        for i, d in enumerate(dets):
            info = self.where(d.prior_index, cfg)
            rows.append([i + 1, d.label, score_text(d.score), box_text(pixel_box(d.box)),
                         f"{d.layer} ({info['feature_map']})",
                         f"#{d.prior_index} cell ({info['cell'][0]}, {info['cell'][1]}) shape "
                         f"{info['default_box_shape']}"])
        data = {
            "image": {"width": raw.width, "height": raw.height},
            "model": cfg.name,
            "model_name": name,  # what the API's `model` argument takes
            "score_threshold": score_threshold, "nms_threshold": nms_threshold, "top_k": top_k,
            "classes": wanted or "all",
            "candidates_before_nms": dets.candidates,
            "detections_after_nms": len(dets),
            "network_ms": round(raw.seconds * 1000, 1),
            "postprocess_ms": round(post_ms, 2),
            "detections": [
                {**d.to_dict(), "score": round(d.score, 4), "box": pixel_box(d.box),
                 **self.where(d.prior_index, cfg)}
                for d in dets
            ],
        }
        device = "GPU" if detector.device.type == "cuda" else "CPU"
        summary = (f"**{len(dets)}** detection{'s' * (len(dets) != 1)} after NMS, from **{dets.candidates}** "
                   f"candidate{'s' * (dets.candidates != 1)} above score {score_threshold:.2f} before NMS"
                   f"{' (only ' + ', '.join(wanted) + ')' if wanted else ''}, in the {raw.width}×{raw.height} "
                   f"image · network **{raw.seconds * 1000:.0f} ms** on {device} (preprocessing included) · "
                   f"post-processing **{post_ms:.1f} ms** (sliders re-run only this)."
                   + (f" · model: **{self.models.titles[name]}**" if self.models.switchable else ""))
        return served(picture), rows, data, summary

    def nms_view(self, state, class_name, score_threshold, nms_threshold, top_k, classes):
        """NMS step by step for one class of the cached outputs: (summary, table, the class chosen)."""
        if state is None:
            return "Detect on a photo first.", None, gr.skip()
        return nms_of(state, self.shown(state, score_threshold, nms_threshold, top_k, classes), class_name)

    def on_sliders(self, state, nms_open, class_name, score_threshold, nms_threshold, top_k, classes, picked=None):
        """A slider or the class filter moved: one post-processing redraws the picture, the table, the data, the
        summary, the NMS view while its accordion is open (else clears it), and the journey of the detection
        `picked` (its default box and class) wherever its row is now, or clears it if that detection is gone.
        Returns those and what the journey follows now."""
        if state is None:
            return (gr.skip(),) * 11
        shown = self.shown(state, score_threshold, nms_threshold, top_k, classes)
        return (*self.drawn(state, shown), *self.nms_if_open(nms_open, state, shown, class_name),
                *journey_follows(state, shown, picked))

    def nms_if_open(self, nms_open: bool, state: DetectState, shown: Shown, class_name):
        """The NMS view's outputs of one post-processing, or nothing to change while its accordion is closed."""
        return nms_of(state, shown, class_name) if nms_open else NO_NMS

    def journey_of(self, model, raw, number: int, score_threshold, nms_threshold, top_k, classes):
        """The journey of detection `number` (1 = the table's first row) of `raw`, or None if there is none."""
        score_threshold, nms_threshold, top_k, wanted = self.parameters(score_threshold, nms_threshold, top_k,
                                                                        classes, model)
        dets = model.require().postprocess(raw, score_threshold, nms_threshold, top_k, classes=wanted or None)
        if not 1 <= number <= len(dets):
            return None
        return journey_in(model, raw, dets[number - 1], score_threshold, nms_threshold)

    def journey_view(self, state, score_threshold, nms_threshold, top_k, classes, evt: gr.SelectData):
        """A row of the table clicked: that detection's journey (text, picture, class scores, the detection)."""
        if state is None or evt.index is None:
            return (gr.skip(),) * 4
        shown = self.shown(state, score_threshold, nms_threshold, top_k, classes)
        number = int(evt.index[0]) + 1
        if not 1 <= number <= len(shown.dets):
            return "That row is gone: the sliders moved. Click a row again.", None, None, None
        return journey_page(state, shown, number)

    def journey_api(self, image, number, score_threshold=None, nms_threshold=None, model=None) -> dict:
        """API (`/journey`): detection `number` (1 = the best) of `image`: its default box, predicted offsets,
        their decoding with the variances, its class scores and what NMS did (`visualize.journey.journey`)."""
        chosen = self.models.get(model)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise Refused("number must be a whole number (1 = the best detection).") from None
        raw = chosen.predict(read_upload(image))
        j = self.journey_of(chosen, raw, number, score_threshold, nms_threshold, None, None)
        if j is None:
            raise Refused(f"There is no detection #{number} at these thresholds.")
        return j

    def nms_api(self, image, class_name, score_threshold=None, nms_threshold=None, model=None) -> dict:
        """API (`/nms`): every candidate of `class_name` above the score threshold in score order, with what NMS
        did to it (kept, or suppressed by which rank at which IoU); boxes in the photo's pixels."""
        chosen = self.models.get(model)
        score_threshold, nms_threshold, _, named = self.parameters(score_threshold, nms_threshold, None, class_name,
                                                                   chosen)
        if len(named) != 1:
            raise Refused(f"Name one class: this model detects {', '.join(chosen.class_names)}.")
        class_name = named[0]
        raw = chosen.predict(read_upload(image))
        trace = nms_trace(raw, chosen.require().class_ids(named)[0], score_threshold, nms_threshold)
        return {"class": class_name, "score_threshold": score_threshold, "nms_threshold": nms_threshold,
                "candidates": [{**vars(c), "box": pixels(c.box, raw.width, raw.height),
                                **self.where(c.prior, chosen.config)} for c in trace],
                "kept": sum(c.kept for c in trace)}

    def run_network(self, image, score_threshold, nms_threshold, top_k, classes, model) -> tuple[DetectState, Shown]:
        """Run the network of `model` (a name of `self.models`; None: the default) on `image` and post-process
        its outputs: what the sliders need (DetectState), and what they show now."""
        name = self.models.name(model)
        chosen = self.models.get(name)
        chosen.require()
        self.parameters(score_threshold, nms_threshold, top_k, classes, chosen)  # refused before the network runs
        picture = read_upload(image)
        raw = chosen.predict(picture)
        display, scale = fit(picture, DISPLAY_SIDE)
        state = DetectState.of(raw, display, scale, name, uploaded_file(image))
        return state, self.shown(state, score_threshold, nms_threshold, top_k, classes)

    def detect_with_state(self, image, score_threshold=None, nms_threshold=None, top_k=None, classes=None,
                          model=None):
        """Detect and keep what the sliders need: (annotated image, table, data, summary, DetectState)."""
        state, shown = self.run_network(image, score_threshold, nms_threshold, top_k, classes, model)
        return (*self.drawn(state, shown), state)

    def detect_page(self, nms_open, class_name, image, score_threshold, nms_threshold, top_k, classes, model=None):
        """The page's Detect (the button, a new image in the input, another model): detect_with_state's outputs,
        then the NMS view's (computed while its accordion is open, else cleared), then the journey's, cleared: it
        belonged to the detections replaced. The image removed clears everything; so does one that cannot be
        used, whose refusal is then the summary (said once, and nothing of the photo before stays beneath it)."""
        if image is None:
            return self.cleared("")
        try:
            state, shown = self.run_network(image, score_threshold, nms_threshold, top_k, classes, model)
        except gr.Error as e:
            return self.cleared(f"⚠️ {e.message}")
        return (*self.drawn(state, shown), state, *self.nms_if_open(nms_open, state, shown, class_name), *NO_JOURNEY)

    def cleared(self, summary: str) -> tuple:
        """detect_page's outputs with no detections: `summary`, and nothing else of any photo."""
        return None, [], None, summary, None, *self.nms_view(None, None, None, None, None, None), *NO_JOURNEY

    def on_image(self, state, nms_open, class_name, image, score_threshold, nms_threshold, top_k, classes,
                 model=None):
        """A new image in the input (an upload, an example, a paste, a webcam shot; or removed): detect_page,
        except for the file and model whose detections the page shows already. Gradio's image input reports an
        upload after the first one twice; the second would run the network again (and repeat a refusal)."""
        try:
            same = (state is not None and state.source is not None and state.model == self.models.name(model)
                    and state.source == uploaded_file(image))
        except gr.Error:  # an unknown model: detect_page says so
            same = False
        if same:
            return (gr.skip(),) * PAGE_OUTPUTS
        return self.detect_page(nms_open, class_name, image, score_threshold, nms_threshold, top_k, classes, model)

    def detect(self, image, score_threshold=None, nms_threshold=None, top_k=None, classes=None, model=None):
        """Detect objects in `image`. Returns the annotated image, a table, the detections as data and a summary.

        API: client.predict(handle_file("photo.jpg"), 0.5, 0.45, api_name="/detect"); thresholds left out take
        the model card's score threshold and the config's NMS IoU and top-k; `classes` is a list of class names;
        `model` the name of one of the page's models (the data's "model_name"; left out: the default model).
        Through gradio_client a score left out is the page slider's start, the default model's threshold: pass
        one with another model. An API call keeps nothing on the server once it has answered.
        """
        return self.detect_with_state(image, score_threshold, nms_threshold, top_k, classes, model)[:4]

    def on_model(self, nms_open, class_name, image, nms_threshold, top_k, classes, model):
        """The page's model choice changed: the score slider moves to that model's recommended threshold, and the
        current image (if any) goes through that model's network. Returns the outputs of `detect_page` and the
        slider."""
        chosen = self.models.get(model)
        score = gr.Slider(value=chosen.default_score)
        if image is None or chosen.detector is None:
            return (*(gr.skip(),) * PAGE_OUTPUTS, score)
        return (*self.detect_page(nms_open, class_name, image, chosen.default_score, nms_threshold, top_k, classes,
                                  model), score)

    def live(self, frame, score_threshold, nms_threshold, top_k, classes, model=None):
        """One webcam frame of the live view, through the chosen model: (the frame with its detections, a
        one-line summary). Nothing is kept between frames."""
        if frame is None:
            return gr.skip(), gr.skip()
        chosen = self.models.get(model)
        score_threshold, nms_threshold, top_k, wanted = self.parameters(score_threshold, nms_threshold, top_k,
                                                                        classes, chosen)
        detector = chosen.require()
        picture, _ = fit(read_upload(frame), LIVE_SIDE)  # under the same limits as an upload
        raw = chosen.predict(picture)
        dets = detector.postprocess(raw, score_threshold, nms_threshold, top_k, classes=wanted or None)
        found = ", ".join(f"{d.label} {d.score:.2f}" for d in dets[:5]) or "nothing above the score threshold"
        return (served(draw_detections(picture, dets)),
                f"{found} · network {raw.seconds * 1000:.0f} ms on {picture.width}×{picture.height} frames")

    def build(self, examples_dir: Path, choice: gr.components.Component | None = None) -> Controls:
        """The tab's widgets and events (inside a gr.Blocks). `choice`: the page's model choice (its value a
        name of `self.models`), or None for the default model only."""
        cfg, model = self.model.config, self.model
        chosen = [choice] if choice is not None else []
        example_paths = write_examples(examples_dir)
        gr.Markdown(INTRO)
        if model.detector is None:
            gr.Markdown(f"⚠️ {NO_MODEL}", elem_id="no-model")
        with gr.Row():
            with gr.Column(scale=2, min_width=280):
                image_in = gr.Image(type="filepath", image_mode=None, label="Image",
                                    sources=["upload", "webcam", "clipboard"], elem_id="detect-input", height=320)
                gr.Examples([[str(p)] for p in example_paths.values()], inputs=[image_in],
                            example_labels=list(example_paths), cache_examples=False, label="Example photos")
                score = gr.Slider(0.01, 1.0, value=model.default_score, step=0.01, label="Score threshold")
                nms = gr.Slider(0.05, 1.0, value=cfg.nms_threshold, step=0.05, label="NMS IoU")
                top_k = gr.Slider(1, cfg.top_k, value=cfg.top_k, step=1, label="Top-k")
                classes = gr.Dropdown(sorted(model.class_names), value=[], multiselect=True,
                                      label="Only these classes", info="empty: all classes")
                run = gr.Button("Detect", variant="primary")
            with gr.Column(scale=3):
                image_out = drawn_picture("Detections", elem_id="detect-output", format="jpeg")
                summary = gr.Markdown(elem_id="detect-summary")
        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="detect-table", label="Detections",
                             wrap=True)
        with gr.Accordion("Detections as data (what the `detect` API returns)", open=False):
            data_out = gr.JSON(label="detections")
        webcam, live_out, live_summary = live_section()
        journey_text, journey_bars, journey_image = journey_section()
        nms_accordion, nms_class, nms_text, nms_rows = nms_section(model.class_names)
        state = gr.State(None, time_to_live=STATE_TTL_S)
        nms_open = gr.State(False)  # the NMS view is computed only while a visitor looks at it
        picked = gr.State(None)  # the detection (default box, class) whose journey is shown
        inputs = [image_in, score, nms, top_k, classes, *chosen]
        outputs = [image_out, table, data_out, summary, state]
        nms_in, nms_out = [state, nms_class, score, nms, top_k, classes], [nms_text, nms_rows, nms_class]
        journey_out = [journey_text, journey_image, journey_bars, picked]
        page_out = [*outputs, *nms_out, *journey_out]  # detect_page's
        nms_kw = dict(api_visibility="private", show_progress="hidden", trigger_mode="always_last",
                      concurrency_limit=8, concurrency_id="postprocess")
        # preprocess=False: the handlers decode uploads themselves (ui.visitor_input.upload_source).
        page_kw = dict(api_visibility="private", concurrency_id="network", preprocess=False)
        run.click(self.detect_page, [nms_open, nms_class, *inputs], page_out, **page_kw)
        gr.Button(visible=False).click(self.nms_api, [image_in, nms_class, score, nms, *chosen],
                                       [gr.JSON(visible=False)], api_name="nms", concurrency_id="network",
                                       preprocess=False)
        # The API's /detect: the same, but it keeps no state for the session (scripts open a new session per
        # call, and each would otherwise hold its state until it expired).
        gr.Button(visible=False).click(self.detect, inputs, outputs[:4], api_name="detect",
                                       concurrency_id="network", preprocess=False)
        image_in.change(self.on_image, [state, nms_open, nms_class, *inputs], page_out, trigger_mode="always_last",
                        **page_kw)
        nms_class.input(self.nms_view, nms_in, nms_out, **nms_kw)
        nms_accordion.expand(lambda: True, None, nms_open, api_visibility="private", queue=False).then(
            self.nms_view, nms_in, nms_out, **nms_kw)
        nms_accordion.collapse(lambda: False, None, nms_open, api_visibility="private", queue=False)
        table.select(self.journey_view, [state, score, nms, top_k, classes], journey_out, **nms_kw)
        gr.Button(visible=False).click(self.journey_api, [image_in, gr.Number(visible=False), score, nms, *chosen],
                                       [gr.JSON(visible=False)], api_name="journey", concurrency_id="network",
                                       preprocess=False)
        # A stream holds its event's slot for its whole time limit, so streams have a group of their own: a frame
        # takes the network (DemoModels' semaphore) only for its forward pass, and single detections keep the
        # "network" group's slots. preprocess=False: frames are read under the upload limits (read_upload).
        webcam.stream(self.live, [webcam, score, nms, top_k, classes, *chosen], [live_out, live_summary],
                      api_visibility="private", stream_every=LIVE_EVERY_S, time_limit=LIVE_LIMIT_S,
                      concurrency_id="live", concurrency_limit=LIVE_STREAMS, show_progress="hidden",
                      preprocess=False)
        for control in (score, nms, top_k, classes):
            control.change(self.on_sliders, [state, nms_open, nms_class, score, nms, top_k, classes, picked],
                           [*outputs[:4], *nms_out, *journey_out], **nms_kw)
        if choice is not None and self.models.switchable:
            choice.change(self.on_model, [nms_open, nms_class, image_in, nms, top_k, classes, choice],
                          [*page_out, score], trigger_mode="always_last", **page_kw)
        return Controls(score, nms)
