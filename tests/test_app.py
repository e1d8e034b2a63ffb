"""The app end to end: `python app.py` in a subprocess, driven with gradio_client like an API user would."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.app_server import ROOT, export_random_weights, received_dir, running_app, settled

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return export_random_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def client(weights, tmp_path_factory):
    log = tmp_path_factory.mktemp("app") / "app.log"
    with running_app(weights, log, SSD_MAX_FILE_SIZE="1mb") as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good, odd and bad input files."""
    d = received_dir("images")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    photo.save(d / "photo.jpg")
    (d / "not_an_image.png").write_text("this is a text file with an image's name\n" * 20)
    (d / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    # A decompression bomb: a tiny PNG whose header claims 20000×20000 pixels.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    (d / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                 + chunk(b"IDAT", zlib.compress(b"\0" * 20001 * 8)) + chunk(b"IEND", b""))
    Image.fromarray(rng.integers(0, 65536, (100, 120), dtype=np.uint16)).save(d / "gray16.png")
    Image.new("CMYK", (120, 100), (0, 128, 255, 0)).save(d / "cmyk.jpg")
    photo.convert("P", palette=Image.ADAPTIVE).save(d / "palette.png")
    photo.convert("RGBA").save(d / "rgba.png")
    rotated = Image.new("RGB", (200, 100), (200, 30, 30))
    exif = rotated.getexif()
    exif[274] = 6  # orientation: rotate 90° clockwise to display
    rotated.save(d / "exif_rotated.jpg", exif=exif)
    (d / "too_big.jpg").write_bytes(rng.integers(0, 256, 1_500_000, dtype=np.uint8).tobytes())
    return d


def detect(client, path, score=0.01, nms=0.45, **kw):
    image, table, data, summary = client.predict(handle_file(str(path)), score, nms, api_name="/detect", **kw)
    return image, table, data, summary


def test_detect_returns_detections_as_data(client, files):
    image, table, data, summary = detect(client, files / "photo.jpg", 0.05)
    assert Image.open(image).size == (320, 240)
    assert data["image"] == {"width": 320, "height": 240}
    dets = data["detections"]
    assert dets and data["detections_after_nms"] == len(dets) <= data["candidates_before_nms"]
    for d in dets:
        assert d["label"] and 0.05 < d["score"] <= 1
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 320 and 0 <= y1 <= y2 <= 240
        assert d["layer"] in ("conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    assert len(table["data"]) == len(dets)
    assert "detections after NMS" in summary and "ms" in summary


def test_sliders_change_the_result(client, files):
    _, _, low, _ = detect(client, files / "photo.jpg", 0.01, 0.45)
    scores = [d["score"] for d in low["detections"]]
    median = float(np.median(scores))
    _, _, high, _ = detect(client, files / "photo.jpg", median, 0.45)
    assert 0 < high["detections_after_nms"] < low["detections_after_nms"]
    assert all(d["score"] > median for d in high["detections"])
    assert high["candidates_before_nms"] < low["candidates_before_nms"]
    # A looser NMS IoU suppresses less (below the top-k cap); the candidates before NMS do not depend on it.
    _, _, strict, _ = detect(client, files / "photo.jpg", median, 0.2)
    _, _, loose, _ = detect(client, files / "photo.jpg", median, 0.9)
    assert strict["detections_after_nms"] < loose["detections_after_nms"]
    assert strict["candidates_before_nms"] == loose["candidates_before_nms"]
    # Top-k and the class filter (optional API parameters).
    _, _, top5, _ = detect(client, files / "photo.jpg", 0.01, 0.45, top_k=5)
    assert top5["detections_after_nms"] == 5
    label = low["detections"][0]["label"]
    _, _, only, _ = detect(client, files / "photo.jpg", 0.01, 0.45, classes=[label])
    assert only["detections"] and {d["label"] for d in only["detections"]} == {label}


@pytest.mark.parametrize("name, message", [
    ("not_an_image.png", "is not an image"),
    ("empty.jpg", "is empty"),
    ("truncated.jpg", "truncated or corrupt"),
    ("truncated.png", "truncated or corrupt"),
    ("bomb.png", "megapixels"),
])
def test_bad_files_get_a_clear_message_and_the_server_keeps_serving(client, files, name, message):
    with pytest.raises(AppError, match=message) as err:
        detect(client, files / name)
    assert "Traceback" not in str(err.value)
    _, _, data, _ = detect(client, files / "photo.jpg")
    assert data["detections"]


@pytest.mark.parametrize("name, size", [
    ("gray16.png", (120, 100)), ("cmyk.jpg", (120, 100)), ("palette.png", (320, 240)), ("rgba.png", (320, 240)),
    ("exif_rotated.jpg", (100, 200)),  # stored 200×100, shown upright 100×200
])
def test_odd_images_are_handled(client, files, name, size):
    image, _, data, _ = detect(client, files / name)
    assert (data["image"]["width"], data["image"]["height"]) == size
    assert Image.open(image).size == size


def test_uploads_are_capped(client, files):
    with pytest.raises(Exception, match="(?i)size|large|413"):
        detect(client, files / "too_big.jpg")
    _, _, data, _ = detect(client, files / "photo.jpg")
    assert data["detections"]


# In process (no server): the page's parts, built around a model passed in.

@pytest.fixture(scope="module")
def model(weights):
    from ui.demo_models import DemoModel

    return settled(DemoModel.load(weights))


def click(x, y):
    import gradio as gr

    return gr.SelectData(None, {"index": [x, y], "value": None})


def test_without_weights_the_teaching_tabs_work_and_detect_explains(tmp_path):
    """As on a fresh checkout without demo weights."""
    import gradio as gr

    import app
    from ui import priors_tab
    from ui.demo_models import DemoModel
    from ui.detect_tab import DetectTab
    from ui.matching_tab import MatchingTab

    model = DemoModel.load(tmp_path / "missing.safetensors")
    assert model.detector is None and "No model loaded" in model.summary()
    app.build_demo(model)
    with pytest.raises(gr.Error, match="No model weights"):
        DetectTab(model).detect(str(tmp_path / "whatever.jpg"))
    picture, cell_rows, summary, caption = priors_tab.priors_view("SSD300", 0, 19, 19, ["1"], True, "cat")
    assert picture.width == 600 and summary[-1][-1] == 8732 and "8732" in caption
    matching = MatchingTab(model)
    state, rows, *_ = matching.load_example("motorcycle")
    out = matching.refresh(state, rows, 0.5, True, None, None)
    picture, message, table = out[0], out[1], out[2]
    assert picture is not None and table[-1][3] > 0
    assert "no model is loaded" in message


def test_a_card_that_does_not_fit_its_weights_is_refused_at_start(weights, tmp_path):
    import json
    import shutil

    from ui.demo_models import DemoModel

    copy = tmp_path / weights.name
    shutil.copy(weights, copy)
    card = json.loads(weights.with_suffix(".json").read_text())
    card["config"]["image_size"] = 512
    copy.with_suffix(".json").write_text(json.dumps(card))
    model = DemoModel.load(copy)
    assert model.detector is None and "does not fit its network" in model.summary()


def test_teaching_tabs_with_a_model(model):
    """Hard negatives, detections as ground truth, click-to-draw, cell picking."""
    from ui import priors_tab
    from ui.matching_tab import MatchingTab

    matching = MatchingTab(model)
    state, rows, *_ = matching.load_example("astronaut")
    assert rows == [["person", 20, 15, 380, 512]]
    out = matching.refresh(state, rows, 0.5, True, None, None)
    assert "Hard negatives" in out[1]
    positives = out[2][-1][3]
    assert f"**{3 * positives}**" in out[1]  # 3 negatives per positive
    # Two clicks on the picture add a box (in the photo's pixels: the astronaut is shown at 512 px).
    _, pending, message = matching.on_click(state, rows, "dog", None, click(100, 50))
    assert pending == (100, 50) and "opposite corner" in message
    new_rows, pending, _ = matching.on_click(state, rows, "dog", pending, click(40, 200))
    assert new_rows[-1] == ["dog", 40, 50, 100, 200] and pending is None
    assert matching.refresh(state, new_rows, 0.5, False, None, None)[2][-1][4] == 2  # two forced priors
    # A bad row is reported, not raised.
    bad = matching.refresh(state, rows + [["cup", 1, 2, 3, 4]], 0.5, False, None, None)
    assert "unknown class 'cup'" in bad[1]
    # The model's detections become ground truth.
    det_rows, message = matching.detections_as_gt(state, 0.05, 0.45)
    assert det_rows and all(r[0] in model.class_names for r in det_rows)
    # Default boxes: a click picks the cell under it; switching to SSD512 offers its 7 feature maps.
    assert priors_tab.on_priors_click("SSD300", 1, click(315, 150)) == (4, 9)
    layer, row, col = priors_tab.on_config("SSD512", 1)
    assert len(layer.choices) == 7 and row.maximum == 31
    # The 1x1 maps (conv11_2 of SSD300, conv12_2 of SSD512) have one cell: locked sliders, no crash.
    for config_name, last in (("SSD300", 5), ("SSD512", 6)):
        for row, col in (priors_tab.on_layer(config_name, last), priors_tab.on_config(config_name, last)[1:]):
            assert (row.value, col.value, row.interactive, col.interactive) == (0, 0, False, False)
    picture, cell_rows, summary, caption = priors_tab.priors_view("SSD512", 6, 0, 0, None, True, "coffee")
    assert summary[-1][-1] == 24564 and len(cell_rows) == 4


def test_picking_the_same_example_after_an_upload_reloads_it(model, files):
    import gradio as gr

    from ui.matching_tab import MatchingTab

    matching = MatchingTab(model)
    state, rows, _, photo = matching.load_upload(str(files / "photo.jpg"))
    assert rows == [] and state.name == "photo.jpg"
    assert isinstance(photo, gr.Dropdown) and photo.value is None  # so "motorcycle" is a change again
    assert matching.load_example(None) == (gr.skip(),) * 5
    assert matching.load_example("cat")[4]["value"] == "cat"  # drawn boxes start as the example's class


def test_bad_parameters_get_a_message_that_names_them(client, files):
    for kwargs, message in (({"score": -1}, "score_threshold must be a number in \\[0, 1\\], got -1"),
                            ({"score": "abc"}, "score_threshold .* got 'abc'"),
                            ({"nms": 1.5}, "nms_threshold .* got 1.5"),
                            ({"top_k": -3}, "top_k .* got -3"),
                            ({"top_k": 2.5}, "top_k must be a whole number"),
                            ({"classes": ["unicorn"]}, "Unknown classes \\['unicorn'\\]")):
        with pytest.raises(AppError, match=message):
            detect(client, files / "photo.jpg", **kwargs)
    # One class name as a plain string is that class, not its letters.
    _, _, low, _ = detect(client, files / "photo.jpg", 0.01)
    label = low["detections"][0]["label"]
    _, _, only, _ = detect(client, files / "photo.jpg", 0.01, classes=label)
    assert {d["label"] for d in only["detections"]} == {label}


def test_the_public_api_is_the_documented_endpoints_only(model):
    """What "Use via API" lists: the README's endpoints, none of the page's own events (a Markdown whose value is a
    function once added a `/summary_1`)."""
    import app

    demo = app.build_demo(model)
    public = sorted(f.api_name for f in demo.fns.values() if f.api_visibility == "public")
    assert public == ["augment", "detect", "journey", "learn", "loss", "nms"], public


def test_the_api_endpoint_keeps_no_session_state_and_the_page_keeps_a_small_one(model):
    import gradio as gr

    import app
    from ui.detect_tab import DetectTab
    from ui.settings import STATE_TTL_S

    demo = app.build_demo(model)
    (api,) = [d for d in demo.fns.values() if d.api_name == "detect"]
    assert not any(isinstance(block, gr.State) for block in api.outputs)
    # The states that hold pictures and network outputs (Detect, Matching, and Learn's photo and trained copy)
    # expire; the others are tiny.
    expiring = [b.time_to_live for b in demo.blocks.values() if isinstance(b, gr.State)
                and b.time_to_live != float("inf")]
    assert expiring == [STATE_TTL_S] * 4
    tab = DetectTab(model)
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    *_, state = tab.detect_with_state(photo, 0.01, 0.45, 200, [])
    size = len(state.jpeg) + sum(t.numel() * t.element_size() for t in (state.raw.boxes, state.raw.scores))
    assert size < 1_500_000, size  # noise is the worst case for JPEG; a photo is smaller still
    again = tab.drawn(state, tab.shown(state, 0.01, 0.45, 200))
    assert again[2]["detections_after_nms"] > 0 and again[0].size == (1024, 1024)
    # The Matching tab keeps its picture as JPEG too: the 800-pixel picture's raw pixels took 1.1 MB.
    from ui.matching_tab import MatchingTab
    from visualize.examples import example_names

    match_state = MatchingTab(model).load_example(example_names()[0])[0]
    assert len(match_state.jpeg) < 250_000, len(match_state.jpeg)
    assert match_state.display.height == match_state.display_height


def test_not_a_number_is_refused():
    import gradio as gr

    from ui.visitor_input import check_parameters

    names = ["cat", "dog"]
    with pytest.raises(gr.Error, match="nms_threshold .* got nan"):  # JSON cannot carry NaN; Python callers can
        check_parameters(0.5, float("nan"), 10, None, names, 200)
    assert check_parameters("0.3", 0.45, 7.0, "cat", names, 200) == (0.3, 0.45, 7, ["cat"])


def test_a_data_url_meets_the_upload_limit_and_leaves_no_file(monkeypatch, tmp_path):
    import base64
    import tempfile

    import gradio as gr

    from ui import visitor_input as inputs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert inputs.read_upload({"url": url}).size == (64, 48)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(inputs, "MAX_FILE_BYTES", 100)
    with pytest.raises(gr.Error, match="larger than this demo's upload limit"):
        inputs.read_upload({"url": url})


def test_every_network_run_shares_one_limit(model, monkeypatch):
    # Detect, hard negatives and detections-as-ground-truth all run the network; together they never exceed
    # SSD_CONCURRENCY forward passes at once.
    import threading
    import time

    from ui.detect_tab import DetectTab
    from ui.matching_tab import MatchingTab
    from ui.settings import CONCURRENCY

    running, peak, lock = [0], [0], threading.Lock()
    real = model.detector.predict

    def slow_predict(image):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return real(image)

    monkeypatch.setattr(model.detector, "predict", slow_predict)
    detect, matching = DetectTab(model), MatchingTab(model)
    photo = Image.new("RGB", (120, 90), (90, 60, 30))
    jobs = []
    for _ in range(3):
        state, rows, *_ = matching.load_example("astronaut")  # a fresh state each: no cached confidences
        jobs += [lambda: detect.detect(photo, 0.5), lambda s=state: matching.detections_as_gt(s, 0.5, 0.45),
                 lambda s=state, r=rows: matching.refresh(s, r, 0.5, True, None, None)]
    threads = [threading.Thread(target=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == CONCURRENCY


def test_detections_as_ground_truth_says_what_it_did_after_the_refresh(model):
    from ui.matching_tab import MatchingTab

    matching = MatchingTab(model)
    state, rows, *_ = matching.load_example("cat")
    _, note = matching.detections_as_gt(state, 1.0, 0.45)  # nothing scores above 1
    assert "nothing" in note and "Detect tab's score threshold" in note
    message = matching.refresh(state, rows, 0.5, False, None, None, None, note)[1]
    assert message.startswith(note)
    assert "1 ground-truth box at IoU" in message  # singular: the cat example has one box


def test_identical_answers_get_files_of_their_own(client, files):
    # Gradio names an output picture's cache file by its bytes and rewrites that file in place, so identical
    # answers at once could be served half-written. Each answer's picture is unique, so each has its own file.
    first, *_ = detect(client, files / "photo.jpg", 0.3)
    second, *_ = detect(client, files / "photo.jpg", 0.3)
    assert first != second
    a, b = Image.open(first), Image.open(second)
    assert a.size == b.size == (320, 240)
    assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2  # the same picture otherwise


def test_a_live_webcam_frame_gets_its_detections_and_keeps_nothing(model):
    import gradio as gr

    from ui.detect_tab import DetectTab
    from ui.settings import LIVE_SIDE

    tab = DetectTab(model)
    frame = np.random.default_rng(2).integers(0, 256, (720, 1280, 3), dtype=np.uint8)  # an HD webcam frame
    picture, summary = tab.live(frame, 0.01, 0.45, 5, [])
    assert max(picture.size) == LIVE_SIDE and picture.size[0] > picture.size[1]
    found, timing = summary.split(" · ")
    assert len(found.split(", ")) == 5 and "network" in timing  # "label 0.xx" for each of the top 5
    none, text = tab.live(frame, 1.0, 0.45, 5, [])
    assert "nothing above the score threshold" in text
    assert tab.live(None, 0.5, 0.45, 5, []) == (gr.skip(), gr.skip())


def call_raw(url: str, api: str, data: list) -> tuple[str, str]:
    """One call of a Gradio endpoint over plain HTTP, the JSON payload exactly as given (no client helper that
    uploads files first): (the event's kind, its data), e.g. ("error", message)."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{url.rstrip('/')}/gradio_api/call/{api}", json.dumps({"data": data}).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            event_id = json.loads(r.read())["event_id"]
    except urllib.error.HTTPError as e:  # refused at the door (ui.guard): the answer is the body's detail
        detail = json.loads(e.read())["detail"]
        return "error", detail if isinstance(detail, str) else " ".join(d["message"] for d in detail)
    with urllib.request.urlopen(f"{url.rstrip('/')}/gradio_api/call/{api}/{event_id}", timeout=60) as r:
        events = r.read().decode().strip().split("\n\n")
    kind, _, payload = events[-1].partition("\n")
    return kind.removeprefix("event: ").strip(), payload.removeprefix("data: ").strip()


def test_a_path_gradio_did_not_receive_is_never_read_and_every_such_path_gets_one_answer(client, files, tmp_path):
    """A payload can name any file on the server. An image outside Gradio's upload folder is not detected on, and
    a missing file, a folder, a non-image and an empty file outside it all get the same answer (no oracle)."""
    from ui.visitor_input import NOT_RECEIVED

    outside = tmp_path / "secret.png"
    Image.new("RGB", (64, 48), (10, 200, 10)).save(outside)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    received = files / "photo.jpg"  # inside the upload folder
    escape = f"{received.parent}/../../../../../../../etc/hostname"  # starts inside, climbs out
    answers, plain = set(), set()
    for path in (outside, ROOT / "docs" / "screenshots" / "detect.png", tmp_path / "missing.jpg", tmp_path,
                 tmp_path / "empty.jpg", tmp_path / "notes.txt", "/etc/hostname", escape, "relative.png"):
        for payload in ({"path": str(path)}, {"path": str(path), "orig_name": "x.png"}):
            kind, message = call_raw(client.src, "detect", [payload, 0.01, 0.45, 200, [], None])
            assert kind == "error", (path, payload, message)
            answers.add(message)
        # A bare string is refused at the door (ui.guard) like a path: one answer for all.
        kind, message = call_raw(client.src, "detect", [str(path), 0.01, 0.45, 200, [], None])
        assert kind == "error"
        plain.add(message)
    assert len(answers) == 1 and NOT_RECEIVED in answers.pop()
    assert len(plain) == 1
    # What Gradio did receive still works, by the same raw route.
    uploaded = client.predict(handle_file(str(received)), 0.01, 0.45, api_name="/detect")[2]
    assert uploaded["detections"] is not None


def test_every_tab_that_takes_a_file_refuses_paths_outside_the_upload_folder(model, tmp_path):
    import gradio as gr

    from ui import priors_tab
    from ui.detect_tab import DetectTab
    from ui.matching_tab import MatchingTab
    from ui.visitor_input import NOT_RECEIVED

    outside = tmp_path / "outside.png"
    Image.new("RGB", (64, 48)).save(outside)
    for handler in (lambda v: DetectTab(model).detect(v, 0.5), MatchingTab(model).load_upload,
                    priors_tab.load_upload):
        for value in (str(outside), {"path": str(outside)}, outside):
            with pytest.raises(gr.Error, match=NOT_RECEIVED.replace(".", "\\.")):
                handler(value)
    inside = received_dir() / "inside.png"
    Image.new("RGB", (64, 48)).save(inside)
    assert isinstance(priors_tab.load_upload(str(inside))[0], bytes)


def test_live_frames_meet_the_upload_limits(model, files, monkeypatch):
    """A frame of the live view is refused over SSD_MAX_MEGAPIXELS before it is decoded, as an upload is: the
    small PNG that declares 6000×6000 pixels, and (with the limit lowered) an HD frame."""
    import gradio as gr

    from ui import visitor_input as inputs
    from ui.detect_tab import DetectTab

    tab = DetectTab(model)
    with pytest.raises(gr.Error, match="megapixels"):
        tab.live({"path": str(files / "bomb.png")}, 0.5, 0.45, 5, [])
    frame = np.zeros((720, 1280, 3), np.uint8)
    assert "network" in tab.live(frame, 0.5, 0.45, 5, [])[1]
    monkeypatch.setattr(inputs, "MAX_PIXELS", 500_000)
    with pytest.raises(gr.Error, match="megapixels"):
        tab.live(frame, 0.5, 0.45, 5, [])


def test_webcam_streams_never_hold_the_slots_of_single_detections(model):
    """A stream keeps its event's slot for its whole time limit: streams have their own group and limit, and each
    frame takes the network only for its forward pass (DemoModels' semaphore)."""
    import app

    demo = app.build_demo(model)
    fns = list(demo.fns.values())
    (api,) = [f for f in fns if f.api_name == "detect"]
    (stream,) = [f for f in fns if getattr(f.fn, "__name__", "") == "live"]
    assert stream.concurrency_id != api.concurrency_id
    assert not stream.preprocess  # frames are read by read_upload, under the upload limits


def test_a_huge_classes_list_is_refused_with_a_short_message(client, files):
    many = ["person"] * 5000
    with pytest.raises(AppError, match="at most 20 class names, got 5000") as err:
        detect(client, files / "photo.jpg", classes=many)
    assert len(str(err.value)) < 300
    with pytest.raises(AppError, match="Unknown classes") as err:
        detect(client, files / "photo.jpg", classes=["x" * 10_000])
    assert len(str(err.value)) < 500


def test_ground_truth_tables_are_bounded_and_non_finite_boxes_are_refused(model):
    from ui.augment_tab import FROM_MATCHING, MIN_IOU, AugmentTab
    from ui.matching_tab import MatchingTab
    from ui.settings import MAX_GT_ROWS

    matching = MatchingTab(model)
    state, rows, *_ = matching.load_example("astronaut")
    huge = rows * 6000
    gt, problems = matching.ground_truth(state, huge)
    assert len(gt.labels) == MAX_GT_ROWS and f"only the first {MAX_GT_ROWS} rows" in problems[0]
    message = matching.refresh(state, huge, 0.5, False, None, None)[1]
    assert f"only the first {MAX_GT_ROWS} rows" in message
    gt, problems = matching.ground_truth(state, [["person", "nan", 10, 100, 100], ["person", 1, 2, "inf", 50]])
    assert gt.labels == [] and all("finite numbers" in p for p in problems) and len(problems) == 2
    # The Augmentation tab's "Matching photo" reads the same table under the same bound.
    notes = AugmentTab(model).steps(FROM_MATCHING, None, next(iter(MIN_IOU)), True, 2.0, 0, state, huge)[1]
    assert f"only the first {MAX_GT_ROWS} rows" in notes


def test_a_first_start_serves_on_pytorch_at_once_and_switches_to_onnxruntime(weights, tmp_path, monkeypatch):
    """With no cached export, `auto` does not make the first visitor wait for it: the model serves on PyTorch
    while a background thread exports, then on onnxruntime, with the same detections. A second start finds the
    export in the cache and starts on onnxruntime."""
    from ui.demo_models import DemoModel

    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path / "cache"))  # an empty cache, as on a new Space
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (200, 260, 3), dtype=np.uint8))
    model = DemoModel.load(weights, "auto")
    assert model.detector.backend_name == "torch" and model.switching is not None
    on_torch = model.predict(photo)
    model.switching.join(timeout=240)
    assert model.detector.backend_name == "onnxruntime" and "(onnxruntime)" in model.summary()
    on_ort = model.predict(photo)
    assert torch.allclose(on_torch.scores, on_ort.scores, atol=1e-4)
    again = DemoModel.load(weights, "auto")
    assert again.detector.backend_name == "onnxruntime" and again.switching is None


def test_the_server_keeps_a_bounded_number_of_sessions_and_a_bounded_upload_folder(monkeypatch):
    """app.main hands Gradio the session bound (ui.settings.SESSIONS; Gradio's own default keeps 10 000) and puts
    the upload-folder bound in front of every request."""
    import app
    from ui.guard import RequestGuard
    from ui.settings import SESSIONS
    from ui.upload_cache import UploadCacheLimit

    seen = {}

    class Page:
        def launch(self, **kwargs):
            seen.update(kwargs)

        def block_thread(self):
            pass

    monkeypatch.setattr(app, "build_demo", lambda: Page())
    app.main()
    assert seen["state_session_capacity"] == SESSIONS < 10_000
    # The guard in front; the upload-folder bound before the app (behind the page cache, which only answers GETs).
    order = [m.cls for m in seen["app_kwargs"]["middleware"]]
    assert order[0] is RequestGuard and UploadCacheLimit in order


def test_uploads_beyond_the_upload_folder_bound_remove_the_oldest_files(weights, tmp_path):
    """Through the real server: 8 uploads of 700 KB into a folder bounded at 2 MB."""
    import urllib.request
    import uuid

    folder = tmp_path / "gradio"
    with running_app(weights, tmp_path / "app.log", GRADIO_TEMP_DIR=str(folder), SSD_UPLOAD_CACHE="2mb") as url:
        before = {p for p in folder.rglob("*") if p.is_file()}  # the example photos Gradio copied in
        assert before
        rng = np.random.default_rng(0)
        for i in range(8):
            body, boundary = rng.integers(0, 256, 700_000, dtype=np.uint8).tobytes(), uuid.uuid4().hex
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"u{i}.bin\"\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n")
            data = head.encode() + body + f"\r\n--{boundary}--\r\n".encode()
            request = urllib.request.Request(f"{url}gradio_api/upload", data=data, method="POST",
                                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            with urllib.request.urlopen(request, timeout=30) as r:
                (last,) = json.loads(r.read())
        files = [p for p in folder.rglob("*") if p.is_file()]
        uploads = [p for p in files if p.name.startswith("u") and p.suffix == ".bin"]
        assert sum(p.stat().st_size for p in files if p not in before) <= 2 * 2 ** 20  # 5.6 MB without the bound
        assert 1 <= len(uploads) < 8 and Path(last).exists()  # the newest is kept, the oldest went
        assert before <= set(files)  # the example photos stay


def test_the_loss_and_augmentation_views_have_api_endpoints(client, files):
    out = client.predict(handle_file(str(files / "photo.jpg")), [["dog", 20, 30, 200, 220], ["cat", 150, 10, 310, 120]],
                         0.5, api_name="/loss")
    assert out["N"] > 0 and len(out["hard_negatives"]) == out["neg_pos_ratio"] * out["N"]
    assert out["L"] == pytest.approx((out["L_conf_sum"] + out["alpha"] * out["L_loc_sum"]) / out["N"])
    assert sum(r["loc"] for r in out["positives"]) == pytest.approx(out["L_loc_sum"], rel=1e-5)
    with pytest.raises(AppError, match="threshold must be a number"):
        client.predict(handle_file(str(files / "photo.jpg")), [], "high", api_name="/loss")
    gallery, message, table = client.predict("motorcycle", "SSD300", "0.3", False, 3, 7, api_name="/augment")
    assert len(gallery) == 6 and "seed 7" in message


def test_nms_step_by_step_reproduces_the_detections(client, files):
    """The /nms trace of a class keeps what /detect detects of it (the top-k cut aside)."""
    *_, data, _ = detect(client, files / "photo.jpg", 0.2, 0.45, top_k=200)
    label = data["detections"][0]["label"]
    out = client.predict(handle_file(str(files / "photo.jpg")), label, 0.2, 0.45, api_name="/nms")
    kept = [c["box"] for c in out["candidates"] if c["kept"]]
    detected = [d["box"] for d in data["detections"] if d["label"] == label]
    # Every detection of the class is a kept candidate (within a pixel: the two calls may run on the two
    # backends, PyTorch before the background export is ready, onnxruntime after).
    assert out["kept"] == len(kept) >= len(detected) > 0
    for box in detected:
        assert any(max(abs(a - b) for a, b in zip(box, k)) < 1.0 for k in kept), box
    if data["detections_after_nms"] < 200:  # nothing fell to the top-k cut over all classes
        assert len(detected) == len(kept)
    for c in out["candidates"]:
        assert c["kept"] or (out["candidates"][c["by"] - 1]["kept"] and c["iou"] > 0.45)
    with pytest.raises(AppError, match="Unknown classes"):
        client.predict(handle_file(str(files / "photo.jpg")), "unicorn", 0.2, 0.45, api_name="/nms")


def test_a_detections_journey_decodes_back_to_its_box(client, files):
    *_, data, _ = detect(client, files / "photo.jpg", 0.3, 0.45)
    first = data["detections"][0]
    j = client.predict(handle_file(str(files / "photo.jpg")), 1, 0.3, 0.45, api_name="/journey")
    assert j["default_box"]["index"] == first["prior_index"] and j["class"] == first["label"]
    w, h = data["image"]["width"], data["image"]["height"]
    decoded = [min(max(v, 0), 1) * s for v, s in zip(j["decoded_xyxy"], (w, h, w, h))]
    assert decoded == pytest.approx(first["box"], abs=1.0)  # within a pixel (PyTorch or onnxruntime, rounding)
    with pytest.raises(AppError, match="no detection #999"):
        client.predict(handle_file(str(files / "photo.jpg")), 999, 0.3, 0.45, api_name="/journey")


def test_a_png_whose_data_stops_early_is_refused_and_a_flat_one_is_not():
    """Pillow fills a PNG's missing rows silently: a 1 KB file that declares 3000×3000 pixels and holds 10 rows
    would decode to 27 MB. A genuinely flat picture of that size (which compresses as well) still passes."""
    import gradio as gr

    from ui.visitor_input import read_upload

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    d = received_dir("png")
    rows = b"".join(b"\0" + bytes(3000 * 3) for _ in range(10))
    header = struct.pack(">IIBBBBB", 3000, 3000, 8, 2, 0, 0, 0)
    (d / "short.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                                  + chunk(b"IEND", b""))
    with pytest.raises(gr.Error, match="its data stops early"):
        read_upload(str(d / "short.png"))
    Image.new("RGB", (3000, 3000), (250, 250, 250)).save(d / "flat.png")
    assert read_upload(str(d / "flat.png")).size == (3000, 3000)


def test_refused_requests_write_no_traceback_to_the_log(weights, files, tmp_path):
    """A refusal is an answer, not a fault: 3000 refused requests once wrote 6.4 MB of tracebacks."""
    log = tmp_path / "app.log"
    with running_app(weights, log, SSD_BACKEND="torch") as url:
        client = Client(url, verbose=False)
        for args in ((files / "not_an_image.png", 0.5), (files / "photo.jpg", 7)):
            with pytest.raises(AppError):
                client.predict(handle_file(str(args[0])), args[1], 0.45, api_name="/detect")
        detect(client, files / "photo.jpg", 0.5)  # and the server still serves
    assert "Traceback" not in log.read_text()
