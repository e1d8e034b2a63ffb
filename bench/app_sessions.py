"""Memory of the demo under many visitors: RSS of `python app.py` before, during and after N page sessions (a
headless Chromium opens the page and its Matching tab, waits for the picture, shows the hard negatives and
closes) and M `/detect` calls, each from a new gradio_client `Client()` (a new session, as the
README's scripting example makes) with a 1024×1024 photo.

    python bench/app_sessions.py --pages 200 --calls 1000       # the shipped weights; --weights for others
    python bench/app_sessions.py --pages 60 --env SSD_SESSIONS=10000 --env SSD_MALLOC_ARENAS=0   # Gradio's defaults

Page sessions need Debian's chromium (/usr/bin/chromium) and the playwright package. Prints the server's RSS
every 20 pages and 100 calls, and again after --settle-s seconds (the heap is handed back every minute).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.app_server import running_app  # noqa: E402
from ssd.detector import DEFAULT_WEIGHTS  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def page_sessions(url: str, n: int, report):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for i in range(n):
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Matching").click()
            page.locator("#match-output img").first.wait_for()
            page.get_by_label("hard negatives", exact=False).first.check()
            page.get_by_text("Hard negatives: the").first.wait_for()
            page.close()
            report("pages", i + 1)
        browser.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=0, help="page sessions in a headless Chromium")
    p.add_argument("--calls", type=int, default=500, help="new-session /detect calls")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--settle-s", type=float, default=70.0)
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the server")
    args = p.parse_args()
    from gradio_client import Client, handle_file

    tmp = Path(tempfile.mkdtemp())
    photo = tmp / "photo.jpg"
    # A real photo's statistics (scikit-image's astronaut), enlarged to 1024x1024.
    from skimage import data

    Image.fromarray(data.astronaut()).resize((1024, 1024)).save(photo, quality=90)
    env = dict(item.split("=", 1) for item in args.env)
    with running_app(Path(args.weights), tmp / "app.log", pid_out=(pid := []), **env) as url:
        server = pid[0]
        start = rss_mb(server)
        for _ in range(5):
            Client(url, verbose=False).predict(handle_file(str(photo)), 0.3, 0.45, api_name="/detect")
        page_sessions(url, 2, lambda *_: None)
        warm = rss_mb(server)
        print(f"RSS of the app server: start {start:.0f} MB, after warming up (5 calls, 2 pages) {warm:.0f} MB"
              + (f"; server env {env}" if env else ""), flush=True)

        def report(what, i):
            if i % (20 if what == "pages" else 100) == 0:
                print(f"  {i} {what}: RSS {rss_mb(server):.0f} MB ({rss_mb(server) - warm:+.0f})", flush=True)

        t = time.perf_counter()
        page_sessions(url, args.pages, report)
        pages_s, after_pages = time.perf_counter() - t, rss_mb(server)
        t = time.perf_counter()
        for i in range(args.calls):
            Client(url, verbose=False).predict(handle_file(str(photo)), 0.3, 0.45, api_name="/detect")
            report("calls", i + 1)
        calls_s = time.perf_counter() - t
        after = rss_mb(server)
        time.sleep(args.settle_s)
        settled = rss_mb(server)
    if args.pages:
        print(f"{args.pages} page sessions: {after_pages - warm:+.0f} MB ({pages_s / args.pages:.1f} s each)")
    if args.calls:
        print(f"{args.calls} new-session /detect calls: {after - after_pages:+.0f} MB ({args.calls / calls_s:.1f} "
              "calls/s)")
    print(f"growth from warm: {after - warm:+.0f} MB at the end, {settled - warm:+.0f} MB {args.settle_s:.0f} s later")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
