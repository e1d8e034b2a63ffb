"""Check every training image once before a long run starts, so that one corrupt file cannot kill it halfway.

Every image is decoded once (as training will decode it). Images that passed are remembered in a cache file
keyed by each image's fingerprint (path, size, modification time; for a pack, the pack file), so a second
start, or a resume, checks only what changed. A bad image either stops the start with the list of bad files,
or, when the user asks for it, is left out with a warning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .datasets import DatasetError

__all__ = ["SubsetSource", "check_images", "decodable_images"]


def check_images(source, cache: Path | None = None, progress: bool = True) -> list[tuple[int, str]]:
    """[(index, problem)] of the images of `source` that cannot be decoded; remembers the good ones in `cache`."""
    known = set()
    if cache is not None and cache.exists():
        try:
            known = set(json.loads(cache.read_text())["good"])
        except (ValueError, KeyError, TypeError):
            known = set()  # a damaged cache only costs a full check
    keys = [source.fingerprint(i) for i in range(len(source))]
    todo = [i for i, k in enumerate(keys) if k not in known]
    bad = []
    if todo:
        from tqdm import tqdm

        for i in tqdm(todo, desc="checking images", unit="img", disable=not progress, mininterval=2.0):
            try:
                source.load(i)
            except Exception as e:  # whatever the decoder raises, it would have killed the run
                bad.append((i, str(e) if isinstance(e, DatasetError) else f"{source.ids[i]}: {type(e).__name__}: {e}"))
    if cache is not None and todo:
        failed = {i for i, _ in bad}
        good = sorted(known | {k for i, k in enumerate(keys) if i not in failed})
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"good": good}))
        os.replace(tmp, cache)
    return bad


def decodable_images(source, cache: Path | None, skip_bad: bool, verbose: bool = True):
    """(`source` less the images that cannot be decoded, how many those are), each image decoded once (`cache`:
    see `check_images`). A bad image stops the start with the list (DatasetError), or with `skip_bad` is left out
    with a warning (`verbose`: printed)."""
    bad = check_images(source, cache, progress=verbose)
    if not bad:
        return source, 0
    listing = "\n  ".join(problem for _, problem in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    if not skip_bad:
        raise DatasetError(f"{len(bad)} of {len(source)} training images cannot be decoded:\n  {listing}{more}\n"
                           "Fix or remove them, or pass --skip-bad-images to train without them")
    if verbose:
        print(f"[train] warning: leaving out {len(bad)} of {len(source)} training images that cannot be "
              f"decoded:\n  {listing}{more}")
    failed = {i for i, _ in bad}
    return SubsetSource(source, [i for i in range(len(source)) if i not in failed]), len(bad)


class SubsetSource:
    """A source without some of its images (the bad ones): the same API, re-indexed."""

    def __init__(self, source, keep: list[int]):
        self.source, self.keep = source, list(keep)
        self.classes = source.classes
        self.ids = [source.ids[i] for i in self.keep]

    def __len__(self) -> int:
        return len(self.keep)

    def load(self, i: int):
        return self.source.load(self.keep[i])

    def annotation(self, i: int):
        return self.source.annotation(self.keep[i])

    def fingerprint(self, i: int) -> str:
        return self.source.fingerprint(self.keep[i])
