"""Training pack: a whole detection dataset, resized and re-encoded, in ONE file, for fast I/O.

    python -m train.pack --data-root .../VOCdevkit/VOC2007 --image-set trainval --out voc07_trainval.pack
    python -m train.pack --format coco --data-root .../train2017 --ann-file .../instances_train2017.json \\
        --out coco_train.pack

Each image is resized so that its longer side is `--max-side` pixels (never enlarged), with Lanczos
filtering, and re-encoded as baseline JPEG at `--quality`; its boxes are scaled by the same per-axis factors
(new_width / width, new_height / height), so they stay on the same pixels. SSD300 warps every training
crop to 300×300 anyway, so 300 loses little; the default quality 62 keeps PASCAL VOC07 trainval (4261
images) at 44.1 MiB (65: 46.5 MiB; 90 would double it), small enough to travel with the code to a remote
training machine whose transfers are bounded, and the augmentation's colour jitter dwarfs the difference.

File format (little-endian):

    bytes 0..7     magic b"SSDPACK1"
    bytes 8..15    uint64: byte offset of the index
    bytes 16..23   uint64: byte length of the index
    bytes 24..     the JPEG files, back to back
    index          UTF-8 JSON: {"format": "ssd-pack", "version": 1, "classes": [...], "source": {...},
                   "max_side": int, "quality": int, "images": [{"id", "offset", "length", "width",
                   "height", "orig_width", "orig_height", "boxes": [[x1, y1, x2, y2] in the pack's pixels],
                   "labels": [1..C], "difficult": [bool]}]}

Difficult objects are stored (flagged) when the source has them; `PackDataset(keep_difficult=False)` drops
them like `VOCDataset`. `PackDataset` reads the index once and each image with `os.pread` on a file
descriptor opened lazily in each process, so it works in forked DataLoader workers and never reads the whole
file. If the file is rebuilt after its index was read, reads raise DatasetError rather than return wrong
bytes. Building writes `<out>.tmp` and renames it, so a half-written pack is never mistaken for a pack.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from ssd.cli import error_exit, program

from .datasets import DatasetError, Sample, decode_image

__all__ = ["PackDataset", "build_pack", "main"]

MAGIC = b"SSDPACK1"
_HEADER = struct.Struct("<8sQQ")

# --------------------------------------------------------------------------------------------------- write
_worker_source = None


def _init_worker(source):
    global _worker_source
    _worker_source = source


def _encode(args):
    """Load image i of the worker's source, resize, JPEG-encode: (bytes, record without offset/length)."""
    i, max_side, quality = args
    src = _worker_source
    sample = src.load(i)
    boxes, labels, difficult = sample.boxes, sample.labels, sample.difficult
    h, w = sample.image.shape[:2]
    scale = min(1.0, max_side / max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    im = Image.fromarray(sample.image)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True)
    sx, sy = nw / w, nh / h
    scaled = (np.asarray(boxes, np.float64).reshape(-1, 4) * [sx, sy, sx, sy]).round(3)
    return buf.getvalue(), {
        "id": sample.image_id, "width": nw, "height": nh, "orig_width": w, "orig_height": h,
        "boxes": scaled.tolist(), "labels": np.asarray(labels).astype(int).tolist(),
        "difficult": np.asarray(difficult).astype(bool).tolist()}


def build_pack(source, out, max_side: int = 300, quality: int = 62, workers: int = 2, source_info=None,
               progress: bool = True) -> dict:
    """Write `source` (anything with len/load/classes) to the pack file `out`; `workers` processes encode.
    Returns a summary: images, boxes, bytes, seconds."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    t0 = time.perf_counter()
    jobs = [(i, max_side, quality) for i in range(len(source))]
    records = []
    with open(tmp, "wb") as f:
        f.write(_HEADER.pack(MAGIC, 0, 0))
        offset = _HEADER.size

        def consume(results):
            nonlocal offset
            for k, (blob, rec) in enumerate(results):
                f.write(blob)
                rec["offset"], rec["length"] = offset, len(blob)
                offset += len(blob)
                records.append(rec)
                if progress and (k + 1) % 500 == 0:
                    print(f"[pack] {k + 1}/{len(jobs)} images, {offset / 2**20:.1f} MiB", file=sys.stderr)

        if workers > 1:
            with get_context("fork" if "fork" in _mp_methods() else "spawn").Pool(
                    workers, initializer=_init_worker, initargs=(source,)) as pool:
                consume(pool.imap(_encode, jobs, chunksize=16))
        else:
            _init_worker(source)
            consume(map(_encode, jobs))
        index = {"format": "ssd-pack", "version": 1, "classes": list(source.classes),
                 "source": source_info or {"repr": repr(source)}, "max_side": max_side, "quality": quality,
                 "images": records}
        data = json.dumps(index, separators=(",", ":")).encode()
        f.write(data)
        f.seek(0)
        f.write(_HEADER.pack(MAGIC, offset, len(data)))
    os.replace(tmp, out)
    return {"images": len(records), "boxes": sum(len(r["boxes"]) for r in records), "bytes": out.stat().st_size,
            "seconds": time.perf_counter() - t0}


def _mp_methods():
    import multiprocessing

    return multiprocessing.get_all_start_methods()


# ---------------------------------------------------------------------------------------------------- read
def _identity(st) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class PackDataset:
    """A training pack, with the same API as `VOCDataset`: len, ids, classes, load(i), annotation(i).

    Boxes and sizes are those of the pack's (resized) images; `info` gives the pack's source description,
    max_side and quality. (The index also records each source image's size, orig_width/orig_height.)
    """

    def __init__(self, path, keep_difficult: bool = False):
        self.path = Path(path)
        self.keep_difficult = keep_difficult
        try:
            with open(self.path, "rb") as f:
                self._identity = _identity(os.fstat(f.fileno()))
                head = f.read(_HEADER.size)
                if len(head) < _HEADER.size or head[:8] != MAGIC:
                    raise DatasetError(f"{self.path}: not a training pack (no {MAGIC!r} header); "
                                       "build one with `python -m train.pack`")
                _, offset, length = _HEADER.unpack(head)
                f.seek(offset)
                data = f.read(length)
        except FileNotFoundError:
            raise DatasetError(f"{self.path}: pack file missing") from None
        if len(data) != length:
            raise DatasetError(f"{self.path}: truncated pack (index should be {length} bytes at offset {offset}, "
                               f"read {len(data)})")
        try:
            index = json.loads(data)
        except ValueError as e:
            raise DatasetError(f"{self.path}: corrupt pack index ({e})") from None
        self.classes = tuple(index["classes"])
        self.info = {k: index[k] for k in ("source", "max_side", "quality")}
        images = index["images"]
        self.ids = [r["id"] for r in images]
        self._where = [(r["offset"], r["length"]) for r in images]
        self._sizes = [(r["width"], r["height"]) for r in images]
        self._ann = []
        for r in images:
            boxes = np.array(r["boxes"], np.float32).reshape(-1, 4)
            labels = np.array(r["labels"], np.int64)
            difficult = np.array(r["difficult"], bool)
            if not keep_difficult:
                boxes, labels, difficult = boxes[~difficult], labels[~difficult], difficult[~difficult]
            self._ann.append((boxes, labels, difficult))
        self._fd, self._pid = None, None

    def describe(self) -> str:
        """What the pack holds, for the model card: 'VOC image set trainval, longer side at most 300 px, JPEG
        quality 62' (a COCO pack names its annotation file)."""
        src = self.info["source"] or {}
        what = (f"VOC image set {src['image_set']}" if src.get("format") == "voc" and src.get("image_set")
                else f"COCO {Path(src['ann_file']).name}" if src.get("format") == "coco" and src.get("ann_file")
                else "images")
        return f"{what}, longer side at most {self.info['max_side']} px, JPEG quality {self.info['quality']}"

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, i: int):
        """(boxes [M,4] float32 pixel xyxy in the pack's image, labels, difficult, width, height)."""
        boxes, labels, difficult = self._ann[i]
        return boxes.copy(), labels.copy(), difficult.copy(), *self._sizes[i]

    def read_bytes(self, i: int) -> bytes:
        """The stored JPEG file of image i."""
        if self._pid != os.getpid():  # first use in this process (e.g. a forked DataLoader worker)
            fd = os.open(self.path, os.O_RDONLY)
            if _identity(os.fstat(fd)) != self._identity:  # rebuilt since the index was read: offsets are stale
                os.close(fd)
                raise DatasetError(f"{self.path}: the pack file changed since it was opened; open it again")
            self._fd, self._pid = fd, os.getpid()
        offset, length = self._where[i]
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise DatasetError(f"{self.path}: truncated pack (image {self.ids[i]} at {offset}+{length})")
        return data

    def fingerprint(self, i: int) -> str:
        """Changes when the pack file does: the key of the image-check cache (train.checks)."""
        return f"{self.path.resolve()}|{'/'.join(map(str, self._identity))}|{i}"

    def load(self, i: int) -> Sample:
        boxes, labels, difficult, _, _ = self.annotation(i)
        image = decode_image(f"{self.path} (image {self.ids[i]})", data=self.read_bytes(i))
        return Sample(image, boxes, labels, difficult, self.ids[i])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"], state["_pid"] = None, None
        return state

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"PackDataset({str(self.path)!r}: {len(self)} images, {len(self.classes)} classes)"


# ----------------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program(f"python -m {__spec__.name}"), description=__doc__.split("\n\n")[0])
    # --data is training's spelling of the same folder.
    p.add_argument("--data-root", "--data", dest="data_root", required=True,
                   help="VOC: the VOC<year> folder; COCO: the image folder")
    p.add_argument("--image-set", default="trainval", help="VOC ImageSets/Main/<name>.txt (default trainval)")
    p.add_argument("--format", choices=("voc", "coco"), default="voc")
    p.add_argument("--ann-file", help="COCO instances JSON (with --format coco)")
    p.add_argument("--classes", default=None,
                   help="'voc' (the 20 VOC classes, VOC's default), 'auto' (from the annotations; COCO's default: "
                        "category-id order), or comma-separated names")
    p.add_argument("--out", required=True, help="the pack file to write")
    p.add_argument("--max-side", type=int, default=300, help="longer side after resizing (never enlarged)")
    p.add_argument("--quality", type=int, default=62, help="JPEG quality (default 62)")
    p.add_argument("--workers", type=int, default=2, help="encoding processes (default 2)")
    return p


def main(argv=None) -> dict:
    from ssd import VOC_CLASSES

    from .datasets import COCODataset, VOCDataset

    p = _parser()
    a = p.parse_args(argv)
    classes = a.classes or ("voc" if a.format == "voc" else "auto")
    classes = VOC_CLASSES if classes == "voc" else None if classes == "auto" else tuple(classes.split(","))
    if a.format == "voc":
        source = VOCDataset(a.data_root, a.image_set, classes=classes, keep_difficult=True)
        info = {"format": "voc", "root": str(Path(a.data_root).resolve()), "image_set": a.image_set}
    else:
        if not a.ann_file:
            p.error("--format coco needs --ann-file")
        source = COCODataset(a.data_root, a.ann_file, classes=classes)
        info = {"format": "coco", "image_dir": str(Path(a.data_root).resolve()),
                "ann_file": str(Path(a.ann_file).resolve())}
    summary = build_pack(source, a.out, a.max_side, a.quality, a.workers, info)
    print(f"[pack] wrote {a.out}: {summary['images']} images, {summary['boxes']} boxes, "
          f"{summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']:.1f} s")
    return summary


def cli(argv=None) -> int:
    """`python -m train.pack` and the `ssd-pack` command: exit status 0, or 2 with one `error:` line."""
    try:
        main(argv)
    except DatasetError as e:
        return error_exit(e)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
