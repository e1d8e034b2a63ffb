"""Signals during training: SIGTERM (a scheduler, a container or a Space stopping the job, `kill`) stops a run as
Ctrl-C does, after the last completed step is saved; the DataLoader's workers leave SIGTERM to the main process."""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["Terminated", "ignore_sigterm", "terminate_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, a container or a Space stopping the job, `kill`) arrived during training."""


@contextmanager
def terminate_as_interrupt():
    """SIGTERM stops training the way Ctrl-C does: the last completed step is saved first. Only the main thread
    can take signals; elsewhere (training in a thread) SIGTERM keeps its own meaning."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def ignore_sigterm(worker_id: int = 0) -> None:
    """A DataLoader worker's start: SIGTERM is the main process's to act on. When it reaches the whole process
    group (`kill -- -PGID`, a service manager stopping the job), a worker it killed would make the main process's
    next call, the checkpoint's save included, fail with "DataLoader worker ... killed by signal". The main
    process stops the workers itself once it has saved; a worker whose main process is gone exits on its own."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
