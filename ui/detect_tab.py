"""The Detect tab: boxes, scores and where each detection came from; the sliders re-run only post-processing."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

import ssd
from ssd.image import to_rgb
from visualize.draw import draw_detections, fit
from visualize.examples import write_examples

from .inputs import check_parameters, read_upload, served
from .model import NO_MODEL, DemoModel
from .settings import DISPLAY_SIDE, LIVE_EVERY_S, LIVE_LIMIT_S, LIVE_SIDE, STATE_TTL_S

TABLE_HEADERS = ["#", "class", "score", "box (x1, y1, x2, y2) px", "feature map", "default box"]


@dataclass
class DetectState:
    """What the sliders need to redraw without running the network again, kept per browser session: the
    graph's boxes and its scores in half precision, and the picture as JPEG (about 0.7 MB for a 1024-pixel photo, where
    full-precision outputs and a raw picture took 5 MB). Sessions let go of it after STATE_TTL_S."""

    raw: ssd.RawPrediction
    jpeg: bytes
    scale: float

    @classmethod
    def of(cls, raw: ssd.RawPrediction, display: Image.Image, scale: float) -> DetectState:
        buf = io.BytesIO()
        display.save(buf, "JPEG", quality=90)
        small = ssd.RawPrediction(raw.boxes.cpu(), raw.scores.half().cpu(), raw.width, raw.height, raw.seconds)
        return cls(small, buf.getvalue(), scale)

    def display(self) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg)).convert("RGB")


@dataclass
class Controls:
    """The Detect tab's widgets other tabs read (Matching's "use current detections")."""

    score: gr.Slider
    nms: gr.Slider


class DetectTab:
    def __init__(self, model: DemoModel):
        self.model = model
        self.layout = ssd.prior_layout(model.config)

    def parameters(self, score_threshold, nms_threshold, top_k, classes):
        cfg = self.model.config
        return check_parameters(self.model.default_score if score_threshold is None else score_threshold,
                                cfg.nms_threshold if nms_threshold is None else nms_threshold,
                                cfg.top_k if top_k is None else top_k, classes, self.model.class_names, cfg.top_k)

    def where(self, prior_index: int) -> dict:
        """The feature map, cell and shape of a default box, for the table and the data."""
        d = self.layout.describe(prior_index)
        return {"feature_map": f"{d['feature_map']}x{d['feature_map']}", "cell": [d["row"], d["col"]],
                "default_box_shape": d["shape"]}

    def render(self, state: DetectState, score_threshold, nms_threshold, top_k, classes=None):
        """Post-processing only, on the cached network outputs: (annotated image, table, data, summary)."""
        score_threshold, nms_threshold, top_k, wanted = self.parameters(score_threshold, nms_threshold, top_k,
                                                                        classes)
        detector, raw = self.model.require(), state.raw
        start = time.perf_counter()
        dets = detector.postprocess(raw, score_threshold, nms_threshold, top_k, classes=wanted or None)
        post_ms = (time.perf_counter() - start) * 1000
        picture = draw_detections(state.display(), dets, scale=state.scale)
        rows = []
        for i, d in enumerate(dets):
            info = self.where(d.prior_index)
            rows.append([i + 1, d.label, round(d.score, 3), ", ".join(f"{v:.0f}" for v in d.box),
                         f"{d.layer} ({info['feature_map']})",
                         f"#{d.prior_index} cell ({info['cell'][0]}, {info['cell'][1]}) shape "
                         f"{info['default_box_shape']}"])
        data = {
            "image": {"width": raw.width, "height": raw.height},
            "model": self.model.config.name,
            "score_threshold": score_threshold, "nms_threshold": nms_threshold, "top_k": top_k,
            "classes": wanted or "all",
            "candidates_before_nms": dets.candidates,
            "detections_after_nms": len(dets),
            "network_ms": round(raw.seconds * 1000, 1),
            "postprocess_ms": round(post_ms, 2),
            "detections": [
                {**d.to_dict(), "score": round(d.score, 4), "box": [round(v, 1) for v in d.box],
                 **self.where(d.prior_index)}
                for d in dets
            ],
        }
        device = "GPU" if detector.device.type == "cuda" else "CPU"
        summary = (f"**{len(dets)}** detection{'s' * (len(dets) != 1)} after NMS, from **{dets.candidates}** "
                   f"candidate{'s' * (dets.candidates != 1)} above score {score_threshold:.2f} before NMS"
                   f"{' (only ' + ', '.join(wanted) + ')' if wanted else ''}, in the {raw.width}×{raw.height} "
                   f"image · network **{raw.seconds * 1000:.0f} ms** on {device} (preprocessing included) · "
                   f"post-processing **{post_ms:.1f} ms** (sliders re-run only this).")
        return served(picture), rows, data, summary

    def detect_with_state(self, image, score_threshold=None, nms_threshold=None, top_k=None, classes=None):
        """The page's Detect: run the network, draw, and keep what the sliders need (DetectState)."""
        self.model.require()
        parameters = self.parameters(score_threshold, nms_threshold, top_k, classes)  # before the network runs
        picture = read_upload(image)
        raw = self.model.predict(picture)
        display, scale = fit(picture, DISPLAY_SIDE)
        state = DetectState.of(raw, display, scale)
        return (*self.render(state, *parameters), state)

    def detect(self, image, score_threshold=None, nms_threshold=None, top_k=None, classes=None):
        """Detect objects in `image`. Returns the annotated image, a table, the detections as data and a summary.

        API: client.predict(handle_file("photo.jpg"), 0.5, 0.45, api_name="/detect"); thresholds left out take
        the model card's score threshold and the config's NMS IoU and top-k; `classes` is a list of class names.
        An API call keeps nothing on the server once it has answered.
        """
        return self.detect_with_state(image, score_threshold, nms_threshold, top_k, classes)[:4]

    def detect_on_change(self, image, score_threshold, nms_threshold, top_k, classes):
        """A new image in the input: run the network (clearing the outputs when the image is removed)."""
        if image is None:
            return None, [], None, "", None
        return self.detect_with_state(image, score_threshold, nms_threshold, top_k, classes)

    def live(self, frame, score_threshold, nms_threshold, top_k, classes):
        """One webcam frame of the live view: (the frame with its detections, a one-line summary). Nothing is
        kept between frames."""
        if frame is None:
            return gr.skip(), gr.skip()
        score_threshold, nms_threshold, top_k, wanted = self.parameters(score_threshold, nms_threshold, top_k,
                                                                        classes)
        detector = self.model.require()
        picture, _ = fit(to_rgb(frame), LIVE_SIDE)
        raw = self.model.predict(picture)
        dets = detector.postprocess(raw, score_threshold, nms_threshold, top_k, classes=wanted or None)
        found = ", ".join(f"{d.label} {d.score:.2f}" for d in dets[:5]) or "nothing above the score threshold"
        return (served(draw_detections(picture, dets)),
                f"{found} · network {raw.seconds * 1000:.0f} ms on {picture.width}×{picture.height} frames")

    def rerender(self, state, score_threshold, nms_threshold, top_k, classes):
        if state is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return self.render(state, score_threshold, nms_threshold, top_k, classes)

    def build(self, examples_dir: Path) -> Controls:
        """The tab's widgets and events (inside a gr.Blocks)."""
        cfg, model = self.model.config, self.model
        example_paths = write_examples(examples_dir)
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
                image_out = gr.Image(label="Detections", interactive=False, elem_id="detect-output", format="jpeg")
                summary = gr.Markdown(elem_id="detect-summary")
        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="detect-table", label="Detections",
                             wrap=True)
        with gr.Accordion("Detections as data (what the `detect` API returns)", open=False):
            data_out = gr.JSON(label="detections")
        with gr.Accordion("Live: detect on your webcam's stream", open=False, elem_id="live"):
            gr.Markdown(f"Frames go to the server about {1 / LIVE_EVERY_S:.0f} times a second, with the sliders "
                        f"above; each stream stops after {LIVE_LIMIT_S} s (press record again to go on). Your "
                        "browser asks for the camera first.")
            with gr.Row():
                webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                                  elem_id="live-input", height=320)
                live_out = gr.Image(label="Live detections", interactive=False, format="jpeg", elem_id="live-output",
                                    height=320)
            live_summary = gr.Markdown(elem_id="live-summary")
        state = gr.State(None, time_to_live=STATE_TTL_S)
        inputs, outputs = [image_in, score, nms, top_k, classes], [image_out, table, data_out, summary, state]
        # preprocess=False: the handlers decode uploads themselves (ui.inputs.upload_source).
        run.click(self.detect_with_state, inputs, outputs, api_visibility="private", concurrency_id="network",
                  preprocess=False)
        # The API's /detect: the same, but it keeps no state for the session (scripts open a new session per
        # call, and each would otherwise hold its state until it expired).
        gr.Button(visible=False).click(self.detect, inputs, outputs[:4], api_name="detect",
                                       concurrency_id="network", preprocess=False)
        image_in.change(self.detect_on_change, inputs, outputs, api_visibility="private", concurrency_id="network",
                        trigger_mode="always_last", preprocess=False)
        webcam.stream(self.live, [webcam, score, nms, top_k, classes], [live_out, live_summary],
                      api_visibility="private", stream_every=LIVE_EVERY_S, time_limit=LIVE_LIMIT_S,
                      concurrency_id="network", show_progress="hidden")
        for control in (score, nms, top_k, classes):
            control.change(self.rerender, [state, score, nms, top_k, classes], outputs[:4],
                           api_visibility="private", show_progress="hidden", trigger_mode="always_last",
                           concurrency_limit=8, concurrency_id="postprocess")
        return Controls(score, nms)
