"""What one visitor with a script costs everybody else, with the demo's door (ui.guard) and without it.

Starts `python app.py` twice (random weights: the network's cost is not the point), once with the guard's
limits as shipped and once with them raised out of the way ("open"), and measures in each:

1. a stalled request: `GET /gradio_api/info` alone, then while a `/loss` call with ROWS ground-truth rows
   (about 30 MB of JSON for 1 000 000) is posted;
2. `/detect` alone, then right after one client (one session, one address) joined the Live stream event 60 times,
   with how many of the joins were queued;
3. the first page view: 32 visitors at once each fetching `/` and `/config`, compressed (as browsers ask) on the
   guarded server and uncompressed on the open one.

    python bench/app_guard.py [--rows 1000000] [--joins 60] [--views 32]

Prints each figure for both servers and their ratio. No figure here is a test: tests/test_guard.py checks
the behaviour.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.app_server import export_random_weights, running_app  # noqa: E402

OPEN = {"SSD_MAX_REQUEST": "1gb", "SSD_MAX_VALUES": "100000000", "SSD_CLIENT_EVENTS": "100000"}


def fn_indices(client) -> dict:
    return {d.get("api_name"): d["id"] for d in client.get("/config").json()["dependencies"]}


def join(client, fn_index, data, session):
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session})
    return client.post("/gradio_api/queue/join", content=body, headers={"content-type": "application/json"})


def timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stalled_request(client, fns, rows: int) -> tuple[float, float, int]:
    """(info alone, info beside the large body, the large body's status)."""
    alone = timed(lambda: client.get("/gradio_api/info"))
    body = json.dumps({"data": [None, [[1, 2, 3, 4, "person"]] * rows, 0.5, None], "fn_index": fns["loss"],
                       "session_hash": "big"})
    status = {}
    sender = threading.Thread(target=lambda: status.update(code=client.post(
        "/gradio_api/queue/join", content=body, headers={"content-type": "application/json"}).status_code))
    sender.start()
    time.sleep(0.05)
    beside = []
    while sender.is_alive() and len(beside) < 50:
        t0 = time.perf_counter()
        client.get("/gradio_api/info")
        beside.append(time.perf_counter() - t0)
    sender.join()
    return alone, max(beside or [0.0]), status.get("code", 0)


def detect_beside_joins(client, fns, photo_path: Path, joins: int) -> tuple[float, float, int]:
    """(/detect alone, /detect after `joins` Live joins from one client, how many joins were queued)."""
    with open(photo_path, "rb") as f:
        path = client.post("/gradio_api/upload", files={"files": ("p.jpg", f, "image/jpeg")}).json()[0]
    photo = {"path": path, "meta": {"_type": "gradio.FileData"}}

    def detect():
        session = uuid.uuid4().hex
        r = join(client, fns["detect"], [photo, 0.5, 0.45, 100, [], None], session)
        if r.status_code != 200:
            return r.status_code
        with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if '"process_completed"' in line:
                    return 200
        return 0

    alone = timed(detect, 3)
    queued = []
    for _ in range(joins):
        r = join(client, fns["live"], [photo, 0.5, 0.45, 100, [], None], "hog")
        if r.status_code == 200:
            queued.append(r.json()["event_id"])
    t0 = time.perf_counter()
    status = detect()
    beside = time.perf_counter() - t0 if status == 200 else float("inf")
    for event_id in queued:
        client.post("/gradio_api/cancel", json={"session_hash": "hog", "fn_index": fns["live"], "event_id": event_id})
    return alone, beside, len(queued)


def first_views(url: str, views: int, encoding: str) -> tuple[float, int]:
    """(seconds until every visitor had the page and its settings, bytes each received)."""
    sizes, done = [], []

    def visit():
        with httpx.Client(base_url=url, timeout=300, headers={"accept-encoding": encoding}) as c:
            n = 0
            for path in ("/", "/config"):
                r = c.get(path)
                n += int(r.headers.get("content-length") or len(r.content))
            sizes.append(n)
            done.append(time.perf_counter())

    t0 = time.perf_counter()
    threads = [threading.Thread(target=visit) for _ in range(views)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(done) - t0, int(statistics.median(sizes))


def measure(weights, env, args, photo, encoding) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with running_app(weights, Path(tmp) / "app.log", SSD_BACKEND="torch", **env) as url:
            with httpx.Client(base_url=url, timeout=300) as client:
                fns = fn_indices(client)
                return {"stall": stalled_request(client, fns, args.rows),
                        "detect": detect_beside_joins(client, fns, photo, args.joins),
                        "views": first_views(url, args.views, encoding)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--joins", type=int, default=60)
    p.add_argument("--views", type=int, default=32)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = export_random_weights(Path(tmp))
        photo = Path(tmp) / "photo.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(photo)
        guarded = measure(weights, {}, args, photo, "gzip")
        opened = measure(weights, OPEN, args, photo, "identity")  # as the page was served before compression
    for name, r in (("guarded", guarded), ("open", opened)):
        alone, beside, code = r["stall"]
        print(f"{name:8s} /info alone {alone * 1000:7.1f} ms, beside a {args.rows}-row body (answered {code}): "
              f"{beside * 1000:7.1f} ms")
        alone, beside, queued = r["detect"]
        print(f"{name:8s} /detect alone {alone:.2f} s, after {args.joins} Live joins of one client ({queued} "
              f"queued): {beside:.2f} s")
        seconds, size = r["views"]
        print(f"{name:8s} {args.views} first page views at once: {seconds:.2f} s, {size / 1024:.0f} KB each")
    print(f"ratio guarded/open: stalled /info {guarded['stall'][1] / max(opened['stall'][1], 1e-9):.2f}, "
          f"32 page views {guarded['views'][0] / opened['views'][0]:.2f}")


if __name__ == "__main__":
    main()
