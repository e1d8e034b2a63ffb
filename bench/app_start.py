"""How long `python app.py` takes until the page answers, with an empty export cache (--cold: a new Space, or
any restart there) or with the cache filled by a first start.

    python bench/app_start.py --cold            # the shipped weights; SSD_WEIGHTS=... for others

Two starts are measured in one run, each with its own empty cache when --cold: the default (`auto`: the page
serves on PyTorch at once and switches to onnxruntime when a background export is ready) and
SSD_BACKEND=onnxruntime, which exports before it serves (how every first start behaved before). For each: the
seconds until GET / answers 200, and, for the default, until the server's log says it serves on onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(backend: str, cache: str, wait_switch: bool, timeout: float = 300.0) -> dict:
    """Start the app with `backend` and the export cache `cache`; times from the process start (and, with
    `wait_switch`, until it serves on onnxruntime)."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "SSD_BACKEND": backend, "SSD_CACHE_DIR": cache, "PYTHONUNBUFFERED": "1"}
    log = Path(cache) / f"app-{backend}.log"
    times = {}
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            while time.perf_counter() - t0 < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
                if "page" not in times:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                            if r.status == 200:
                                times["page"] = time.perf_counter() - t0
                    except OSError:
                        pass
                if "now serving on onnxruntime" in log.read_text(errors="replace"):
                    times.setdefault("onnxruntime", time.perf_counter() - t0)
                if "page" in times and (not wait_switch or "onnxruntime" in times):
                    break
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cold", action="store_true", help="an empty export cache for each start")
    args = p.parse_args()
    warm_cache = tempfile.mkdtemp(prefix="ssd-bench-cache-")
    print(f"app start, {'empty' if args.cold else 'filled'} export cache, {os.cpu_count()} cores")
    print(f"{'SSD_BACKEND':<14} {'page answers':>13} {'on onnxruntime':>15}")
    for backend in ("auto", "onnxruntime"):
        cache = tempfile.mkdtemp(prefix="ssd-bench-cache-") if args.cold else warm_cache
        if not args.cold and not list(Path(cache).rglob("*.onnx")):
            start("onnxruntime", cache, False)  # fill the cache first
        t = start(backend, cache, wait_switch=args.cold and backend == "auto")
        on_ort = t.get("onnxruntime", t["page"] if backend == "onnxruntime" else float("nan"))
        print(f"{backend:<14} {t['page']:>11.1f} s {on_ort:>13.1f} s")


if __name__ == "__main__":
    main()
