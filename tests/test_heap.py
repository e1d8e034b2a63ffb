"""ssd.heap: on glibc the server limits its malloc arenas and hands free heap back, training keeps freed memory for
the next step; a user's MALLOC_* settings win."""

from __future__ import annotations

import platform
import threading

import pytest

from ssd import heap


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_heap_is_trimmed_by_a_daemon_thread(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert heap.keep_heap_small(2, trim_every_s=3600)
    (trimmer,) = [t for t in threading.enumerate() if t.name == "malloc-trim"][-1:]
    assert trimmer.daemon


def test_a_users_malloc_arena_max_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not heap.keep_heap_small(2)


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_training_keeps_freed_memory_for_the_next_step():
    """In a child process (the setting is process-wide): after keep_freed_memory a large block freed and taken
    again reuses its pages, where glibc's default maps it afresh and faults through it every time."""
    import subprocess
    import sys

    child = """
import sys, torch
from ssd import heap
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
def faults():
    return int(open("/proc/self/stat").read().split()[9])
for _ in range(2):  # 64 MB, far above glibc's mmap threshold; the heap settles after a second one
    x = torch.ones(64, 2**20 // 4); del x
before = faults()
for _ in range(6):
    x = torch.ones(64, 2**20 // 4); del x
print(faults() - before)
"""
    run = {mode: int(subprocess.run([sys.executable, "-c", child, mode], capture_output=True, text=True,
                                    check=True).stdout) for mode in ("keep", "default")}
    assert run["default"] > 6 * 16384 * 0.9  # six times 64 MB of 4 KB pages, faulted in again
    # Kept: at most one more block, when small objects allocated meanwhile sit above the freed one.
    assert run["keep"] <= 16384 * 1.1


def test_a_users_malloc_settings_are_left_alone_in_training(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    assert not heap.keep_freed_memory()
