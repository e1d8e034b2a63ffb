"""gpu/prepare.sh cuts the training pack into parts that each fit one device call beside the working tree, and
gpu/campaign.sh joins them and refuses a joined pack whose checksum differs (a part lost with its machine).
Run on a made-up repository: a large tracked file stands for the tree, random bytes for the pack; a stub stands
for Python, so nothing trains."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("git") is None,
                                reason="needs bash and git")


def _repo(tmp_path: Path, tree_mib: int, pack_mib: int) -> Path:
    repo = tmp_path / "repo"
    (repo / "gpu").mkdir(parents=True)
    for script in ("prepare.sh", "campaign.sh"):
        shutil.copy(ROOT / "gpu" / script, repo / "gpu" / script)
    (repo / ".gitignore").write_text("/.gpu/\n/runs/\n")
    (repo / "tracked.bin").write_bytes(os.urandom(tree_mib * MIB))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    (repo / "runs" / "gpu_pack").mkdir(parents=True)
    (repo / "runs" / "gpu_pack" / "voc07_tmm_384_q85.pack").write_bytes(os.urandom(pack_mib * MIB + 12345))
    (repo / "runs" / "init.safetensors").write_bytes(os.urandom(3 * MIB))
    stub = repo / "runs" / "python"  # stands for Python: the campaign's checks run, nothing trains
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return repo


def _prepare(repo: Path) -> str:
    out = subprocess.run(["bash", "gpu/prepare.sh"], cwd=repo, capture_output=True, text=True,
                         env={**os.environ, "INIT": "runs/init.safetensors", "PYTHON": "runs/python"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def _campaign(repo: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": str(repo / "runs" / "python"), "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", "gpu/campaign.sh"], cwd=repo, capture_output=True, text=True, env=env)


def test_the_pack_is_cut_into_calls_that_fit_and_joins_back(tmp_path):
    repo = _repo(tmp_path, tree_mib=40, pack_mib=50)
    said = _prepare(repo)
    parts = sorted((repo / ".gpu").glob("p*/pack.part"), key=lambda p: int(p.parent.name[1:]))
    assert len(parts) == 2 and "3 device calls" in said, said
    tree = (repo / "tracked.bin").stat().st_size
    for part in parts:  # each first part travels alone beside the tree
        assert tree + part.stat().st_size <= 64 * MIB
    last = repo / ".gpu" / "b"
    assert tree + sum(f.stat().st_size for f in last.iterdir()) <= 64 * MIB
    pack = (repo / "runs" / "gpu_pack" / "voc07_tmm_384_q85.pack").read_bytes()
    joined = b"".join(p.read_bytes() for p in parts) + (last / "pack.part").read_bytes()
    assert joined == pack
    assert (last / "pack.sha256").read_text().strip() == hashlib.sha256(pack).hexdigest()

    ran = _campaign(repo, tmp_path)
    assert ran.returncode == 0 and "checksum as prepared" in ran.stdout, ran.stdout + ran.stderr
    assert (repo / "runs" / "gpu_campaign" / "train.pack").read_bytes() == pack


def test_a_part_lost_between_calls_stops_the_campaign_before_training(tmp_path):
    repo = _repo(tmp_path, tree_mib=40, pack_mib=50)
    _prepare(repo)
    shutil.rmtree(repo / ".gpu" / "p2")  # the machine went back between the calls: it lost what they carried
    ran = _campaign(repo, tmp_path)
    assert ran.returncode == 1
    assert "checksum is not the one gpu/prepare.sh wrote" in ran.stdout
    assert "probe" not in ran.stdout


def test_one_call_carries_everything_when_it_fits(tmp_path):
    repo = _repo(tmp_path, tree_mib=1, pack_mib=5)
    said = _prepare(repo)
    assert "one device call" in said and not list((repo / ".gpu").glob("p*"))
    ran = _campaign(repo, tmp_path)
    assert ran.returncode == 0 and "checksum as prepared" in ran.stdout, ran.stdout + ran.stderr
