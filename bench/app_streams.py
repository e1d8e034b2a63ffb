"""Do live webcam streams starve single detections? Times `/detect` against `python app.py` with no stream, then
while K Chromium pages stream their synthetic camera into the Detect tab's live view, and prints the medians and
their ratio. Each stream runs for its whole time limit unless stopped, so a stream that held a network slot for
all of it would show here as a `/detect` that waits for the stream to end.

    python bench/app_streams.py --streams 2 --calls 8        (needs Debian's chromium and the playwright package)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.app_server import running_app  # noqa: E402
from bench.live_view import start_live_view  # noqa: E402
from ssd.detector import DEFAULT_WEIGHTS  # noqa: E402


def timed_detections(url: str, photo: Path, calls: int) -> tuple[list[float], list[float]]:
    """(each call's wall time, the network's time inside it, as the answer's data reports it), in seconds: the
    difference is waiting (for a network slot, the queue) and the rest of the round trip."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    seconds, network = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        _, _, data, _ = client.predict(handle_file(str(photo)), 0.3, 0.45, api_name="/detect")
        seconds.append(time.perf_counter() - t0)
        network.append(data["network_ms"] / 1000)
    return seconds, network


def start_stream(browser, url: str):
    """A page whose live view streams the fake camera; returns (context, page) once its first answer is shown."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["camera"])
    page = context.new_page()
    page.set_default_timeout(120_000)
    start_live_view(page, url)
    page.wait_for_function("() => (document.getElementById('live-summary')?.innerText || '').includes('network')")
    return context, page


def frames_answered(page) -> str:
    return page.locator("#live-summary").inner_text().strip().splitlines()[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--calls", type=int, default=8)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright
    from skimage import data

    tmp = Path(tempfile.mkdtemp())
    photo = tmp / "photo.jpg"
    Image.fromarray(data.astronaut()).save(photo, quality=90)
    with running_app(Path(args.weights), tmp / "app.log") as url, sync_playwright() as pw:
        timed_detections(url, photo, 2)  # warm: the first calls load and run the network once
        alone, alone_net = timed_detections(url, photo, args.calls)
        browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        streams = [start_stream(browser, url) for _ in range(args.streams)]
        t0 = time.perf_counter()
        beside, beside_net = timed_detections(url, photo, args.calls)
        elapsed = time.perf_counter() - t0
        live = [frames_answered(page) for _, page in streams]
        for context, _ in streams:
            context.close()
        browser.close()
    a, b = statistics.median(alone), statistics.median(beside)
    print(f"/detect alone:                 median {a:.2f} s (network {statistics.median(alone_net):.2f} s), "
          f"max {max(alone):.2f} s ({args.calls} calls)")
    print(f"/detect beside {args.streams} live streams: median {b:.2f} s (network {statistics.median(beside_net):.2f} "
          f"s), max {max(beside):.2f} s ({args.calls} calls in {elapsed:.0f} s)")
    print(f"ratio beside/alone (median): {b / a:.2f}; the network's own time: "
          f"{statistics.median(beside_net) / statistics.median(alone_net):.2f}")
    for i, text in enumerate(live):
        print(f"stream {i + 1} still answering at the end: {text[:90]}")


if __name__ == "__main__":
    main()
