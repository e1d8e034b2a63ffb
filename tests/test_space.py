"""The repository as a Hugging Face Space: the README's front matter configures it, and every binary file the
repository holds (the weights the app loads, the screenshots) is one that `.gitattributes` sends through LFS."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "the README must open with the Space's front matter"
    block = text[4:text.index("\n---\n", 4)]
    pairs = (line.split(":", 1) for line in block.splitlines() if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip().strip('"') for k, v in pairs}


def lfs_patterns() -> list[str]:
    lines = (ROOT / ".gitattributes").read_text().splitlines()
    return [ln.split()[0] for ln in lines if "filter=lfs" in ln and not ln.startswith("#")]


def test_the_front_matter_names_what_the_space_runs():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}" == "3.11"
    assert meta["license"] == "apache-2.0" and "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert 0 < len(meta["short_description"]) <= 60  # the Hub's limit
    assert meta["suggested_hardware"] == "cpu-basic"


def test_every_binary_file_goes_through_lfs():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    patterns = lfs_patterns()
    binaries = []
    for name in tracked.splitlines():
        path = ROOT / name
        if path.is_file() and b"\0" in path.read_bytes()[:8192]:
            binaries.append(name)
            assert any(fnmatch.fnmatch(Path(name).name, p) for p in patterns), f"{name} is binary but not in LFS"
    # The app loads the shipped weights: they are among them.
    weights = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ssd" / "weights").glob("*.safetensors"))
    assert weights and set(weights) <= set(binaries)
