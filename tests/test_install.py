"""`pip install .` works: a wheel with the library `ssd` and the checkout's train/ and visualize/ under names no
other project claims (`ssd_train`, `ssd_visualize`), the shipped weights and the console commands, importable
from outside the repository. Built offline (no build isolation) from a copy of the
project's files, so the checkout stays clean."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    src = tmp / "src"
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")], cwd=src,
                   check=True)
    (wheel,) = (tmp / "dist").glob("*.whl")
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)], check=True)
    return wheel, site


COMMANDS = ("ssd-detect", "ssd-train", "ssd-evaluate", "ssd-average", "ssd-pack", "ssd-plot")


def test_the_wheel_holds_the_three_packages_the_weights_and_the_commands(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("ssd/detector.py", "ssd/evaluation/voc.py", "ssd/efficientnet_lite.py", "ssd_train/engine.py",
                   "ssd_visualize/draw.py", "ssd_visualize/detect.py"):
        assert module in names
    # No generic top-level names beside other projects' packages.
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"ssd", "ssd_train", "ssd_visualize"}, tops
    assert any(n.startswith("ssd/weights/") and n.endswith(".safetensors") for n in names)
    # The demo weights' training log and evaluation report travel with them (the Model tab reads them).
    assert {"ssd/weights/ssd384_lite0_voc07.log.csv", "ssd/weights/ssd384_lite0_voc07.eval.json"} <= set(names)
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command in COMMANDS:
        assert f"{command} = " in text


def test_the_installed_library_and_commands_work_outside_the_repository(installed, tmp_path):
    _, site = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import ssd, ssd_train.engine, ssd_visualize.draw; print(ssd.__file__); "
            "print(ssd.Detector.load().config.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    where, name = out.stdout.split()
    assert Path(where).is_relative_to(site) and name == "SSD384_LITE0_VOC"
    for command in COMMANDS:
        r = subprocess.run([str(site / "bin" / command), "--help"], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: {command} "), (command, r.stdout[:80], r.stderr)
    r = subprocess.run([sys.executable, "-m", "ssd_train.evaluate", "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m ssd_train.evaluate "), r.stderr
