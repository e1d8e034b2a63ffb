"""Start `python app.py` in a subprocess on a free port, with small random weights (no shipped weights needed): for
the benchmarks of the app and the tests that run it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import torch

import ssd

ROOT = Path(__file__).resolve().parents[1]


def export_random_weights(directory: Path, seed: int = 0, name: str = "random_ssd300", classes=ssd.VOC_CLASSES,
                          **card) -> Path:
    """A tiny SSD300 (BatchNorm, width 0.25) of `classes` with random weights (drawn from `seed`), in the shipped
    format, as `<name>.safetensors`; `card`: more model card fields."""
    torch.manual_seed(seed)
    cfg = ssd.SSD300_VOC.replace(batch_norm=True, width=0.25, num_classes=len(classes))
    path = Path(directory) / f"{name}.safetensors"
    return ssd.export_weights(ssd.build_ssd(cfg), cfg, classes, path, **{"note": "random weights (tests)", **card})


def received_dir(name: str = "upload") -> Path:
    """A new folder inside Gradio's upload folder (this test session's, tests/conftest.py): files written there
    are what the app accepts as received, as if Gradio had taken them in. Tests that call a tab's handlers
    in-process write their photos there."""
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))


def settled(model):
    """A DemoModel once its background export (if any) has switched it to onnxruntime: tests that patch its
    detector must patch the one that stays."""
    if model.switching is not None:
        model.switching.join(timeout=300)
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(weights: Path | None, log_path: Path, timeout: float = 180.0, pid_out: list | None = None, **env):
    """Yields the app's URL (and appends the server's process id to `pid_out`); stops the process (and only it)
    afterwards."""
    port = free_port()
    environment = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                   "GRADIO_ANALYTICS_ENABLED": "False", "SSD_WEIGHTS": str(weights) if weights else "", **env}
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=environment, stdout=log,
                                stderr=subprocess.STDOUT)
        if pid_out is not None:
            pid_out.append(proc.pid)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}:\n{Path(log_path).read_text()}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app.py did not serve {url} within {timeout:.0f} s:\n"
                                       f"{Path(log_path).read_text()}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
