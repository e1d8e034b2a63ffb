"""INT8 calibration images: what the float32 graph runs on so that onnxruntime measures each tensor's range.

`count` (300) training photos of a VOC folder when one is named (`--calibration DIR`, or the environment's
SSD_CALIBRATION_DATA: its trainval_minus_minival ids, else trainval, else train; or any folder of images), taken
evenly through the sorted ids; without one (a hosted demo, the tests), the photos scikit-image ships, each whole,
mirrored and cropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..image import network_input, to_rgb

CALIBRATION_COUNT = 300
CALIBRATION_ENV = "SSD_CALIBRATION_DATA"
VOC_IMAGE_SETS = ("trainval_minus_minival", "trainval", "train")
SCIKIT_IMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "camera")


@dataclass(frozen=True)
class Calibration:
    """The images the float32 graph runs on to measure each tensor's range: uint8 (n, S, S, 3), network input."""

    images: np.ndarray
    source: str  # in words, e.g. "VOC2007 trainval_minus_minival: 300 of 3761 images, every 12th id"
    names: tuple[str, ...]  # which images (file names or photo names with their view)
    origin: str  # the folder they came from (resolved), or "scikit-image"


def _views(image) -> list[tuple[str, object]]:
    """A photo whole, mirrored and cut five ways (four corners and the centre, 60 % of each side), mirrored too: a
    handful of photos give the ranges of objects at several sizes."""
    from PIL import ImageOps

    w, h = image.size
    cw, ch = int(0.6 * w), int(0.6 * h)
    crops = {"top-left": (0, 0), "top-right": (w - cw, 0), "bottom-left": (0, h - ch),
             "bottom-right": (w - cw, h - ch), "centre": ((w - cw) // 2, (h - ch) // 2)}
    views = [("whole", image), ("mirrored", ImageOps.mirror(image))]
    for name, (x, y) in crops.items():
        crop = image.crop((x, y, x + cw, y + ch))
        views += [(name, crop), (f"{name} mirrored", ImageOps.mirror(crop))]
    return views


def _scikit_image_photos(size: int) -> Calibration:
    try:
        import skimage.data
    except ImportError:
        raise ImportError(f"INT8 calibration needs images: name a VOC folder or a folder of photos "
                          f"(--calibration DIR, or {CALIBRATION_ENV}=DIR), or install scikit-image, whose sample "
                          f"photos are the fallback") from None
    images, names = [], []
    for photo in SCIKIT_IMAGE_PHOTOS:
        pixels = getattr(skimage.data, photo)()
        if isinstance(pixels, tuple):  # stereo_motorcycle: (left, right, disparity)
            pixels = pixels[0]
        for view, image in _views(to_rgb(pixels)):
            images.append(image)
            names.append(f"{photo} ({view})")
    return Calibration(network_input(images, size),
                       f"scikit-image's sample photos ({', '.join(SCIKIT_IMAGE_PHOTOS)}), each whole, mirrored and "
                       f"cut five ways: {len(images)} images (no VOC folder named: --calibration or "
                       f"{CALIBRATION_ENV})", tuple(names), "scikit-image")


def _evenly(items: list, count: int) -> list:
    """`count` items taken evenly through `items` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def calibration_images(size: int, source=None, count: int = CALIBRATION_COUNT) -> Calibration:
    """`count` calibration images at the network's input `size`: from `source` (or $SSD_CALIBRATION_DATA), a VOC
    folder (its training ids, VOC_IMAGE_SETS in that order) or a folder of images; without either, scikit-image's
    sample photos (see the module's docstring)."""
    source = source or os.environ.get(CALIBRATION_ENV) or None
    if source is None:
        return _scikit_image_photos(size)
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration images: {root} is not a folder (a VOC folder such as VOCdevkit/VOC2007, "
                                f"or a folder of photos)")
    image_set = next((s for s in VOC_IMAGE_SETS if (root / "ImageSets" / "Main" / f"{s}.txt").exists()), None)
    if image_set and (root / "JPEGImages").is_dir():
        ids = sorted((root / "ImageSets" / "Main" / f"{image_set}.txt").read_text().split())
        chosen = _evenly(ids, count)
        files = [root / "JPEGImages" / f"{i}.jpg" for i in chosen]
        what = (f"{root.name} {image_set}: {len(files)} of {len(ids)} images, taken evenly through the sorted ids"
                f"{f', one in {len(ids) // count}' if len(ids) >= 2 * count else ''}")
    else:
        from PIL import Image

        suffixes = {ext.lower() for ext in Image.registered_extensions()}
        found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        files = _evenly(found, count)
        if not files:
            raise FileNotFoundError(f"calibration images: {root} holds no images (nor a VOC ImageSets/Main/"
                                    f"{VOC_IMAGE_SETS[0]}.txt)")
        what = f"{root.name}: {len(files)} of its {len(found)} images, taken evenly through the sorted names"
    return Calibration(network_input([to_rgb(f) for f in files], size), what, tuple(f.name for f in files),
                       str(root.resolve()))
