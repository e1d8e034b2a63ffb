"""The Learn tab in a real browser (Debian's headless Chromium, driven by playwright), with the shipped weights: a
visitor draws the coffee photo's mug by hand (two clicks), a class the model never saw, presses Train, watches the
loss fall, and the trained copy detects the mug where the served model cannot; then the copy and the served model
on another photo, and Reset. With SSD_UPDATE_SCREENSHOTS=1 its screenshot replaces docs/screenshots/learn.png.

Skipped when /usr/bin/chromium or the shipped weights are missing — unless SSD_REQUIRE_BROWSER=1, where a missing
browser is a failure.
"""

from __future__ import annotations

import re

import pytest
from PIL import Image

from bench.app_server import ROOT, running_app
from tests.test_browser import SCREENSHOT_BYTES, browser, save_screenshot, wait_for_image, wait_for_text  # noqa: F401 (a fixture)
from visualize.learn import NEW_CLASS_EXAMPLES

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHIPPED = ROOT / "ssd" / "weights" / "ssd384_lite0_voc07.safetensors"
STEPS = 20


@pytest.fixture(scope="module")
def learn_url(tmp_path_factory):
    if not SHIPPED.exists():
        pytest.skip("needs the shipped weights (ssd/weights/ssd384_lite0_voc07.safetensors)")
    # PyTorch throughout: no background ONNX export takes the cores from the run.
    with running_app(SHIPPED, tmp_path_factory.mktemp("app") / "learn.log", SSD_VOC_ROOT="",
                     SSD_BACKEND="torch") as url:
        yield url


def click_at(page, elem_id: str, x: float, y: float):
    """A click on the picture of `elem_id` at pixel (x, y) of the picture, wherever its element shows it (Gradio
    fits it centred: object-fit scale-down, never larger than its pixels, or contain)."""
    img = page.locator(f"#{elem_id} img").first
    # A picture the page has just replaced has no natural size until it is decoded (a loaded machine shows it).
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle())
    box = img.bounding_box()
    width, height, fit = img.evaluate("i => [i.naturalWidth, i.naturalHeight, getComputedStyle(i).objectFit]")
    scale = min(box["width"] / width, box["height"] / height)
    if fit == "scale-down":
        scale = min(scale, 1.0)
    left = box["x"] + (box["width"] - width * scale) / 2
    top = box["y"] + (box["height"] - height * scale) / 2
    page.mouse.click(left + (x + 0.5) * scale, top + (y + 0.5) * scale)


def test_a_visitor_teaches_the_shipped_model_a_mug(browser, learn_url):  # noqa: F811
    import ssd

    served = ssd.Detector.load(SHIPPED, backend="torch", device="cpu")
    assert "mug" not in served.class_names
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(learn_url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Learn").click()
        wait_for_image(page, "learn-input")
        wait_for_text(page, "learn-message", "never seen by the model: mug")  # the coffee example's own rows

        # The mug drawn by hand: the table cleared, then two opposite corners clicked on the 600×400 photo.
        page.locator("#learn-clear").click()
        wait_for_text(page, "learn-message", "No ground truth yet")
        (x1, y1, x2, y2) = NEW_CLASS_EXAMPLES["coffee"][0][1]
        click_at(page, "learn-input", x1, y1)
        wait_for_text(page, "learn-message", "First corner at")  # kept (a cross on the picture) before the second
        click_at(page, "learn-input", x2, y2)
        wait_for_text(page, "learn-message", "never seen by the model: mug")
        row = page.locator("#learn-table").inner_text()
        numbers = [int(n) for n in re.findall(r"\d+", row.split("mug", 1)[1])[:4]]
        assert all(abs(a - b) <= 2 for a, b in zip(numbers, (x1, y1, x2, y2))), row

        slider = page.get_by_label("number input for Steps")
        slider.fill(str(STEPS))
        slider.press("Enter")
        page.locator("#learn-train").click()
        wait_for_text(page, "learn-status", "Augment")
        # The pictures arrive while it trains, every few steps, before the end.
        page.set_default_timeout(900_000)
        wait_for_text(page, "learn-status", f"/{STEPS} · loss")
        wait_for_image(page, "learn-probabilities")
        wait_for_text(page, "learn-status", "New class detected by the copy")
        status = page.locator("#learn-status").inner_text()
        assert f"Step {STEPS}/{STEPS}" in status, status
        last, first = (float(v) for v in re.search(r"loss ([\d.]+) .*?step 1: ([\d.]+)\)", status).groups())
        assert last < 0.7 * first, status
        found = re.search(r"detected by the copy: mug ([\d.]+)", status)
        assert found and float(found.group(1)) >= served.score_threshold, status
        assert "served model cannot name it" in status
        for elem_id in ("learn-boxes", "learn-curves", "learn-served", "learn-trained"):
            wait_for_image(page, elem_id)
        page.set_default_timeout(60_000)
        path = save_screenshot(page, "learn", until="learn-trained", since="learn-status")
        assert path.stat().st_size < SCREENSHOT_BYTES and Image.open(path).width == 1280

        # Another photo: the served model and the copy side by side.
        page.locator("#learn-other-photo input").click()
        page.get_by_role("option", name="cat").click()
        wait_for_text(page, "learn-other-message", "trained copy")
        wait_for_image(page, "learn-other-trained")

        # Reset goes back to the served model alone.
        page.locator("#learn-reset").click()
        wait_for_text(page, "learn-status", "The copy is gone")
        assert page.get_by_text("Traceback").count() == 0
        assert page.get_by_text("Error").count() == 0  # no event was refused (ui.guard) or failed
    finally:
        context.close()
