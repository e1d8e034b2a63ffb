"""The demo under simultaneous identical requests: N clients × M `/detect` calls with the same photo and
settings, all at once, against `python app.py`; prints how many failed. Meanwhile a prober asks the server for a
page's status (GET /gradio_api/info) and uploads the photo on its own (POST /gradio_api/upload) every half second,
and prints how long those took: whether the event loop still answers while the network runs.

    python bench/app_concurrency.py --clients 32 --calls 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.app_server import running_app  # noqa: E402
from ssd.detector import DEFAULT_WEIGHTS  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    args = p.parse_args()
    from gradio_client import Client, handle_file
    from skimage import data

    tmp = Path(tempfile.mkdtemp())
    photo = tmp / "photo.jpg"
    Image.fromarray(data.astronaut()).save(photo, quality=90)
    with running_app(Path(args.weights), tmp / "app.log", SSD_QUEUE_SIZE="256") as url:
        def visitor(_):
            client = Client(url, verbose=False)
            outcomes = []
            for _ in range(args.calls):
                try:
                    image, *_ = client.predict(handle_file(str(photo)), 0.3, 0.45, api_name="/detect")
                    Image.open(image).load()  # the picture arrived whole
                    outcomes.append("ok")
                except Exception as e:  # counted and named below
                    outcomes.append(type(e).__name__)
            return outcomes

        body = photo.read_bytes()
        probes, done = {"status": [], "upload": []}, threading.Event()

        def probe():
            while not done.wait(0.5):
                for kind in probes:
                    t0 = time.perf_counter()
                    try:
                        if kind == "status":
                            urllib.request.urlopen(f"{url}gradio_api/info", timeout=30).read()
                        else:
                            boundary = uuid.uuid4().hex
                            data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename="
                                    f"\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + body + \
                                f"\r\n--{boundary}--\r\n".encode()
                            urllib.request.urlopen(urllib.request.Request(
                                f"{url}gradio_api/upload", data=data, method="POST",
                                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
                                timeout=30).read()
                        probes[kind].append(time.perf_counter() - t0)
                    except OSError:
                        probes[kind].append(float("inf"))

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        t = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = Counter(o for outcomes in pool.map(visitor, range(args.clients)) for o in outcomes)
        seconds = time.perf_counter() - t
        done.set()
        prober.join()
        log = (tmp / "app.log").read_text()
    total = args.clients * args.calls
    print(f"{args.clients} clients x {args.calls} identical /detect calls at once: {results['ok']}/{total} ok, "
          f"failures {dict((k, v) for k, v in results.items() if k != 'ok') or 'none'}, {seconds:.0f} s")
    print(f"server log lines with 'Content-Length': {sum('Content-Length' in line for line in log.splitlines())}")
    for kind, times in probes.items():
        if times:
            print(f"while loaded, {kind} probe ({len(times)}): median {statistics.median(times):.2f} s, max "
                  f"{max(times):.2f} s, over 5 s: {sum(t > 5 for t in times)}")


if __name__ == "__main__":
    main()
