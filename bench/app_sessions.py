"""Memory of the demo under many visitors: RSS of `python app.py` before and after N `/detect` calls, each from
a new gradio_client `Client()` (a new session, as the README's scripting example makes), with a 1024×1024 photo.

    python bench/app_sessions.py --calls 500          # the shipped weights; --weights for others

Prints the server's RSS at start, after warm-up, after the calls, and again after --settle-s seconds.
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

from tests.app_server import running_app  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--weights", default=str(ROOT / "ssd/weights/ssd300_lite0_voc07.safetensors"))
    p.add_argument("--settle-s", type=float, default=10.0)
    args = p.parse_args()
    from gradio_client import Client, handle_file

    tmp = Path(tempfile.mkdtemp())
    photo = tmp / "photo.jpg"
    # A real photo's statistics (scikit-image's astronaut), enlarged to 1024x1024.
    from skimage import data

    Image.fromarray(data.astronaut()).resize((1024, 1024)).save(photo, quality=90)
    with running_app(Path(args.weights), tmp / "app.log", pid_out=(pid := [])) as url:
        server = pid[0]
        start = rss_mb(server)
        for _ in range(5):
            Client(url, verbose=False).predict(handle_file(str(photo)), 0.3, 0.45, api_name="/detect")
        warm = rss_mb(server)
        t = time.perf_counter()
        for i in range(args.calls):
            Client(url, verbose=False).predict(handle_file(str(photo)), 0.3, 0.45, api_name="/detect")
            if (i + 1) % 100 == 0:
                print(f"  {i + 1} calls: RSS {rss_mb(server):.0f} MB", flush=True)
        seconds = time.perf_counter() - t
        after = rss_mb(server)
        time.sleep(args.settle_s)
        settled = rss_mb(server)
    print(f"RSS of the app server: start {start:.0f} MB, after 5 warm-up calls {warm:.0f} MB, after {args.calls} "
          f"new-session /detect calls {after:.0f} MB, {args.settle_s:.0f} s later {settled:.0f} MB")
    print(f"growth over the calls: {settled - warm:+.0f} MB ({(settled - warm) / args.calls * 1024:+.0f} KB per call);"
          f" {args.calls / seconds:.1f} calls/s")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
