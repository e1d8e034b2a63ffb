"""Driving the Detect tab's live view in a real browser, for bench/app_streams.py and the browser test."""


def start_live_view(page, url: str):
    """Open the page at `url`, start its webcam live view (Chromium's synthetic camera) and press record."""
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Detect").click()
    page.get_by_text("Live: detect on your webcam").click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#live-input button[aria-label='capture photo']").click()  # Gradio's record button
