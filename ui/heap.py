"""The server's heap on glibc (Linux). Every thread that allocates gets a malloc arena of its own (up to 8 per
core), and memory freed there mostly stays with the process: with Gradio's pool of worker threads each page
session left several MB of RSS behind that no object held. Two arenas, and handing free memory back to the
system every minute, keep RSS near what is in use. Elsewhere (macOS, Windows, musl) this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

M_ARENA_MAX = -8  # glibc's mallopt parameter


def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def keep_heap_small(arenas: int, trim_every_s: float = 60.0) -> bool:
    """At most `arenas` malloc arenas (0: glibc's default) for the threads started from now on, and a daemon
    thread that returns free heap to the system every `trim_every_s` seconds. True where glibc took it."""
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):  # set by the user: glibc already read it
        return False
    if arenas > 0:
        libc.mallopt(M_ARENA_MAX, arenas)

    def trim():
        while not stop.wait(trim_every_s):
            libc.malloc_trim(0)

    stop = threading.Event()
    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()
    return True
