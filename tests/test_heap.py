"""ui.heap: on glibc the server limits its malloc arenas and hands free heap back; a user's MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import platform
import threading

import pytest

from ui import heap


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_heap_is_trimmed_by_a_daemon_thread(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert heap.keep_heap_small(2, trim_every_s=3600)
    (trimmer,) = [t for t in threading.enumerate() if t.name == "malloc-trim"][-1:]
    assert trimmer.daemon


def test_a_users_malloc_arena_max_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not heap.keep_heap_small(2)
