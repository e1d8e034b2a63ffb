"""SSD demo (Gradio): detect objects, and see how SSD works — default boxes, matching, hard negatives.

    python app.py                 # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)
    SSD_WEIGHTS=path.safetensors python app.py   # other weights (their model card .json must sit beside them)
    SSD_WEIGHTS=a.safetensors:b.safetensors python app.py   # several (os.pathsep), switched on the page; the
                                                 # default: the shipped weights and the others in ssd/weights/
    SSD_BACKEND=torch python app.py              # what runs the network: auto (default), torch, torch-bf16, onnxruntime

This file only puts the page together; each tab is built in `ui/` and wires widgets to `ssd` (the detector)
and `visualize` (the pictures).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home: the demo needs no internet

import gradio as gr  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.gzip import GZipMiddleware  # noqa: E402

from ssd.heap import keep_heap_small  # noqa: E402
from ui import priors_tab  # noqa: E402
from ui.augment_tab import AugmentTab  # noqa: E402
from ui.demo_models import EXPORTS_MAY_START, DemoModel, DemoModels  # noqa: E402
from ui.detect_tab import DetectTab  # noqa: E402
from ui.guard import RequestGuard, guard_handlers  # noqa: E402
from ui.learn_tab import LearnTab  # noqa: E402
from ui.matching_tab import MatchingTab  # noqa: E402
from ui.model_tab import build_model_tabs  # noqa: E402
from ui.page_cache import PageCache  # noqa: E402
from ui.settings import (  # noqa: E402
    CLIENT_EVENTS,
    CONCURRENCY,
    FORWARDED_HOPS,
    MALLOC_ARENAS,
    MAX_FILE_BYTES,
    MAX_FILE_SIZE,
    MAX_REQUEST_BYTES,
    MAX_VALUES,
    MONITORING,
    QUEUE_SIZE,
    SESSIONS,
    UPLOAD_CACHE_BYTES,
    UPLOAD_CACHE_FILES,
)
from ui.upload_cache import UploadCache, UploadCacheLimit  # noqa: E402

INTRO = """# SSD: Single Shot MultiBox Detector
Detect objects with SSD ([Liu et al., ECCV 2016](https://arxiv.org/abs/1512.02325)) and look inside it:
its default boxes, how they are matched to objects, and what the loss trains on."""


CHOICE_INFO = ("The same photo, seen by another network on its own default boxes: Detect, Matching (hard negatives, "
               "detections as ground truth) and the Model tab follow this choice, for this browser tab only.")


def build_demo(model: DemoModel | DemoModels | None = None) -> gr.Blocks:
    """The page, for `model`: one model or several to switch between (default: the weights named by SSD_WEIGHTS,
    one file or several joined by os.pathsep, else the shipped ones; `ui.demo_models.DemoModels.load`)."""
    models = DemoModels.of(model) if model is not None else DemoModels.load(
        os.environ.get("SSD_WEIGHTS") or None, os.environ.get("SSD_BACKEND") or "auto")
    detect, matching = DetectTab(models), MatchingTab(models)
    # Output pictures older than an hour are removed from Gradio's cache every half hour (ui.visitor_input.served).
    with gr.Blocks(title="SSD: Single Shot MultiBox Detector", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        # Said again at every page load (below): what runs the network changes, PyTorch until a first start's
        # background export is ready, then onnxruntime (ui.demo_models.DemoModel.load).
        summary = gr.Markdown(models.default.summary(), elem_id="model-summary")
        # The model choice: a value per browser session, like every input. With one model it stays hidden; the
        # /detect API still takes it (its optional last argument, `model`).
        choice = gr.Radio(models.choices(), value=models.default_name, label="Model", info=CHOICE_INFO,
                          visible=models.switchable, elem_id="model-choice")
        choice.change(models.summary, choice, summary, api_visibility="private", show_progress="hidden",
                      preprocess=False)
        with gr.Tabs():
            with gr.Tab("Detect", id="detect"):
                controls = detect.build(Path(tempfile.gettempdir()) / "ssd-demo-examples", choice)
            with gr.Tab("Default boxes", id="default-boxes"):
                priors_fn, priors_in, priors_out = priors_tab.build(models.default.config)
            with gr.Tab("Matching", id="matching"):
                (load_in, load_out), (refresh_in, refresh_out) = matching.build(controls, choice)
            with gr.Tab("Augmentation", id="augmentation") as augment_tab:  # drawn when shown (six pictures)
                augment = AugmentTab(models.default)  # needs no network: the default model's config and classes
                augment_in, augment_out = augment.build(matching.photo_inputs)
            augment_tab.select(augment.render, augment_in, augment_out, api_visibility="private",
                               concurrency_limit=4, concurrency_id="pictures")
            with gr.Tab("Learn", id="learn"):
                LearnTab(models).build(matching.photo_inputs, choice)
            with gr.Tab("Model", id="model"):
                build_model_tabs(models, choice)
        demo.load(models.summary, choice, summary, api_visibility="private", show_progress="hidden",
                  preprocess=False)
        demo.load(priors_fn, priors_in, priors_out, api_visibility="private", preprocess=False).then(
            matching.load_example, load_in, load_out, api_visibility="private").then(
            matching.refresh, refresh_in, refresh_out, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    guard_handlers(demo)
    return demo


def log_to_console():
    """The library's and the app's own messages (`ssd`, `ssd.app`: the export's start and end, a fallback to
    PyTorch) on the console, without the INFO chatter of Gradio's HTTP clients."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("ssd")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main():
    log_to_console()
    keep_heap_small(MALLOC_ARENAS)  # before the server starts its threads
    # A first start's background exports (ui.demo_models.DemoModel.load) wait until the page answers: started at
    # once, they would share the 2 cores with loading the other models and building the page.
    EXPORTS_MAY_START.clear()
    demo = build_demo()
    # server name/port: Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860).
    cache = UploadCache(get_upload_folder(), UPLOAD_CACHE_BYTES, UPLOAD_CACHE_FILES)
    # Outermost first: the guard refuses what no handler should see (ui.guard), the first page view comes from
    # memory once built (ui.page_cache), the upload cache makes room for what the guard lets through, and the page
    # and its settings (a third of a megabyte each) and scripts travel compressed, at a level that costs little
    # CPU (event streams and pictures are left as they are).
    middleware = [
        Middleware(RequestGuard, blocks=demo, max_request=MAX_REQUEST_BYTES, max_upload=MAX_FILE_BYTES,
                   max_values=MAX_VALUES, client_events=CLIENT_EVENTS, forwarded_hops=FORWARDED_HOPS),
        Middleware(PageCache),
        Middleware(UploadCacheLimit, cache=cache, default_size=MAX_FILE_BYTES),
        Middleware(GZipMiddleware, minimum_size=4096, compresslevel=5),
    ]
    demo.launch(max_file_size=MAX_FILE_SIZE, ssr_mode=False, show_error=False, footer_links=["api", "gradio"],
                state_session_capacity=SESSIONS, prevent_thread_lock=True, enable_monitoring=MONITORING,
                app_kwargs={"middleware": middleware})
    EXPORTS_MAY_START.set()
    demo.block_thread()


if __name__ == "__main__":
    main()
