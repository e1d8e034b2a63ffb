"""A real browser (Debian's headless Chromium, driven by playwright) uses the app: uploads a photo, sees the
annotated picture and the table, and visits every tab, taking a screenshot of each; and, in an app with two models,
switches between them. With SSD_UPDATE_SCREENSHOTS=1 the screenshots replace docs/screenshots/ (shown in the
README); otherwise they go to a temporary folder.

Skipped when /usr/bin/chromium is missing — unless SSD_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from bench.app_server import ROOT, export_random_weights, running_app
from bench.live_view import start_live_view

CHROMIUM = Path("/usr/bin/chromium")
# The committed README screenshots are rewritten only on request (SSD_UPDATE_SCREENSHOTS=1), so a test run
# (CI included) never dirties the checkout; otherwise they go to a temporary folder and are checked there.
UPDATE_SCREENSHOTS = os.environ.get("SSD_UPDATE_SCREENSHOTS") == "1"
SCREENSHOTS = ROOT / "docs" / "screenshots"
REQUIRED = os.environ.get("SSD_REQUIRE_BROWSER") == "1"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"SSD_REQUIRE_BROWSER=1 but {reason}. Install it: apt-get install -y chromium chromium-driver; "
                    "pip install playwright (never `playwright install`).")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            # A synthetic camera (a moving test pattern) for the live webcam view, allowed without a prompt.
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        try:
            yield b
        finally:
            b.close()


# Screenshots for the README look best with trained weights: SSD_WEIGHTS=… pytest tests/test_browser.py.
# Without them (CI, a fresh checkout) the test runs on small random weights.
GIVEN_WEIGHTS = Path(os.environ["SSD_WEIGHTS"]) if os.environ.get("SSD_WEIGHTS") else None
TRAINED = GIVEN_WEIGHTS is not None and GIVEN_WEIGHTS.exists()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return GIVEN_WEIGHTS if TRAINED else export_random_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def app_url(weights, tmp_path_factory):
    # SSD_VOC_ROOT="": the Model tab never draws VOC photos into a screenshot (they must not be committed).
    with running_app(weights, tmp_path_factory.mktemp("app") / "app.log", SSD_VOC_ROOT="") as url:
        yield url


@pytest.fixture(scope="module")
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url, wait_until="domcontentloaded")
    yield pg
    context.close()


SCREENSHOT_BYTES = 300_000  # each committed screenshot stays under this: the README and docs load them all


def save_screenshot(page, name: str, until: str, since: str | None = None) -> Path:
    """A small PNG: the page at 1280 px wide, down to the bottom of element `until` (from the top of element
    `since`, else of the page), reduced to 256 colours, or 128 where 256 would outgrow SCREENSHOT_BYTES."""
    edge = "(args) => { const r = document.getElementById(args[0]).getBoundingClientRect(); " \
           "return (args[1] ? r.top : r.bottom) + window.scrollY; }"
    bottom = page.evaluate(edge, [until, False])
    top = page.evaluate(edge, [since, True]) - 16 if since else 0
    png = page.screenshot(full_page=True)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.crop((0, max(0, int(top)), image.width, min(image.height, int(bottom) + 16)))
    if image.width > 1280:
        image = image.resize((1280, round(image.height * 1280 / image.width)), Image.LANCZOS)
    folder = SCREENSHOTS if UPDATE_SCREENSHOTS else Path(tempfile.gettempdir()) / "ssd-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    for colors in (256, 128):  # a tall page in 256 colours can outgrow the budget; 128 still reads well
        small = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
        small.save(path, optimize=True)
        if path.stat().st_size < SCREENSHOT_BYTES:
            break
    return path


BOX = r"\d+\.\d, \d+\.\d, \d+\.\d, \d+\.\d"  # a box in the tables: pixels to one decimal, as the API gives them


def wait_for_image(page, elem_id: str):
    page.locator(f"#{elem_id} img").first.wait_for(state="visible")
    page.wait_for_function(
        "(id) => { const i = document.querySelector(`#${id} img`); return i && i.complete && i.naturalWidth > 0; }",
        arg=elem_id)


def wait_for_text(page, elem_id: str, text: str):
    page.wait_for_function(
        "([id, t]) => (document.getElementById(id)?.innerText || '').includes(t)", arg=[elem_id, text])


def library_loss(weights, example: str) -> float:
    """L of eq. (1) for an example photo with its ground truth, computed by the library (visualize.loss) on the
    picture as the Matching tab keeps it."""
    import ssd
    from ui.matching_tab import MatchState
    from visualize.examples import example_annotations, example_image
    from visualize.loss import loss_terms
    from visualize.matching import match_ground_truth, parse_ground_truth

    detector = ssd.Detector.load(weights, backend="torch")
    state = MatchState.of(example_image(example), example)
    rows = [[label, *box] for label, box in example_annotations(example)]
    gt, _ = parse_ground_truth(rows, detector.class_names, state.width, state.height)
    m = match_ground_truth(detector.config, gt, detector.class_names)
    return loss_terms(detector.config, detector.predict(state.display), m, detector.class_names).total


def test_upload_detect_and_screenshot_every_tab(page, weights, tmp_path):
    import ssd
    from visualize.examples import example_image

    photo = tmp_path / "astronaut.jpg"
    example_image("astronaut").save(photo)

    # Detect: upload through the file input of the image widget; the annotated picture and the table appear.
    page.get_by_role("tab", name="Detect").click()
    page.locator("#detect-input input[type=file]").set_input_files(str(photo))
    wait_for_image(page, "detect-output")
    wait_for_text(page, "detect-summary", " after NMS")  # "1 detection after NMS" or "5 detections …"
    found = int(page.locator("#detect-summary").inner_text().split()[0])
    if found or not TRAINED:  # random weights always find something; a weak trained model may not
        wait_for_text(page, "detect-table", "cell (")  # the default-box column of the detections table
    # A slider moves: only the post-processing re-runs and the summary follows it. (Random weights score
    # everything; 0.9 keeps the screenshot readable. Given weights end at SSD_SCREENSHOT_SCORE, by default
    # the threshold their model card recommends, which is where the app's slider starts.)
    card = json.loads(GIVEN_WEIGHTS.with_suffix(".json").read_text()) if TRAINED else {}
    final = os.environ.get("SSD_SCREENSHOT_SCORE") or str(card.get("score_threshold", 0.5))
    for value in ("0.9", final) if TRAINED else ("0.9",):
        slider = page.get_by_label("number input for Score threshold")
        slider.fill(value)
        slider.press("Enter")
        wait_for_text(page, "detect-summary", f"above score {float(value):.2f}")
    wait_for_image(page, "detect-output")
    paths = [save_screenshot(page, "detect", until="detect-table")]
    # A detection's journey: click the table's first row; its decoded box is the row's box.
    shown = int(page.locator("#detect-summary").inner_text().split()[0])
    if shown:
        cells = page.locator("#detect-table .cell-wrap span.text")
        texts = cells.all_inner_texts()
        k = next(i for i, t in enumerate(texts) if re.fullmatch(BOX, t.strip()))
        first_box = texts[k].strip()  # the first row's box cell (Gradio draws the rows as divs)
        cells.nth(k).click()
        wait_for_text(page, "journey-text", "Default box d = #")
        assert f"box = ({first_box}) px" in page.locator("#journey-text").inner_text()
        wait_for_image(page, "journey-output")
        paths.append(save_screenshot(page, "journey", until="journey", since="journey"))
    # NMS step by step for the best detection's class: the kept candidates include every detection of it.
    page.get_by_text("NMS step by step, for one class").click()
    wait_for_text(page, "nms-summary", f"Of the {shown} detection")  # "1 detection", "5 detections"
    text = page.locator("#nms-summary").inner_text()
    kept = int(re.search(r"→ (\d+) kept", text).group(1))
    among = int(re.search(r"over all classes\), (\d+) (?:is|are) ", text).group(1))
    assert kept >= among >= (1 if shown else 0)
    wait_for_text(page, "nms-table", "kept")
    paths.append(save_screenshot(page, "nms", until="nms-table", since="nms"))
    # While it is open, the NMS view follows the sliders (one post-processing redraws it and the detections).
    last = page.locator("#detect-summary").inner_text()
    for value in ("0.95", final if TRAINED else "0.9"):
        slider = page.get_by_label("number input for Score threshold")
        slider.fill(value)
        slider.press("Enter")
        wait_for_text(page, "nms-summary", f"above score {float(value):.2f}")
        wait_for_text(page, "detect-summary", f"above score {float(value):.2f}")
    assert page.locator("#detect-summary").inner_text().split("·")[0] == last.split("·")[0]

    page.get_by_role("tab", name="Default boxes").click()
    wait_for_image(page, "priors-output")
    served = ssd.Detector.load(weights, backend="torch").config  # the tab opens on the served model's layout
    wait_for_text(page, "priors-summary", str(served.num_default_boxes))
    paths.append(save_screenshot(page, "default_boxes", until="priors-summary"))

    page.get_by_role("tab", name="Matching").click()
    wait_for_image(page, "match-output")
    wait_for_text(page, "match-message", "positives for")
    wait_for_image(page, "match-heatmap")
    paths.append(save_screenshot(page, "matching", until="match-heatmap"))

    # The MultiBox loss of the example's forward pass: the page's L is the library's, for the same photo (as the
    # tab keeps it), ground truth and weights.
    page.locator("#match-loss-button").click()
    wait_for_text(page, "match-loss", "L = (L_conf")
    shown = float(re.search(r"= (\d+\.\d+)\s*$", page.locator("#match-loss").inner_text().splitlines()[0]).group(1))
    assert shown == pytest.approx(library_loss(weights, "motorcycle"), rel=2e-3, abs=2e-4)
    wait_for_text(page, "match-loss-negatives", "background")
    paths.append(save_screenshot(page, "loss", until="match-loss-negatives", since="match-loss-button"))

    # Augmentation: drawn when the tab is shown; six steps, each with its matched default boxes.
    page.get_by_role("tab", name="Augmentation").click()
    wait_for_text(page, "augment-message", "Warped to")
    wait_for_text(page, "augment-table", "total")
    for i in range(6):
        wait_for_image(page, f"augment-step-{i}")
    paths.append(save_screenshot(page, "augmentation", until="augment-table"))
    # Model: the card; for weights with a training log and an evaluation report beside them (the shipped ones),
    # also the curves, the AP and PR charts and the table of the worst false positives.
    page.get_by_role("tab", name="Model").click()
    wait_for_text(page, "model-files", "Read beside")
    wait_for_text(page, "model-card", "SSD300")
    until = "model-card"
    if page.locator("#model-fp-table").count():
        for elem_id in ("model-curves", "model-ap", "model-pr"):
            wait_for_image(page, elem_id)
        wait_for_text(page, "model-fp-table", "kind of error")
        until = "model-fp-table"
    paths.append(save_screenshot(page, "model", until=until))

    # A file that is not an image: the page shows the app's message (no stack trace) and keeps working.
    page.get_by_role("tab", name="Detect").click()
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.locator("#detect-input input[type=file]").set_input_files(str(bad))
    wait_for_text(page, "detect-summary", "is not an image this demo can read")
    assert page.get_by_text("Traceback").count() == 0
    cat = tmp_path / "cat.jpg"
    example_image("cat").save(cat)
    page.locator("#detect-input input[type=file]").set_input_files(str(cat))
    wait_for_text(page, "detect-summary", "451×300 image")

    for path in paths:
        assert path.stat().st_size < SCREENSHOT_BYTES, f"{path} is {path.stat().st_size} bytes; keep screenshots small"
        assert Image.open(path).width == 1280


def test_live_webcam_view_streams_frames_through_the_detector(browser, app_url):
    """Chromium's synthetic camera streams into Detect's live view; the server's answers come back as pictures."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1,
                                  permissions=["camera"])
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        start_live_view(page, app_url)
        wait_for_image(page, "live-output")
        wait_for_text(page, "live-summary", "network")
        wait_for_text(page, "live-summary", "640×480 frames")  # the fake camera's frames, as the server saw them
        path = save_screenshot(page, "live", until="live-summary")
        assert path.stat().st_size < SCREENSHOT_BYTES
    finally:
        context.close()


def test_a_smaller_feature_map_and_an_upload_after_an_example_need_no_error(browser, app_url, weights, tmp_path):
    """Two defects a new user met: choosing a smaller feature map while a cell beyond its size was selected
    ("Value 7 is greater than maximum value 2"), and uploading one's own photo in Matching after an example
    ("Value: 0 is not in the list of choices: []", after which the picture could no longer be clicked)."""
    import ssd
    from visualize.examples import example_image
    from visualize.priors import feature_map_choices

    cfg = ssd.Detector.load(weights, backend="torch").config  # the tab names the served model's layers
    labels, names = feature_map_choices(cfg), cfg.source_layers
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(app_url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Default boxes").click()
        wait_for_text(page, "priors-caption", f"Cell (7, 9) of {names[1]}")  # 19×19
        for layer, cell in ((labels[4], f"Cell (1, 1) of {names[4]}"), (labels[0], f"of {names[0]}"),
                            (labels[5], f"Cell (0, 0) of {names[5]}")):  # 3×3, 38×38, 1×1
            page.locator("#priors-layer input").click()
            page.get_by_role("option", name=layer).click()
            wait_for_text(page, "priors-caption", cell)
        page.wait_for_timeout(1500)  # a refused value shows up as a toast a moment later
        assert page.get_by_text("greater than maximum").count() == 0
        assert page.get_by_text("Error").count() == 0

        page.get_by_role("tab", name="Matching").click()
        wait_for_text(page, "match-message", "positives for")  # the example's ground truth
        photo = tmp_path / "coffee.jpg"
        example_image("coffee").save(photo)
        page.locator("#match-upload input[type=file]").set_input_files(str(photo))
        wait_for_text(page, "match-message", "No ground truth yet")
        page.wait_for_timeout(1500)
        assert page.get_by_text("not in the list of choices").count() == 0
        assert page.get_by_text("Error").count() == 0
        box = page.locator("#match-output img").first.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
        wait_for_text(page, "match-message", "First corner at")  # the picture still takes clicks
    finally:
        context.close()


# Switching models: an app with two. The README's screenshot (SSD_UPDATE_SCREENSHOTS=1) shows the two shipped
# models (the app's default when SSD_WEIGHTS is unset); otherwise (CI) two small random-weight models, joined in
# SSD_WEIGHTS with os.pathsep, the second with its own note and score threshold.
SHIPPED_PAIR = [Path(ROOT / "ssd" / "weights" / f"{stem}.safetensors") for stem in ("ssd384_lite0_voc07",
                                                                                    "ssd300_bn_voc07")]


@pytest.fixture(scope="module")
def switch_app_url(tmp_path_factory):
    if UPDATE_SCREENSHOTS and all(p.exists() for p in SHIPPED_PAIR):
        weights = None  # the default: the shipped weights and every other carded file beside them
    else:
        d = tmp_path_factory.mktemp("two")
        weights = os.pathsep.join(str(w) for w in (
            export_random_weights(d, seed=0, name="random_a"),
            export_random_weights(d, seed=1, name="random_b", note="the second random model", score_threshold=0.2)))
    with running_app(weights, tmp_path_factory.mktemp("app") / "switch.log", SSD_VOC_ROOT="") as url:
        yield url


def test_switching_models_changes_detect_and_the_model_line(browser, switch_app_url, tmp_path):
    from visualize.examples import example_image

    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(switch_app_url, wait_until="domcontentloaded")
        choice = page.locator("#model-choice")
        choice.wait_for(state="visible")
        titles = [t.strip() for t in choice.locator("label").all_inner_texts() if t.strip()]
        assert len(titles) >= 2, titles
        first, second = titles[:2]
        assert choice.get_by_label(first).is_checked()

        photo = tmp_path / "cat.jpg"
        example_image("cat").save(photo)
        page.get_by_role("tab", name="Detect").click()
        page.locator("#detect-input input[type=file]").set_input_files(str(photo))
        wait_for_text(page, "detect-summary", f"model: {first}")
        line = page.locator("#model-summary").inner_text()
        slider = page.get_by_label("number input for Score threshold")
        score = slider.input_value()

        # The other model: the model line describes it, Detect re-runs on the same photo with its network, and
        # the score slider moves to its recommended threshold.
        choice.get_by_label(second).check()
        wait_for_text(page, "detect-summary", f"model: {second}")
        page.wait_for_function("(old) => document.getElementById('model-summary').innerText !== old", arg=line)
        page.wait_for_function("(old) => document.querySelector('input[aria-label=\"number input for Score "
                               "threshold\"]').value !== old", arg=score)
        assert first not in page.locator("#detect-summary").inner_text()
        recommended = slider.input_value()
        wait_for_text(page, "detect-summary", f"above score {float(recommended):.2f}")
        # A slider moved afterwards post-processes the second model's outputs, and back for the screenshot.
        for value in ("0.9", recommended):
            slider.fill(value)
            slider.press("Enter")
            wait_for_text(page, "detect-summary", f"above score {float(value):.2f}")
            assert f"model: {second}" in page.locator("#detect-summary").inner_text()
        wait_for_image(page, "detect-output")
        path = save_screenshot(page, "switch", until="detect-table")
        assert path.stat().st_size < SCREENSHOT_BYTES and Image.open(path).width == 1280

        # The Model tab follows the choice: the second model's card is the one shown.
        page.get_by_role("tab", name="Model").click()
        card = page.locator("#model-card").locator("visible=true")
        card.first.wait_for()
        assert page.locator("#model-choice").get_by_label(second).is_checked()
        shown = card.first.inner_text()
        assert "ssd300_bn_voc07" in shown or "random_b" in shown, shown
    finally:
        context.close()


# Nothing stale on the page: what was computed for a photo, its ground truth or a model goes when they change.
def new_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="domcontentloaded")
    return context, page


def set_slider(page, label: str, value: str):
    box = page.get_by_label(f"number input for {label}")
    box.fill(value)
    box.press("Enter")


def wait_until_gone(page, elem_id: str, text: str):
    page.wait_for_function(
        "([id, t]) => !(document.getElementById(id)?.innerText || '').includes(t)", arg=[elem_id, text])


def click_first_detection(page) -> str:
    """Clicks the Detect table's first row (its box cell) and waits for its journey; returns the journey's text."""
    wait_for_text(page, "detect-table", "cell (")
    cells = page.locator("#detect-table .cell-wrap span.text")
    texts = cells.all_inner_texts()
    cells.nth(next(i for i, t in enumerate(texts) if re.fullmatch(BOX, t.strip()))).click()
    wait_for_text(page, "journey-text", "Default box d = #")
    return page.locator("#journey-text").inner_text()


def test_detect_keeps_no_journey_of_other_detections_and_a_bad_upload_leaves_one_message(browser, switch_app_url,
                                                                                          tmp_path):
    """A cat's journey said "#8619: conv9_2" after a switch to the other model and back; a file that is no image
    showed its message twice ("Error (2)") above the previous photo's summary and table."""
    from visualize.examples import example_image

    context, page = new_page(browser, switch_app_url)
    try:
        choice = page.locator("#model-choice")
        choice.wait_for(state="visible")
        first, second = [t.strip() for t in choice.locator("label").all_inner_texts() if t.strip()][:2]
        cat, bad = tmp_path / "cat.jpg", tmp_path / "notes.png"
        example_image("cat").save(cat)
        bad.write_text("not an image")
        page.get_by_role("tab", name="Detect").click()
        set_slider(page, "Top-k", "5")
        set_slider(page, "Score threshold", "0.05")  # random weights: five detections
        page.locator("#detect-input input[type=file]").set_input_files(str(cat))
        wait_for_text(page, "detect-summary", "above score 0.05")
        click_first_detection(page)
        for title in (second, first):  # the other model's detections, then the first's again: no journey yet
            choice.get_by_label(title).check()
            wait_for_text(page, "detect-summary", f"model: {title}")
            wait_for_text(page, "journey-text", "Click a detection in the table")
            assert page.locator("#journey-output img").count() == 0
        # A bad upload after a good one: its message once, in the summary, and nothing of the cat beneath it.
        set_slider(page, "Score threshold", "0.05")
        wait_for_text(page, "detect-summary", "above score 0.05")
        click_first_detection(page)
        page.locator("#detect-input input[type=file]").set_input_files(str(bad))
        wait_for_text(page, "detect-summary", "is not an image this demo can read")
        page.wait_for_timeout(3000)  # Gradio reports this upload twice: a second message would show by now
        assert page.get_by_text("is not an image this demo can read").count() == 1
        assert page.locator(".toast-body").count() == 0
        assert "451×300" not in page.locator("#detect-summary").inner_text()
        assert not re.search(BOX, page.locator("#detect-table").inner_text())
        assert "Default box d = #" not in page.locator("#journey-text").inner_text()
    finally:
        context.close()


def test_matching_keeps_no_old_loss_its_headers_stay_and_its_loss_tables_fit(browser, switch_app_url):
    """The astronaut said "9 positives" above the motorbike's loss (N = 24, horse and cow rows); the ground truth's
    headers could be renamed; the loss table's p(class) and CE columns were cut off."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context, page = new_page(browser, switch_app_url)
    try:
        choice = page.locator("#model-choice")
        choice.wait_for(state="visible")
        second = [t.strip() for t in choice.locator("label").all_inner_texts() if t.strip()][1]
        page.get_by_role("tab", name="Matching").click()
        wait_for_text(page, "match-message", "for 2 ground-truth boxes")  # the motorbike and the bicycle

        def loss():
            page.locator("#match-loss-button").click()
            wait_for_text(page, "match-loss", "L = (L_conf")
            wait_for_text(page, "match-loss-negatives", "background")

        def cleared():
            wait_until_gone(page, "match-loss", "L = (L_conf")
            wait_until_gone(page, "match-loss-positives", "cell (")
            wait_until_gone(page, "match-loss-negatives", "cell (")

        loss()
        # Every column of both loss tables in view, the last (CE) included, once the table has laid out its columns
        # (on a loaded machine the header is drawn before its final widths).
        fits = ("(id) => { const e = document.getElementById(id); const h = [...e.querySelectorAll('thead th')]; "
                "return h.length > 0 && h[h.length - 1].getBoundingClientRect().right "
                "<= e.getBoundingClientRect().right + 1; }")
        for table in ("match-loss-positives", "match-loss-negatives"):
            try:
                page.wait_for_function(fits, arg=table, timeout=20_000)
            except PlaywrightTimeout:
                pytest.fail(f"{table}: its last column is cut off")
        page.get_by_label("Example photo (with hand-made ground truth)").click()
        page.get_by_role("option", name="astronaut").click()
        wait_for_text(page, "match-message", "for 1 ground-truth box")
        cleared()
        loss()
        choice.get_by_label(second).check()
        cleared()
        # The ground truth's headers: a double click and typing rename nothing.
        header = page.locator("#match-gt thead th").nth(1)
        header.dblclick(force=True)
        page.keyboard.type("zz")
        page.keyboard.press("Enter")
        page.wait_for_timeout(500)
        headers = [t.strip() for t in page.locator("#match-gt thead th").all_inner_texts()]
        assert [h.replace("⋮", "").strip() for h in headers if h.strip()][:5] == ["class", "x1", "y1", "x2", "y2"]
    finally:
        context.close()


def test_a_typed_cell_the_zoom_out_slider_the_steps_and_the_live_heading_read_right(browser, switch_app_url):
    """Row 99 typed stayed 99 while the picture used the map's last row; the zoom-out slider looked active while
    "random" was ticked; the augmentation steps were a gallery; the Live heading floated far from its picture."""
    context, page = new_page(browser, switch_app_url)
    try:
        page.get_by_role("tab", name="Default boxes").click()
        wait_for_text(page, "priors-caption", "Cell (7, 9)")
        last = page.get_by_label("number input for Cell row i").get_attribute("max")  # the feature map's last row
        set_slider(page, "Cell row i", "99")
        wait_for_text(page, "priors-caption", f"Cell ({last}, 9)")
        page.wait_for_function("(v) => document.querySelector('input[aria-label=\"number input for Cell row i\"]')"
                               ".value === v", arg=last)

        page.get_by_role("tab", name="Augmentation").click()
        wait_for_text(page, "augment-table", "total")
        for i in range(6):
            wait_for_image(page, f"augment-step-{i}")
        corners = [page.locator(f"#augment-step-{i}").bounding_box() for i in range(6)]
        rows = [(round(c["y"] / 50), c["x"]) for c in corners]
        assert rows == sorted(rows), "the steps read in order, left to right and top to bottom"
        page.get_by_label("Zoom out at random, as in training (p = ½, ratio 1–4)").check()
        wait_for_text(page, "augment-expand", "random")
        assert page.locator("#augment-expand input[type=range]").is_disabled()

        page.get_by_role("tab", name="Detect").click()
        page.get_by_text("Live: detect on your webcam").click()
        output = page.locator("#live-output")
        output.wait_for(state="visible")
        title = page.locator(".prose.picture-title", has_text="Live detections").bounding_box()
        picture = output.bounding_box()
        assert 0 <= picture["y"] - (title["y"] + title["height"]) < 40, (title, picture)
        assert abs(picture["x"] - title["x"]) < 40, (title, picture)
    finally:
        context.close()
