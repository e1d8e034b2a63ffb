"""SSD demo (Gradio): detect objects, and see how SSD works — default boxes, matching, hard negatives.

    python app.py                 # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)
    SSD_WEIGHTS=path.safetensors python app.py   # other weights (their model card .json must sit beside them)

This file only builds the page and wires widgets to `ssd` (the detector) and `visualize` (the pictures).
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home: the demo needs no internet

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

import ssd  # noqa: E402
from ssd.image import to_rgb  # noqa: E402
from visualize.draw import draw_detections, draw_marker, fit  # noqa: E402
from visualize.examples import example_annotations, example_image, example_names, write_examples  # noqa: E402
from visualize.matching import (  # noqa: E402
    POSITIVES_HEADERS,
    GroundTruth,
    draw_matches,
    draw_offsets,
    hard_negatives_from_logits,
    iou_heatmaps,
    match_ground_truth,
    offsets_markdown,
    positive_choices,
    positives_per_layer,
)
from visualize.priors import (  # noqa: E402
    cell_at,
    cell_default_boxes,
    draw_cell_default_boxes,
    feature_map_choices,
    layer_label,
    layer_summary,
    shape_choices,
    summary_formula,
)

log = logging.getLogger("ssd.app")

MAX_PIXELS = int(float(os.environ.get("SSD_MAX_MEGAPIXELS", "40")) * 1_000_000)  # larger uploads are refused
MAX_FILE_SIZE = os.environ.get("SSD_MAX_FILE_SIZE", "20mb")  # upload cap: Gradio's for files, ours for data URLs


def _bytes(size: str) -> int:
    number, unit = size.strip().lower().rstrip("b") or "0", 1
    for suffix, factor in (("k", 1024), ("m", 1024 ** 2), ("g", 1024 ** 3)):
        if number.endswith(suffix):
            number, unit = number[:-1], factor
    return int(float(number) * unit)


MAX_FILE_BYTES = _bytes(MAX_FILE_SIZE)
CONCURRENCY = int(os.environ.get("SSD_CONCURRENCY", "2"))  # network runs at once (memory bound)
STATE_TTL_S = int(os.environ.get("SSD_STATE_TTL_S", "900"))  # a session's cached outputs live this long
DISPLAY_SIDE = 1024  # pictures sent back to the browser are at most this big
MATCH_SIDE = 800
CONFIGS = {"SSD300": ssd.SSD300_VOC, "SSD512": ssd.SSD512_VOC}
SHAPE_CHOICES = shape_choices(ssd.SSD512_VOC)  # both configs have every shape


# --------------------------------------------------------------------------------------------- the model
def load_detector():
    """(detector or None, message). Never raises: the teaching tabs work without a model."""
    path = os.environ.get("SSD_WEIGHTS") or None
    try:
        det = ssd.Detector.load(path)
    except FileNotFoundError as e:
        return None, f"⚠️ **No model loaded** — {e} The *Default boxes* and *Matching* tabs work without one."
    except Exception as e:  # a corrupt or mismatched file must not stop the teaching tabs from serving
        log.exception("loading weights failed")
        return None, f"⚠️ **The weights could not be loaded** ({type(e).__name__}: {e})."
    return det, ""


DETECTOR, LOAD_MESSAGE = load_detector()
MODEL_CFG = DETECTOR.config if DETECTOR else ssd.SSD300_VOC
CLASS_NAMES = list(DETECTOR.class_names) if DETECTOR else list(ssd.VOC_CLASSES)
# The slider starts at the threshold the model card recommends, so a visitor sees real detections at once.
DEFAULT_SCORE = DETECTOR.score_threshold if DETECTOR else 0.5
LAYOUT = ssd.prior_layout(MODEL_CFG)
NO_MODEL = ("No model weights are loaded, so there is nothing to detect with. Start the app with "
            "SSD_WEIGHTS=/path/to/weights.safetensors, or train the demo weights (README, 'Train your own').")


def model_summary() -> str:
    if DETECTOR is None:
        return LOAD_MESSAGE
    cfg, card = DETECTOR.config, DETECTOR.card
    device = DETECTOR.device.type.upper()
    if DETECTOR.device.type == "cuda":
        device = torch.cuda.get_device_name(DETECTOR.device)
    if cfg.backbone == "vgg16":
        base = f"VGG16 base{' with BatchNorm' if cfg.batch_norm else ''}, width ×{cfg.width:g}"
    else:
        base = "EfficientNet-Lite0 base pretrained on ImageNet"
    parts = [f"**Model:** {cfg.name} ({cfg.num_default_boxes} default boxes, {base}), {len(CLASS_NAMES)} classes, "
             f"on {device}."]
    val = card.get("val") or {}
    if isinstance(val.get("map_area"), int | float):
        parts.append(f"Measured on {val.get('images', '?')} held-out images: mAP@0.5 {100 * val['map_area']:.1f} "
                     f"(VOC07 11-point {100 * val['map_11pt']:.1f}). Default score threshold "
                     f"{DETECTOR.score_threshold:.2f} (best F1 there).")
    if card.get("note"):
        parts.append(str(card["note"]))
    return " ".join(parts)


# --------------------------------------------------------------------------------------------- inputs
def upload_source(value) -> tuple[str | io.BytesIO, str] | None:
    """(what to open, a name to show) from an image input's raw payload, or None when there is no image.

    The image events run with `preprocess=False`, so Gradio hands over its upload record (a file it received
    under the upload size limit) without decoding the picture itself: a broken or hostile file then reaches
    `read_upload` and gets a clear message instead of Gradio's generic error. An image sent as a data URL is
    decoded in memory under the same size limit; nothing is written to disk.
    """
    if value is None:
        return None
    if isinstance(value, str | Path):
        return str(value), Path(value).name
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        if value.get("path"):
            return value["path"], value.get("orig_name") or Path(value["path"]).name
        url = value.get("url") or ""
        if url.startswith("data:"):
            payload = url.split(",", 1)[1] if "," in url else ""
            if len(payload) * 3 // 4 > MAX_FILE_BYTES:
                raise gr.Error(f"The pasted image is larger than this demo's upload limit ({MAX_FILE_SIZE}).")
            try:
                data = base64.b64decode(payload, validate=False)
            except (ValueError, binascii.Error) as e:
                raise gr.Error(f"The image data URL could not be decoded ({e}).") from e
            return io.BytesIO(data), "pasted image"
    raise gr.Error(f"Expected an uploaded image file, got {type(value).__name__}.")


def read_upload(value) -> Image.Image:
    """An uploaded file -> upright RGB image, or a gr.Error that says what is wrong with the file."""
    if isinstance(value, Image.Image):
        return to_rgb(value)
    source = upload_source(value)
    if source is None:
        raise gr.Error("No image: upload a photo (JPEG, PNG, WebP …) or pick an example.")
    source, name = source
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise gr.Error(f"'{name}' was not received; please upload it again.")
        size = os.path.getsize(source)
    else:
        size = source.getbuffer().nbytes
    if size == 0:
        raise gr.Error(f"'{name}' is empty (0 bytes). Upload a photo (JPEG, PNG, WebP …).")
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise gr.Error(f"'{name}' is {w}×{h} pixels ({w * h / 1e6:.0f} megapixels); this demo accepts up to "
                               f"{MAX_PIXELS / 1e6:.0f} megapixels. Please resize it first.")
            im.load()
            image = to_rgb(im)
    except gr.Error:
        raise
    except Image.DecompressionBombError as e:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise gr.Error(f"'{name}' declares an enormous image (over {limit:.0f} megapixels: a decompression bomb?); "
                       f"this demo accepts up to {MAX_PIXELS / 1e6:.0f} megapixels.") from e
    except UnidentifiedImageError as e:
        raise gr.Error(f"'{name}' is not an image this demo can read. Upload a JPEG, PNG, WebP, BMP, GIF or TIFF "
                       "photo.") from e
    except (OSError, SyntaxError, ValueError, TypeError, EOFError) as e:
        raise gr.Error(f"'{name}' could not be decoded — the file looks truncated or corrupt ({e}).") from e
    except MemoryError as e:
        raise gr.Error(f"'{name}' needs more memory to decode than this demo has.") from e
    return image


# --------------------------------------------------------------------------------------------- outputs
def served(picture: Image.Image) -> Image.Image:
    """`picture` with a unique id in its metadata (EXIF ImageUniqueID for JPEG, a text chunk for PNG).

    Gradio stores an output picture in a cache file named by the hash of its bytes, and rewrites that file in
    place; when two visitors get the same picture at once (the same photo and sliders, or every page load's
    default pictures), one of them can be served a half-written file. A unique id gives every answer a file of
    its own. (Old files are removed by the `delete_cache` schedule in `build_demo`.)
    """
    uid = uuid.uuid4().hex
    exif = picture.getexif()
    exif[0xA420] = uid  # ImageUniqueID
    picture.info["exif"] = exif.tobytes()
    picture.info["ImageUniqueID"] = uid
    return picture


# --------------------------------------------------------------------------------------------- Detect
def _layer_cell(prior_index: int) -> dict:
    d = LAYOUT.describe(prior_index)
    return {"feature_map": f"{d['feature_map']}x{d['feature_map']}", "cell": [d["row"], d["col"]],
            "default_box_shape": d["shape"]}


@dataclass
class DetectState:
    """What the sliders need to redraw without running the network again, kept per browser session: the
    network's outputs in half precision and the picture as JPEG (about 0.7 MB for a 1024-pixel photo, where
    full-precision outputs and a raw picture took 5 MB). Sessions let go of it after STATE_TTL_S."""

    raw: ssd.RawPrediction
    jpeg: bytes
    scale: float

    @classmethod
    def of(cls, raw: ssd.RawPrediction, display: Image.Image, scale: float) -> DetectState:
        buf = io.BytesIO()
        display.save(buf, "JPEG", quality=90)
        small = ssd.RawPrediction(raw.loc.half().cpu(), raw.conf.half().cpu(), raw.width, raw.height, raw.seconds)
        return cls(small, buf.getvalue(), scale)

    def display(self) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg)).convert("RGB")


def check_parameters(score_threshold, nms_threshold, top_k, classes) -> tuple[float, float, int, list[str]]:
    """The detection parameters as numbers and class names, or a gr.Error that names the bad value (API users
    can send anything)."""
    def number(name, value, low, high):
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise gr.Error(f"{name} must be a number in [{low}, {high}], got {value!r}.") from None
        if not (math.isfinite(v) and low <= v <= high):
            raise gr.Error(f"{name} must be a number in [{low}, {high}], got {value!r}.")
        return v

    score = number("score_threshold", score_threshold, 0, 1)
    nms = number("nms_threshold", nms_threshold, 0, 1)
    k = number("top_k", top_k, 1, MODEL_CFG.top_k)
    if k != int(k):
        raise gr.Error(f"top_k must be a whole number from 1 to {MODEL_CFG.top_k}, got {top_k!r}.")
    if classes is None or classes == "":
        classes = []
    elif isinstance(classes, str):
        classes = [classes]  # one class name, not its letters
    if not isinstance(classes, list | tuple) or not all(isinstance(c, str) for c in classes):
        raise gr.Error(f"classes must be a list of class names, got {classes!r}.")
    unknown = [c for c in classes if c not in CLASS_NAMES]
    if unknown:
        raise gr.Error(f"Unknown classes {unknown}: this model detects {', '.join(CLASS_NAMES)}.")
    return score, nms, int(k), sorted(set(classes))


# Every path that runs the network (detect, hard negatives, detections as ground truth) takes one of these, so
# at most CONCURRENCY forward passes run at once, whatever the page's events are.
NETWORK = threading.BoundedSemaphore(CONCURRENCY)


def predict(image: Image.Image) -> ssd.RawPrediction:
    with NETWORK:
        return DETECTOR.predict(image)


def render_detections(state: DetectState, score_threshold, nms_threshold, top_k, classes=None):
    """Post-processing only, on the cached network outputs: (annotated image, table, data, summary)."""
    score_threshold, nms_threshold, top_k, wanted = check_parameters(score_threshold, nms_threshold, top_k, classes)
    raw = state.raw
    start = time.perf_counter()
    dets = DETECTOR.postprocess(raw, score_threshold, nms_threshold, top_k, classes=wanted or None)
    post_ms = (time.perf_counter() - start) * 1000
    picture = draw_detections(state.display(), dets, scale=state.scale)
    rows = []
    for i, d in enumerate(dets):
        info = _layer_cell(d.prior_index)
        rows.append([i + 1, d.label, round(d.score, 3), ", ".join(f"{v:.0f}" for v in d.box),
                     f"{d.layer} ({info['feature_map']})",
                     f"#{d.prior_index} cell ({info['cell'][0]}, {info['cell'][1]}) shape {info['default_box_shape']}"])
    data = {
        "image": {"width": raw.width, "height": raw.height},
        "model": MODEL_CFG.name,
        "score_threshold": score_threshold, "nms_threshold": nms_threshold, "top_k": top_k,
        "classes": wanted or "all",
        "candidates_before_nms": dets.candidates,
        "detections_after_nms": len(dets),
        "network_ms": round(raw.seconds * 1000, 1),
        "postprocess_ms": round(post_ms, 2),
        "detections": [
            {**d.to_dict(), "score": round(d.score, 4), "box": [round(v, 1) for v in d.box],
             **_layer_cell(d.prior_index)}
            for d in dets
        ],
    }
    device = "GPU" if DETECTOR.device.type == "cuda" else "CPU"
    summary = (f"**{len(dets)}** detection{'s' * (len(dets) != 1)} after NMS, from **{dets.candidates}** "
               f"candidate{'s' * (dets.candidates != 1)} above score {score_threshold:.2f} before NMS"
               f"{' (only ' + ', '.join(wanted) + ')' if wanted else ''}, in the {raw.width}×{raw.height} image · "
               f"network **{raw.seconds * 1000:.0f} ms** on {device} (preprocessing included) · "
               f"post-processing **{post_ms:.1f} ms** (sliders re-run only this).")
    return served(picture), rows, data, summary


def detect_with_state(image, score_threshold=None, nms_threshold=None, top_k=None, classes=None):
    """The Detect tab: run the network, draw, and keep what the sliders need (DetectState)."""
    if DETECTOR is None:
        raise gr.Error(NO_MODEL)
    score_threshold = DEFAULT_SCORE if score_threshold is None else score_threshold
    nms_threshold = MODEL_CFG.nms_threshold if nms_threshold is None else nms_threshold
    top_k = MODEL_CFG.top_k if top_k is None else top_k
    check_parameters(score_threshold, nms_threshold, top_k, classes)  # before the network runs
    picture = read_upload(image)
    raw = predict(picture)
    display, scale = fit(picture, DISPLAY_SIDE)
    state = DetectState.of(raw, display, scale)
    return (*render_detections(state, score_threshold, nms_threshold, top_k, classes), state)


def detect(image, score_threshold=None, nms_threshold=None, top_k=None, classes=None):
    """Detect objects in `image`. Returns the annotated image, a table, the detections as data and a summary.

    API: client.predict(handle_file("photo.jpg"), 0.5, 0.45, api_name="/detect"); thresholds left out take the
    model card's score threshold and the config's NMS IoU and top-k; `classes` is a list of class names. An API
    call keeps nothing on the server once it has answered.
    """
    return detect_with_state(image, score_threshold, nms_threshold, top_k, classes)[:4]


def detect_on_change(image, score_threshold, nms_threshold, top_k, classes):
    """A new image in the input: run the network (clearing the outputs when the image is removed)."""
    if image is None:
        return None, [], None, "", None
    return detect_with_state(image, score_threshold, nms_threshold, top_k, classes)


def rerender(state, score_threshold, nms_threshold, top_k, classes):
    if state is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return render_detections(state, score_threshold, nms_threshold, top_k, classes)


# --------------------------------------------------------------------------------------------- Default boxes
def priors_view(config_name, layer, row, col, shapes, grid, photo):
    cfg = CONFIGS[config_name]
    layer = min(int(layer), len(cfg.feature_maps) - 1)  # the layer list may lag a switch from SSD512 to SSD300
    f = cfg.feature_maps[layer]
    row, col = min(int(row), f - 1), min(int(col), f - 1)
    image = example_image(photo)
    picture = draw_cell_default_boxes(image, cfg, layer, row, col, shapes, show_grid=grid)
    boxes = cell_default_boxes(cfg, layer, row, col)
    rows = [[b["shape"], round(b["w_px"], 1), round(b["h_px"], 1), round(b["cx"] * cfg.image_size, 1),
             round(b["cy"] * cfg.image_size, 1), b["index"]] for b in boxes]
    headers, summary = layer_summary(cfg)
    caption = (f"**{cfg.name.split('_')[0]}**: {summary_formula(cfg)} default boxes. "
               f"Cell ({row}, {col}) of {layer_label(cfg, layer)} holds boxes #{boxes[0]['index']}–"
               f"#{boxes[-1]['index']}. The photo is warped to the {cfg.image_size}×{cfg.image_size} input, as SSD "
               "sees it; box sizes are in input pixels.")
    return served(picture), rows, summary, caption


def cell_slider(f: int) -> gr.Slider:
    """A row/column slider for an f×f map. A 1×1 map has one cell, and a Gradio slider needs min < max, so
    its slider spans 0–1, stays at 0 and is locked."""
    if f == 1:
        return gr.Slider(minimum=0, maximum=1, value=0, interactive=False)
    return gr.Slider(minimum=0, maximum=f - 1, value=f // 2, interactive=True)


def on_config(config_name, layer):
    cfg = CONFIGS[config_name]
    layer = min(int(layer), len(cfg.feature_maps) - 1)
    choices = [(label, k) for k, label in enumerate(feature_map_choices(cfg))]
    f = cfg.feature_maps[layer]
    return gr.Dropdown(choices=choices, value=layer), cell_slider(f), cell_slider(f)


def on_layer(config_name, layer):
    f = CONFIGS[config_name].feature_maps[int(layer)]
    return cell_slider(f), cell_slider(f)


def on_priors_click(config_name, layer, evt: gr.SelectData):
    canvas = 600  # draw_cell_default_boxes' default canvas; the legend below it is not part of the grid
    x, y = evt.index[0], evt.index[1]
    if y >= canvas:
        return gr.skip(), gr.skip()
    row, col = cell_at(CONFIGS[config_name], int(layer), x, y, canvas, canvas)
    return row, col


# --------------------------------------------------------------------------------------------- Matching
GT_HEADERS = ["class", "x1", "y1", "x2", "y2"]


def _match_state(image: Image.Image, name: str) -> dict:
    display, scale = fit(image, MATCH_SIDE)
    return {"display": display, "scale": scale, "width": image.width, "height": image.height, "name": name,
            "conf": None}


def load_match_example(name):
    if name is None:  # the dropdown was cleared by an upload of one's own photo
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    image = example_image(name)
    rows = [[label, *box] for label, box in example_annotations(name)]
    return _match_state(image, name), rows, None, gr.Image(value=None)


def load_match_upload(path):
    if path is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    image = read_upload(path)
    # The example dropdown lets go of its photo, so that picking that example again loads it.
    return _match_state(image, upload_source(path)[1]), [], None, gr.Dropdown(value=None)


def parse_ground_truth(state, rows):
    """Table rows -> (GroundTruth, problems). Bad rows are skipped and reported, never raised."""
    labels, boxes, problems = [], [], []
    W, H = state["width"], state["height"]
    for i, row in enumerate(rows or []):
        if row is None or all(v in (None, "") for v in row):
            continue
        row = list(row) + [None] * (5 - len(row))
        name = str(row[0] or "").strip()
        if name not in CLASS_NAMES:
            problems.append(f"row {i + 1}: unknown class {name!r} (use one of: {', '.join(CLASS_NAMES)})")
            continue
        try:
            x1, y1, x2, y2 = (float(v) for v in row[1:5])
        except (TypeError, ValueError):
            problems.append(f"row {i + 1}: x1, y1, x2, y2 must be numbers (pixels), got {row[1:5]}")
            continue
        x1, x2 = sorted((min(max(x1, 0), W), min(max(x2, 0), W)))
        y1, y2 = sorted((min(max(y1, 0), H), min(max(y2, 0), H)))
        if x2 - x1 < 1 or y2 - y1 < 1:
            problems.append(f"row {i + 1}: the box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) has no area inside "
                            f"the {W}×{H} image")
            continue
        labels.append(name)
        boxes.append((x1, y1, x2, y2))
    return GroundTruth(labels, boxes, W, H), problems


def _hard_negatives(state, m):
    if DETECTOR is None:
        return None, "Hard negatives need the model's confidences (a real forward pass), and no model is loaded."
    if state["conf"] is None:  # one forward pass per image; the ground truth does not change it
        state["conf"] = predict(state["display"]).conf.half().cpu()
    neg = hard_negatives_from_logits(MODEL_CFG, state["conf"], m)
    pos = int(m.positives.sum())
    return neg, (f"Hard negatives: the **{int(neg.sum())}** background default boxes with the highest confidence "
                 f"loss in this model's forward pass ({MODEL_CFG.neg_pos_ratio}:1 for {pos} positives).")


def refresh_matching(state, rows, threshold, show_negatives, gt_choice, pos_choice, pending=None, note=None):
    """Everything on the Matching tab that depends on the image, the ground truth and the threshold. `note`: a
    message from the step before (e.g. detections used as ground truth), shown first and then cleared."""
    if state is None:
        return (gr.skip(),) * 10
    gt, problems = parse_ground_truth(state, rows)
    notes = [f"⚠️ {p}" for p in problems]
    m = match_ground_truth(MODEL_CFG, gt, CLASS_NAMES, threshold)
    negatives = None
    if show_negatives and gt.boxes:
        negatives, note = _hard_negatives(state, m)
        notes.append(note)
    picture = draw_matches(state["display"], MODEL_CFG, m, gt, negatives=negatives)
    if pending is not None:  # the first corner of a box being drawn
        picture = draw_marker(picture, (pending[0] * state["scale"], pending[1] * state["scale"]))
    headers, table = positives_per_layer(MODEL_CFG, m)
    if not gt.boxes:
        notes.insert(0, "No ground truth yet: pick an example, type boxes into the table, click two opposite "
                        "corners on the picture, or use the current detections.")
    else:
        n_gt = len(gt.boxes)
        notes.insert(0, f"**{int(m.positives.sum())}** positives for {n_gt} ground-truth "
                        f"box{'es' * (n_gt != 1)} at IoU ≥ "
                        f"{float(threshold):.2f}; each ground truth's best default box is forced positive "
                        "(thick dashed), whatever its IoU.")
    if note:
        notes.insert(0, note)
    if pending is not None:
        notes.insert(0, f"➕ First corner at ({pending[0]:.0f}, {pending[1]:.0f}): click the opposite corner to add "
                        "a box.")
    gt_choices = [(f"GT {i}: {label}", i) for i, label in enumerate(gt.labels)]
    gt_value = gt_choice if gt_choice is not None and gt_choice < len(gt.labels) else (0 if gt.labels else None)
    pos = positive_choices(MODEL_CFG, m)
    pos_ids = [i for _, i in pos]
    pos_value = pos_choice if pos_choice in pos_ids else (pos_ids[0] if pos_ids else None)
    heat = _heatmap(gt, gt_value, threshold)
    offsets_md, offsets_img = _offsets(state, gt, m, pos_value)
    return (served(picture), "\n\n".join(notes), table, gr.Dropdown(choices=gt_choices, value=gt_value), heat,
            gr.Dropdown(choices=pos, value=pos_value), offsets_md, offsets_img, state, None)


def _heatmap(gt, index, threshold):
    if index is None or index >= len(gt.boxes):
        return None
    box = gt.normalised()[index]
    return served(iou_heatmaps(MODEL_CFG, box, float(threshold)))


def _offsets(state, gt, m, index):
    if index is None:
        return "No positive default box to encode.", None
    return offsets_markdown(MODEL_CFG, m, index), served(draw_offsets(state["display"], MODEL_CFG, m, gt, index))


def heatmap_only(state, rows, threshold, gt_choice):
    if state is None or gt_choice is None:
        return None
    gt, _ = parse_ground_truth(state, rows)
    return _heatmap(gt, int(gt_choice), threshold)


def offsets_only(state, rows, threshold, pos_choice):
    if state is None or pos_choice is None:
        return gr.skip(), gr.skip()
    gt, _ = parse_ground_truth(state, rows)
    m = match_ground_truth(MODEL_CFG, gt, CLASS_NAMES, threshold)
    if not bool(m.positives[0, int(pos_choice)]):
        return gr.skip(), gr.skip()
    return _offsets(state, gt, m, int(pos_choice))


def on_match_click(state, rows, draw_class, pending, evt: gr.SelectData):
    """Two clicks on the picture = two opposite corners of a new ground-truth box."""
    if state is None:
        return gr.skip(), gr.skip(), gr.skip()
    x, y = evt.index[0], evt.index[1]
    W, H = state["display"].size
    if y >= H:  # the legend strip under the picture
        return gr.skip(), gr.skip(), gr.skip()
    px, py = x / state["scale"], y / state["scale"]
    if pending is None:
        return gr.skip(), (px, py), f"First corner at ({px:.0f}, {py:.0f}); click the opposite corner."
    (qx, qy) = pending
    row = [draw_class, round(min(px, qx)), round(min(py, qy)), round(max(px, qx)), round(max(py, qy))]
    return [list(r) for r in (rows or []) if any(v not in (None, "") for v in r)] + [row], None, \
        f"Added {draw_class} ({row[1]}, {row[2]}, {row[3]}, {row[4]})."


def detections_as_gt(state, score_threshold, nms_threshold):
    if state is None:
        return gr.skip(), "Pick an image first."
    if DETECTOR is None:
        return gr.skip(), NO_MODEL
    score_threshold, nms_threshold, _, _ = check_parameters(score_threshold, nms_threshold, MODEL_CFG.top_k, None)
    dets = DETECTOR.postprocess(predict(state["display"]), score_threshold, nms_threshold)
    where = f"score ≥ {score_threshold:.2f}, the Detect tab's score threshold"
    if not dets:
        return gr.skip(), (f"⚠️ The model finds nothing here ({where}): lower that slider on the Detect tab and "
                           "try again.")
    s = state["scale"]
    rows = [[d.label, *(round(v / s) for v in d.box)] for d in dets]
    return rows, f"Using the model's {len(rows)} detection{'s' * (len(rows) != 1)} ({where}) as ground truth."


# --------------------------------------------------------------------------------------------- the page
INTRO = """# SSD: Single Shot MultiBox Detector
Detect objects with SSD ([Liu et al., ECCV 2016](https://arxiv.org/abs/1512.02325)) and look inside it:
its default boxes, how they are matched to objects, and what the loss trains on."""


def build_demo() -> gr.Blocks:
    example_paths = write_examples(Path(tempfile.gettempdir()) / "ssd-demo-examples")
    classes_sorted = sorted(CLASS_NAMES)
    # Output pictures older than an hour are removed from Gradio's cache every half hour (see `served`).
    with gr.Blocks(title="SSD: Single Shot MultiBox Detector", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(model_summary(), elem_id="model-summary")
        with gr.Tabs():
            # ------------------------------------------------------------------ Detect
            with gr.Tab("Detect", id="detect"):
                if DETECTOR is None:
                    gr.Markdown(f"⚠️ {NO_MODEL}", elem_id="no-model")
                with gr.Row():
                    with gr.Column(scale=2, min_width=280):
                        image_in = gr.Image(type="filepath", image_mode=None, label="Image",
                                               sources=["upload", "clipboard"], elem_id="detect-input", height=320)
                        gr.Examples([[str(p)] for p in example_paths.values()], inputs=[image_in],
                                    example_labels=list(example_paths), cache_examples=False, label="Example photos")
                        score = gr.Slider(0.01, 1.0, value=DEFAULT_SCORE, step=0.01, label="Score threshold")
                        nms = gr.Slider(0.05, 1.0, value=MODEL_CFG.nms_threshold, step=0.05, label="NMS IoU")
                        top_k = gr.Slider(1, MODEL_CFG.top_k, value=MODEL_CFG.top_k, step=1, label="Top-k")
                        classes = gr.Dropdown(classes_sorted, value=[], multiselect=True, label="Only these classes",
                                              info="empty: all classes")
                        run = gr.Button("Detect", variant="primary")
                    with gr.Column(scale=3):
                        image_out = gr.Image(label="Detections", interactive=False, elem_id="detect-output",
                                             format="jpeg")
                        summary = gr.Markdown(elem_id="detect-summary")
                table = gr.Dataframe(headers=["#", "class", "score", "box (x1, y1, x2, y2) px", "feature map",
                                              "default box"], interactive=False, elem_id="detect-table",
                                     label="Detections", wrap=True)
                with gr.Accordion("Detections as data (what the `detect` API returns)", open=False):
                    data_out = gr.JSON(label="detections")
                raw_state = gr.State(None, time_to_live=STATE_TTL_S)
                outputs = [image_out, table, data_out, summary, raw_state]
                # preprocess=False: the handlers decode uploads themselves (see `upload_source`).
                run.click(detect_with_state, [image_in, score, nms, top_k, classes], outputs,
                          api_visibility="private", concurrency_id="network", preprocess=False)
                # The API's /detect: the same, but it keeps no state for the session (scripts open a new
                # session per call, and each would otherwise hold its state until it expired).
                api_button = gr.Button(visible=False)
                api_button.click(detect, [image_in, score, nms, top_k, classes], outputs[:4], api_name="detect",
                                 concurrency_id="network", preprocess=False)
                image_in.change(detect_on_change, [image_in, score, nms, top_k, classes], outputs,
                                api_visibility="private", concurrency_id="network", trigger_mode="always_last",
                                preprocess=False)
                for control in (score, nms, top_k, classes):
                    control.change(rerender, [raw_state, score, nms, top_k, classes], outputs[:4],
                                   api_visibility="private", show_progress="hidden", trigger_mode="always_last",
                                   concurrency_limit=8, concurrency_id="postprocess")

            # ------------------------------------------------------------------ Default boxes
            with gr.Tab("Default boxes", id="default-boxes"):
                gr.Markdown("Every cell of every source feature map carries 4 or 6 *default boxes*, centred on the "
                            "cell: ratio 1 at scale sₖ, an extra ratio-1 box at s′ₖ = √(sₖ·sₖ₊₁), and ratios 2, ½ "
                            "(and 3, ⅓). Click the picture to pick a cell.")
                with gr.Row():
                    with gr.Column(scale=2, min_width=280):
                        p_config = gr.Radio(list(CONFIGS), value="SSD300", label="Model")
                        p_layer = gr.Dropdown([(c, k) for k, c in enumerate(feature_map_choices(ssd.SSD300_VOC))],
                                              value=1, label="Feature map")
                        p_row = gr.Slider(0, 18, value=7, step=1, label="Cell row i")
                        p_col = gr.Slider(0, 18, value=9, step=1, label="Cell column j")
                        p_shapes = gr.CheckboxGroup(SHAPE_CHOICES, value=[v for _, v in SHAPE_CHOICES],
                                                    label="Aspect ratios")
                        p_grid = gr.Checkbox(value=True, label="Show the grid of cell centres")
                        p_photo = gr.Dropdown(example_names(), value="astronaut", label="Photo")
                        p_cell = gr.Dataframe(headers=["shape", "w (px)", "h (px)", "cx (px)", "cy (px)", "#"],
                                              interactive=False, label="This cell's default boxes")
                    with gr.Column(scale=3):
                        p_image = gr.Image(label="Default boxes of one cell (click to choose a cell)",
                                           interactive=False, elem_id="priors-output", format="jpeg")
                        p_caption = gr.Markdown()
                p_summary = gr.Dataframe(headers=layer_summary(ssd.SSD300_VOC)[0], interactive=False,
                                         label="Default boxes per source layer", elem_id="priors-summary")
                p_inputs = [p_config, p_layer, p_row, p_col, p_shapes, p_grid, p_photo]
                p_outputs = [p_image, p_cell, p_summary, p_caption]
                p_config.input(on_config, [p_config, p_layer], [p_layer, p_row, p_col], api_visibility="private")
                p_layer.input(on_layer, [p_config, p_layer], [p_row, p_col], api_visibility="private")
                for control in p_inputs:
                    control.change(priors_view, p_inputs, p_outputs, api_visibility="private",
                                   show_progress="hidden", trigger_mode="always_last", concurrency_limit=4,
                                   concurrency_id="pictures")
                p_image.select(on_priors_click, [p_config, p_layer], [p_row, p_col], api_visibility="private")

            # ------------------------------------------------------------------ Matching
            with gr.Tab("Matching", id="matching"):
                gr.Markdown("Training assigns each ground-truth box its best default box (forced), plus every "
                            "default box with IoU ≥ the threshold. Positives are coloured by the source layer "
                            "they come from.")
                m_state = gr.State(None, time_to_live=STATE_TTL_S)
                m_pending = gr.State(None)
                m_note = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=2, min_width=280):
                        m_photo = gr.Dropdown(example_names(), value="motorcycle", label="Example photo "
                                              "(with hand-made ground truth)")
                        m_upload = gr.Image(type="filepath", image_mode=None, label="…or your own photo",
                                               sources=["upload", "clipboard"], height=160)
                        m_gt = gr.Dataframe(headers=GT_HEADERS, datatype=["str", "number", "number", "number",
                                                                          "number"],
                                            type="array", interactive=True, column_count=5, label="Ground truth "
                                            "(pixels; edit, add rows, or click two corners on the picture)")
                        with gr.Row():
                            m_class = gr.Dropdown(CLASS_NAMES, value="person" if "person" in CLASS_NAMES else
                                                  CLASS_NAMES[0], label="Class of drawn boxes", scale=2)
                            m_clear = gr.Button("Clear ground truth", scale=1)
                        m_use_dets = gr.Button("Use current detections as ground truth")
                        m_thr = gr.Slider(0.1, 0.9, value=MODEL_CFG.match_threshold, step=0.05,
                                          label="IoU threshold for positives")
                        m_neg = gr.Checkbox(value=False, label=f"Show the {MODEL_CFG.neg_pos_ratio}:1 hard negatives "
                                            "(one forward pass of the model)")
                    with gr.Column(scale=3):
                        m_image = gr.Image(label="Matched default boxes (click two corners to add a box)",
                                           interactive=False, elem_id="match-output",
                                           format="jpeg")
                        m_msg = gr.Markdown(elem_id="match-message")
                        m_table = gr.Dataframe(headers=list(POSITIVES_HEADERS), interactive=False,
                                               label="Positives per source layer", elem_id="match-table")
                with gr.Row():
                    m_gt_pick = gr.Dropdown([], label="IoU heat map of ground truth", scale=1, min_width=200)
                    m_heat = gr.Image(label="IoU with every default box, per feature map", interactive=False,
                                      format="png", show_label=False, scale=5, elem_id="match-heatmap")
                with gr.Row():
                    with gr.Column(scale=2):
                        m_pos_pick = gr.Dropdown([], label="One positive: its encoded offsets")
                        m_offsets = gr.Markdown()
                    with gr.Column(scale=2):
                        m_offsets_img = gr.Image(label="Default box, ground truth, decode(encode(g))",
                                                 interactive=False, format="jpeg")
                refresh_in = [m_state, m_gt, m_thr, m_neg, m_gt_pick, m_pos_pick, m_pending, m_note]
                refresh_out = [m_image, m_msg, m_table, m_gt_pick, m_heat, m_pos_pick, m_offsets, m_offsets_img,
                               m_state, m_note]
                kw = dict(api_visibility="private", concurrency_limit=4, concurrency_id="pictures")
                m_photo.change(load_match_example, [m_photo], [m_state, m_gt, m_pending, m_upload], **kw).then(
                    refresh_matching, refresh_in, refresh_out, **kw)
                m_upload.upload(load_match_upload, [m_upload], [m_state, m_gt, m_pending, m_photo],
                                preprocess=False, **kw).then(
                    refresh_matching, refresh_in, refresh_out, **kw)
                m_clear.click(lambda: ([], None), None, [m_gt, m_pending], **kw).then(
                    refresh_matching, refresh_in, refresh_out, **kw)
                m_use_dets.click(detections_as_gt, [m_state, score, nms], [m_gt, m_note], **kw).then(
                    refresh_matching, refresh_in, refresh_out, **kw)
                m_image.select(on_match_click, [m_state, m_gt, m_class, m_pending], [m_gt, m_pending, m_msg],
                               **kw).then(refresh_matching, refresh_in, refresh_out, **kw)
                m_gt.input(refresh_matching, refresh_in, refresh_out, trigger_mode="always_last", **kw)
                for control in (m_thr, m_neg):
                    control.change(refresh_matching, refresh_in, refresh_out, trigger_mode="always_last",
                                   show_progress="hidden", **kw)
                m_gt_pick.input(heatmap_only, [m_state, m_gt, m_thr, m_gt_pick], [m_heat], **kw)
                m_pos_pick.input(offsets_only, [m_state, m_gt, m_thr, m_pos_pick], [m_offsets, m_offsets_img],
                                 **kw)

        demo.load(priors_view, p_inputs, p_outputs, api_visibility="private").then(
            load_match_example, [m_photo], [m_state, m_gt, m_pending, m_upload], api_visibility="private").then(
            refresh_matching, refresh_in, refresh_out, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=int(os.environ.get("SSD_QUEUE_SIZE", "64")))
    return demo


def main():
    demo = build_demo()
    # server name/port: Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860).
    demo.launch(max_file_size=MAX_FILE_SIZE, ssr_mode=False, show_error=False, footer_links=["api", "gradio"])


if __name__ == "__main__":
    main()
