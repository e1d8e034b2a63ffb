"""Peak memory of the demo app per model and backend: `python app.py` started for each, one /detect call of a
1024x1024 photo through gradio_client, then the server's peak RSS (VmHWM: start-up, the ONNX export where
there is one, and the call) and its RSS after the call.

    python bench/app_memory.py        # the shipped weights and the paper's SSD300-VGG16 (random weights)

The ONNX exports go to a fresh cache first (one app start each), so that the peak measured is that of a start
that finds its export cached, as every start after the first does; `--cold` measures the exporting start too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.app_server import running_app  # noqa: E402


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def measure(weights: Path, backend: str, photo: Path, log: Path) -> dict[str, float]:
    from gradio_client import Client, handle_file

    with running_app(weights, log, pid_out=(pid := []), SSD_BACKEND=backend) as url:
        Client(url, verbose=False).predict(handle_file(str(photo)), 0.3, 0.45, api_name="/detect")
        return memory_mb(pid[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cold", action="store_true", help="also the peak of a start that exports (empty cache)")
    args = p.parse_args()
    import torch
    from skimage import data

    import ssd
    from ssd.weights_files import card_beside

    tmp = Path(tempfile.mkdtemp())
    photo = tmp / "photo.jpg"
    Image.fromarray(data.astronaut()).resize((1024, 1024)).save(photo, quality=90)
    torch.manual_seed(0)
    vgg = ssd.export_weights(ssd.build_ssd(ssd.SSD300_VOC), ssd.SSD300_VOC, ssd.VOC_CLASSES, tmp / "vgg16.safetensors")
    shipped = ssd.detector.DEFAULT_WEIGHTS
    card = card_beside(shipped)
    models = {f"{card.config['name']} (shipped)": shipped, "SSD300-VGG16 (random)": vgg}
    os.environ["SSD_CACHE_DIR"] = str(tmp / "cache")  # the apps inherit it
    print(f"{'model':30s}{'backend':14s}{'start':>8s}{'peak RSS MB':>13s}{'RSS after':>11s}")
    for name, weights in models.items():
        for backend in ("torch", "onnxruntime"):
            starts = ["cold", "warm"] if backend == "onnxruntime" else ["-"]
            for start in starts:
                m = measure(weights, backend, photo, tmp / f"{backend}.log")
                if start != "cold" or args.cold:
                    print(f"{name:30s}{backend:14s}{start:>8s}{m['VmHWM']:13.0f}{m['VmRSS']:11.0f}", flush=True)


if __name__ == "__main__":
    main()
