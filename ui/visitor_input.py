"""Everything a visitor or an API script sends, checked: uploaded files (and images pasted as data URLs) under
the same limits, detection parameters with messages that name the bad value. And every picture sent back
gets a unique id (`served`)."""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import struct
import uuid
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image, UnidentifiedImageError

from ssd.image import to_rgb

from .settings import MAX_FILE_BYTES, MAX_FILE_SIZE, MAX_PIXELS


class Refused(gr.Error):
    """A request the app refuses, with a message for the visitor. Gradio shows it as it shows any gr.Error but
    logs no traceback for it: a refusal is an answer, not a fault (3000 refused requests wrote 6.4 MB of
    tracebacks to the log)."""

    def __init__(self, message: str):
        super().__init__(message, print_exception=False)


# The one answer to a file path that Gradio did not receive, whether or not a file is there: a different message
# for a missing file, a directory or a non-image would tell a visitor which paths exist on the server.
NOT_RECEIVED = "The image was not received; please upload it again."


def received_path(path) -> str:
    """`path` resolved, if it names a file in Gradio's upload folder (where Gradio keeps every file it received,
    the example photos included); otherwise gr.Error(NOT_RECEIVED). An API payload can name any path on the
    server, and with `preprocess=False` Gradio hands it over unchecked."""
    root = os.path.realpath(get_upload_folder())
    try:
        real = os.path.realpath(path)
        inside = os.path.commonpath([real, root]) == root and real != root
    except (TypeError, ValueError, OSError):  # not a path, a NUL byte, paths on different drives
        inside = False
    if not inside or not os.path.isfile(real):
        raise Refused(NOT_RECEIVED)
    return real


def upload_source(value) -> tuple[str | io.BytesIO, str] | None:
    """(what to open, a name to show) from an image input's raw payload, or None when there is no image.

    The image events run with `preprocess=False`, so Gradio hands over its upload record (a file it received
    under the upload size limit) without decoding the picture itself: a broken or hostile file then reaches
    `read_upload` and gets a clear message instead of Gradio's generic error. A file path is accepted only inside
    Gradio's upload folder (`received_path`). An image sent as a data URL is decoded in memory under the same
    size limit; nothing is written to disk.
    """
    if value is None:
        return None
    if isinstance(value, str | Path):
        return received_path(value), short(Path(str(value)).name)
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        if value.get("path"):
            name = value.get("orig_name")
            return received_path(value["path"]), short(name if isinstance(name, str) and name else
                                                       Path(str(value["path"])).name)
        url = value.get("url") or ""
        if isinstance(url, str) and url.startswith("data:"):
            payload = url.split(",", 1)[1] if "," in url else ""
            if len(payload) * 3 // 4 > MAX_FILE_BYTES:
                raise Refused(f"The pasted image is larger than this demo's upload limit ({MAX_FILE_SIZE}).")
            try:
                data = base64.b64decode(payload, validate=False)
            except (ValueError, binascii.Error) as e:
                raise Refused(f"The image data URL could not be decoded ({short(str(e))}).") from e
            return io.BytesIO(data), "pasted image"
    raise Refused(f"Expected an uploaded image file, got {type(value).__name__}.")


def short(text: str, limit: int = 60) -> str:
    """At most `limit` characters of something a visitor sent, for a message (never the whole of it)."""
    return text if len(text) <= limit else text[:limit] + "…"


def read_upload(value) -> Image.Image:
    """An uploaded file -> upright RGB image, or a gr.Error that says what is wrong with the file."""
    if isinstance(value, Image.Image):  # from Python callers
        check_pixels(*value.size, "The image")
        return to_rgb(value)
    if isinstance(value, np.ndarray):
        if value.ndim >= 2:
            check_pixels(value.shape[1], value.shape[0], "The image")
        return to_rgb(value)
    source = upload_source(value)
    if source is None:
        raise Refused("No image: upload a photo (JPEG, PNG, WebP …) or pick an example.")
    source, name = source
    if isinstance(source, str):
        size = os.path.getsize(source)
    else:
        size = source.getbuffer().nbytes
    if size == 0:
        raise Refused(f"'{name}' is empty (0 bytes). Upload a photo (JPEG, PNG, WebP …).")
    try:
        with Image.open(source) as im:
            check_pixels(*im.size, f"'{name}'")
            if im.format == "PNG" and im.width * im.height * 3 > SUSPICIOUS_RATIO * size and png_data_is_short(source):
                raise Refused(f"'{name}' declares {im.width}×{im.height} pixels but its data stops early: the "
                               "file is truncated or crafted. Upload the whole photo.")
            im.load()
            image = to_rgb(im)
    except gr.Error:
        raise
    except Image.DecompressionBombError as e:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise Refused(f"'{name}' declares an enormous image (over {limit:.0f} megapixels: a decompression bomb?); "
                       f"this demo accepts up to {MAX_PIXELS / 1e6:.0f} megapixels.") from e
    except UnidentifiedImageError as e:
        raise Refused(f"'{name}' is not an image this demo can read. Upload a JPEG, PNG, WebP, BMP, GIF or TIFF "
                       "photo.") from e
    except (OSError, SyntaxError, ValueError, TypeError, EOFError) as e:
        raise Refused(f"'{name}' could not be decoded — the file looks truncated or corrupt ({e}).") from e
    except MemoryError as e:
        raise Refused(f"'{name}' needs more memory to decode than this demo has.") from e
    return image


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
SUSPICIOUS_RATIO = 50  # declared pixel bytes per file byte beyond which a PNG's data is counted


def png_data_is_short(source) -> bool:
    """True if a (non-interlaced) PNG's compressed pixel data ends before its declared rows do. Pillow fills the
    missing rows silently, so a 2 KB file that declares 6000×6000 pixels would decode to 100 MB. The data is
    inflated in bounded pieces and counted, never kept."""
    opened = open(source, "rb") if isinstance(source, str) else source
    try:
        opened.seek(0)
        if opened.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
        inflate, produced, expected = zlib.decompressobj(), 0, None
        while True:
            head = opened.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            body = opened.read(length)
            opened.read(4)  # CRC
            if kind == b"IHDR" and len(body) >= 13:
                width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
                if interlace or colour not in PNG_CHANNELS:
                    return False
                expected = height * (1 + math.ceil(width * PNG_CHANNELS[colour] * depth / 8))
            elif kind == b"IDAT" and expected is not None:
                data = body
                while data and produced < expected:
                    produced += len(inflate.decompress(data, 1 << 20))
                    data = inflate.unconsumed_tail
            elif kind == b"IEND":
                break
        return expected is not None and produced < expected
    except (OSError, zlib.error, struct.error):
        return False  # Pillow's own decoding then says what is wrong
    finally:
        if opened is not source:
            opened.close()
        else:
            source.seek(0)


def check_pixels(width: int, height: int, what: str):
    """Refuse an image over SSD_MAX_MEGAPIXELS before its pixels are decoded (or, for arrays, used)."""
    if width * height > MAX_PIXELS:
        raise Refused(f"{what} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels); this demo "
                       f"accepts up to {MAX_PIXELS / 1e6:.0f} megapixels. Please resize it first.")


def check_number(name: str, value, low: float, high: float) -> float:
    """`value` as a float in [low, high], or a gr.Error that names it (API users can send anything)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of hundreds of digits
        raise Refused(f"{name} must be a number in [{low}, {high}], got {short(repr(value))}.") from None
    if not (math.isfinite(v) and low <= v <= high):
        raise Refused(f"{name} must be a number in [{low}, {high}], got {short(repr(value))}.")
    return v


def check_parameters(score_threshold, nms_threshold, top_k, classes, class_names, max_top_k: int
                     ) -> tuple[float, float, int, list[str]]:
    """The detection parameters as numbers and class names, or a gr.Error that names the bad value (API users
    can send anything)."""
    score = check_number("score_threshold", score_threshold, 0, 1)
    nms = check_number("nms_threshold", nms_threshold, 0, 1)
    k = check_number("top_k", top_k, 1, max_top_k)
    if k != int(k):
        raise Refused(f"top_k must be a whole number from 1 to {max_top_k}, got {top_k!r}.")
    if classes is None or classes == "":
        classes = []
    elif isinstance(classes, str):
        classes = [classes]  # one class name, not its letters
    if not isinstance(classes, list | tuple) or not all(isinstance(c, str) for c in classes):
        raise Refused(f"classes must be a list of class names, got {short(repr(classes))}.")
    if len(classes) > len(class_names):
        raise Refused(f"classes: at most {len(class_names)} class names, got {len(classes)}.")
    unknown = [c for c in classes if c not in class_names]
    if unknown:
        raise Refused(f"Unknown classes {short(repr(unknown))}: this model detects {', '.join(class_names)}.")
    return score, nms, int(k), sorted(set(classes))


def to_jpeg(picture: Image.Image) -> bytes:
    """A picture kept in a session's state as JPEG bytes (quality 90): several times smaller than its pixels."""
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def from_jpeg(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def served(picture: Image.Image) -> Image.Image:
    """`picture` with a unique id in its metadata (EXIF ImageUniqueID for JPEG, a text chunk for PNG).

    Gradio stores an output picture in a cache file named by the hash of its bytes, and rewrites that file in
    place; when two visitors get the same picture at once (the same photo and sliders, or every page load's
    default pictures), one of them can be served a half-written file. A unique id gives every answer a file of
    its own. (Old files are removed by the `delete_cache` schedule in `build_demo`.)
    """
    uid = uuid.uuid4().hex
    exif = picture.getexif()
    exif[0xA420] = uid  # ImageUniqueID
    picture.info["exif"] = exif.tobytes()
    picture.info["ImageUniqueID"] = uid
    return picture
