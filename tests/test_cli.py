"""The command line: `python -m ssd` (the library's: text and JSON) and detect.py / `ssd-detect` (the same,
plus annotated copies), run as a user would (subprocess), with weights exported from a small random model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ssd

ROOT = Path(__file__).resolve().parents[1]
CFG = ssd.SSD300_VOC.replace(width=0.125)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "w.safetensors"
    return ssd.export_weights(ssd.build_ssd(CFG), CFG, ssd.VOC_CLASSES, path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder with two images and a non-image file, and one image outside it."""
    root = tmp_path_factory.mktemp("images")
    folder = root / "folder"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (90, 30), dtype=np.uint8)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    Image.fromarray(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)).save(root / "c.png")
    return root


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ssd", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_json_for_files_and_directories(weights, images):
    r = run_cli(images / "folder", images / "c.png", "--weights", weights, "--score", "0.01", "--top-k", "5",
                "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    got = {Path(o["image"]).name: o for o in out}
    assert sorted(got) == ["a.png", "b.jpg", "c.png"]  # notes.txt is not an image
    sizes = {"a.png": (70, 40), "b.jpg": (30, 90), "c.png": (25, 25)}
    for name, o in got.items():
        W, H = sizes[name]
        assert (o["width"], o["height"]) == (W, H)
        assert 1 <= len(o["detections"]) <= 5
        for d in o["detections"]:
            assert set(d) == {"label", "score", "box", "class_id", "prior_index", "layer"}
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H
            assert d["score"] >= 0.01 and d["label"] == ssd.VOC_CLASSES[d["class_id"] - 1]


@pytest.mark.slow
def test_readable_lines_and_unreadable_file(weights, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    r = run_cli(images / "c.png", broken, tmp_path / "absent.png", "--weights", weights, "--score", "0.01",
                "--top-k", "3")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "broken.jpg" in r.stderr and "absent.png" in r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(str(images / "c.png")) for line in lines)
    assert any(name in lines[0] for name in ssd.VOC_CLASSES)


def test_missing_weights_is_a_clear_error(images, tmp_path, capsys):
    # In-process (each subprocess pays ~5 s of imports): main() must return non-zero, not raise.
    from ssd.cli import main

    assert main([str(images / "c.png"), "--weights", str(tmp_path / "nothing.safetensors")]) != 0
    err = capsys.readouterr().err
    assert "nothing.safetensors" in err and "not found" in err


def test_annotated_copies(weights, images, tmp_path, capsys):
    from detect import main

    out = tmp_path / "out"
    assert main([str(images / "folder"), "--weights", str(weights), "--score", "0.01", "--top-k", "3",
                 "--out", str(out), "--device", "cpu"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a.png", "b.jpg"]  # each in its input's format: a JPEG stays a JPEG
    assert Image.open(out / "a.png").size == (70, 40) and Image.open(out / "b.jpg").size == (30, 90)
    assert Image.open(out / "b.jpg").format == "JPEG"
    assert "annotated copy written" in capsys.readouterr().out


def test_an_out_folder_that_cannot_be_made_is_a_clear_error(weights, images, tmp_path, capsys):
    from detect import main

    a_file = tmp_path / "file.jpg"
    a_file.write_bytes(b"x")
    assert main([str(images / "c.png"), "--weights", str(weights), "--out", str(a_file / "sub")]) == 2
    err = capsys.readouterr().err
    assert "file.jpg" in err and "a file is in the way" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_librarys_cli_draws_nothing_and_imports_no_application_code(weights, images, tmp_path):
    # ssd/ never imports visualize/ or train/ (dependencies point downward): `python -m ssd` has no --out.
    code = ("import sys, runpy; sys.argv = ['ssd', '--help']\n"
            "try:\n    runpy.run_module('ssd', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('visualize', 'train', 'gradio')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert "--out" not in r.stdout
    r = run_cli(images / "c.png", "--weights", weights, "--out", tmp_path / "x")
    assert r.returncode == 2 and "unrecognized arguments: --out" in r.stderr


@pytest.mark.slow
def test_detect_py_runs_as_a_script(weights, images, tmp_path):
    r = subprocess.run([sys.executable, "detect.py", str(images / "c.png"), "--weights", str(weights), "--score",
                        "0.01", "--top-k", "2", "--out", str(tmp_path / "drawn")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "drawn" / "c.png").exists()
    assert "usage: detect.py" in subprocess.run([sys.executable, "detect.py", "--help"], cwd=ROOT,
                                                capture_output=True, text=True, timeout=120).stdout


@pytest.mark.slow
def test_an_onnx_file_detects_as_its_weights_do(weights, images, tmp_path):
    onnx_path = ssd.export_onnx(ssd.Detector.load(weights, device="cpu", backend="torch"), tmp_path / "w.onnx")
    common = [images / "c.png", "--score", "0.05", "--top-k", "5", "--json"]
    torch_run = run_cli(*common, "--weights", weights, "--device", "cpu")
    onnx_run = run_cli(*common, "--weights", onnx_path)
    assert torch_run.returncode == 0 and onnx_run.returncode == 0, onnx_run.stderr

    def found(r):
        return [(d["label"], d["prior_index"]) for d in json.loads(r.stdout)[0]["detections"]]

    assert found(onnx_run) == found(torch_run) and found(torch_run)
    refused = run_cli(*common, "--weights", onnx_path, "--backend", "torch")
    assert refused.returncode == 1 and "onnxruntime" in refused.stderr


@pytest.mark.slow
def test_the_default_backend_is_onnxruntime_once_the_export_is_cached_and_says_which(weights, images, tmp_path):
    """Without a cached export a one-shot command runs on PyTorch (no export to wait for) and says how to get
    the faster backend; `python -m ssd.export --cache` writes the export, and the same command then runs on
    onnxruntime, with the same detections. The JSON names the backend and the device."""
    import os

    env = {**os.environ, "SSD_CACHE_DIR": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "ssd", str(images / "c.png"), "--weights", str(weights), "--score", "0.01",
            "--top-k", "5", "--json", "--device", "cpu"]
    first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    (before,) = json.loads(first.stdout)
    assert (before["backend"], before["device"]) == ("torch", "cpu")
    assert "note:" in first.stderr and "python -m ssd.export --cache" in first.stderr
    cached = subprocess.run([sys.executable, "-m", "ssd.export", "--cache", "--weights", str(weights)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert cached.returncode == 0, cached.stderr
    assert list((tmp_path / "cache").rglob("*.onnx"))
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    (after,) = json.loads(second.stdout)
    assert after["backend"] == "onnxruntime" and "note:" not in second.stderr
    assert [d["label"] for d in after["detections"]] == [d["label"] for d in before["detections"]]
    for a, b in zip(after["detections"], before["detections"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_a_detector_says_what_runs_it(weights):
    detector = ssd.Detector.load(weights, device="cpu", backend="torch")
    assert repr(detector) == "Detector(SSD300_VOC, 20 classes, device cpu, backend torch)"
