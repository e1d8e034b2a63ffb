"""The process's heap on glibc (Linux), tuned two opposite ways; elsewhere (macOS, Windows, musl) this does
nothing.

- The app server (`keep_heap_small`): every thread that allocates gets a malloc arena of its own (up to 8 per
  core), and memory freed there mostly stays with the process: with Gradio's pool of worker threads each page
  session left several MB of RSS behind that no object held. Two arenas, and handing free memory back to the
  system every minute, keep RSS near what is in use.
- Training (`keep_freed_memory`): a step allocates and frees the same large activations every time. glibc
  gives blocks above its mmap threshold back to the system at once and maps them again at the next step, so
  every step page-faults through its activations afresh (tens of thousands of faults a step, each costly in a
  VM). Taking every block from the heap and never trimming it lets the next step reuse the same pages; RSS
  stays at the step's peak, which training reaches anyway."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
# keep_freed_memory's settings, and glibc's defaults they replace (bench/train_process.py toggles between them).
FREED_MEMORY_KEPT = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}


def glibc():
    """glibc's libc with mallopt and malloc_trim, or None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def keep_heap_small(arenas: int, trim_every_s: float = 60.0) -> bool:
    """At most `arenas` malloc arenas (0: glibc's default) for the threads started from now on, and a daemon
    thread that returns free heap to the system every `trim_every_s` seconds. True where glibc took it."""
    libc = glibc()
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


def keep_freed_memory() -> bool:
    """Freed memory stays in the process for reuse: no block is mmapped on its own and the heap is never trimmed.
    True where glibc took it (a user's MALLOC_MMAP_MAX_ or MALLOC_TRIM_THRESHOLD_ wins)."""
    libc = glibc()
    if libc is None or os.environ.get("MALLOC_MMAP_MAX_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    return all([bool(libc.mallopt(param, value)) for param, value in FREED_MEMORY_KEPT.items()])
