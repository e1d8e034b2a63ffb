"""A size bound on Gradio's upload folder. Gradio keeps every file it receives (and every picture the app sends
back) for an hour, without a size limit: a visitor who keeps uploading could fill the disk. `UploadCacheLimit`
sits in front of the server and, before each request that posts a body, removes the oldest files until what
visitors added (uploads, pictures sent back), what is being uploaded and the new body fit in SSD_UPLOAD_CACHE.
The files there before the first request (the example photos, which Gradio copies in at start-up) are neither
counted nor removed. Between two looks at the folder (at most one every RESCAN_S while under the bound) the bodies
admitted are added to the last look's total; the pictures the app sends back are counted at the next look."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import anyio

log = logging.getLogger("ssd.app")
RESCAN_S = 2.0


class UploadCache:
    """The files added under `folder` and the bytes still on their way there, kept under `max_bytes` together,
    and the files under `max_files` (each request may add one more before the next look)."""

    def __init__(self, folder: str | Path, max_bytes: int, max_files: int = 2000):
        self.folder, self.max_bytes, self.max_files = Path(folder), max_bytes, max_files
        self.incoming = 0  # bytes of request bodies admitted but not yet finished
        self._lock = threading.Lock()
        self._kept: set[str] | None = None  # the files present before the first request
        self._looked = -1.0  # time.monotonic() of the last look at the folder
        self._total = 0  # bytes visitors had added at that look
        self._added = 0  # bytes of the bodies admitted since (an upper bound of what they wrote)
        self._count = 0  # files visitors had added at that look
        self._requests = 0  # requests admitted since (each may have added a file)

    def _files(self) -> list[tuple[float, int, str]]:
        found = []
        for top, _, names in os.walk(self.folder):
            for name in names:
                path = os.path.join(top, name)
                try:
                    st = os.stat(path, follow_symlinks=False)
                except OSError:  # removed meanwhile
                    continue
                found.append((st.st_mtime, st.st_size, path))
        return found

    def admit(self, size: int) -> int:
        """Make room for a body of `size` bytes, count it as incoming, and return how many files were removed.

        The folder is walked at most once every RESCAN_S while the estimate (the last walk's total, plus every
        body admitted since) stays under the bound: walking it for each request, under the lock, made uploads
        wait seconds under load once it held thousands of files."""
        with self._lock:
            now = time.monotonic()
            estimate = self._total + self._added + self.incoming + size
            files_estimate = self._count + self._requests + 1
            if (self._kept is not None and now - self._looked < RESCAN_S and estimate <= self.max_bytes
                    and files_estimate < self.max_files):
                self._added += size
                self._requests += 1
                self.incoming += size
                return 0
            self._looked = now
            files = self._files()
            if self._kept is None:
                self._kept = {path for _, _, path in files}
            files = [f for f in files if f[2] not in self._kept]
            total = sum(file_size for _, file_size, _ in files)
            count, removed = len(files), 0
            for _, file_size, path in sorted(files):
                if total + self.incoming + size <= self.max_bytes and count < self.max_files:
                    break
                try:
                    os.remove(path)
                except OSError:
                    continue
                total -= file_size
                count -= 1
                removed += 1
                if os.path.dirname(path) != str(self.folder):
                    try:
                        os.rmdir(os.path.dirname(path))  # Gradio gives each upload a folder of its own
                    except OSError:  # not empty
                        pass
            self._total, self._added, self._count, self._requests = total, size, count, 1
            self.incoming += size
        if removed:
            log.info("upload cache: removed the %d oldest files to stay under %d MB", removed,
                     self.max_bytes // 2 ** 20)
        return removed

    def done(self, size: int):
        with self._lock:
            self.incoming -= size


class UploadCacheLimit:
    """ASGI middleware: every POST makes room in `cache` first, counting its declared length (a body without one
    is counted at `default_size`, Gradio's upload limit)."""

    def __init__(self, app, cache: UploadCache, default_size: int):
        self.app, self.cache, self.default_size = app, cache, default_size

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            size = max(0, int(headers.get(b"content-length", b"")))
        except ValueError:
            size = self.default_size
        size = min(size, self.default_size)
        await anyio.to_thread.run_sync(self.cache.admit, size)
        try:
            return await self.app(scope, receive, send)
        finally:
            self.cache.done(size)
