"""The demo's limits, from the environment (docs/deploy.md, "Limits")."""

from __future__ import annotations

import os


def _bytes(size: str) -> int:
    """'20mb' -> bytes, as Gradio reads its upload limit (1 kb = 1024 bytes)."""
    number, unit = size.strip().lower().rstrip("b") or "0", 1
    for suffix, factor in (("k", 1024), ("m", 1024 ** 2), ("g", 1024 ** 3)):
        if number.endswith(suffix):
            number, unit = number[:-1], factor
    return int(float(number) * unit)


MAX_PIXELS = int(float(os.environ.get("SSD_MAX_MEGAPIXELS", "40")) * 1_000_000)  # larger uploads are refused
MAX_FILE_SIZE = os.environ.get("SSD_MAX_FILE_SIZE", "20mb")  # upload cap: Gradio's for files, ours for data URLs
MAX_FILE_BYTES = _bytes(MAX_FILE_SIZE)
# Gradio's upload folder (uploads, the pictures sent back) is kept under this size (ui.upload_cache).
UPLOAD_CACHE_SIZE = os.environ.get("SSD_UPLOAD_CACHE", "2gb")
UPLOAD_CACHE_BYTES = _bytes(UPLOAD_CACHE_SIZE)
# ... and under this many files: a flood of tiny uploads would otherwise add files without adding bytes.
UPLOAD_CACHE_FILES = int(os.environ.get("SSD_UPLOAD_CACHE_FILES", "2000"))
# Every other request body (an event's inputs as JSON) is refused over this size, and over this many JSON values,
# before Gradio parses it on the server's event loop (ui.guard). Images go through the upload route; an image
# pasted into the JSON as a data URL counts here.
MAX_REQUEST_SIZE = os.environ.get("SSD_MAX_REQUEST", "8mb")
MAX_REQUEST_BYTES = _bytes(MAX_REQUEST_SIZE)
MAX_VALUES = int(os.environ.get("SSD_MAX_VALUES", "20000"))
# Events one browser session may have waiting or running at once (an address: twice that), so that one visitor
# cannot fill the queue for everybody.
CLIENT_EVENTS = int(os.environ.get("SSD_CLIENT_EVENTS", "8"))
# Proxies in front of the server that append the visitor's address to X-Forwarded-For: a Hugging Face Space
# (which sets SPACE_ID) has one; run directly, the connection's own address is the visitor's.
FORWARDED_HOPS = int(os.environ.get("SSD_FORWARDED_HOPS", "1" if os.environ.get("SPACE_ID") else "0"))
# Gradio's /monitoring pages show every endpoint's traffic to anyone and print their key to the log.
MONITORING = os.environ.get("SSD_MONITORING", "").lower() in ("1", "true", "yes")
CONCURRENCY = int(os.environ.get("SSD_CONCURRENCY", "2"))  # network runs at once, all tabs together
QUEUE_SIZE = int(os.environ.get("SSD_QUEUE_SIZE", "64"))
STATE_TTL_S = int(os.environ.get("SSD_STATE_TTL_S", "900"))  # a session's cached outputs live this long
# Gradio keeps every session it has seen (a copy of the page's settings, about 0.4 MB here, and its State values)
# until 10 000 sessions; beyond SESSIONS the least recently active ones are dropped. A dropped page keeps what it
# shows; its sliders then wait for the photo to be given again, as after STATE_TTL_S. Each session kept costs
# about 1–2 MB of RSS in all (bench/app_sessions.py), and 20 visitors at once already share 2 cores thinly.
SESSIONS = int(os.environ.get("SSD_SESSIONS", "20"))
MALLOC_ARENAS = int(os.environ.get("SSD_MALLOC_ARENAS", "2"))  # ssd.heap; 0: glibc's default (8 per core)
DISPLAY_SIDE = 1024  # pictures sent back to the browser are at most this big
MATCH_SIDE = 800  # the Matching tab's picture
MAX_GT_ROWS = 100  # ground-truth boxes a visitor's table may give (VOC images have at most 42 objects)
# The Model tab draws its false positives on their photos only where the VOC folder is at hand (never on the
# hosted demo): SSD_VOC_ROOT=/path/to/VOCdevkit/VOC2007.
VOC_ROOT = os.environ.get("SSD_VOC_ROOT") or None
# The live webcam view: a frame every LIVE_EVERY_S seconds, each stream at most LIVE_LIMIT_S long (it shares the
# network with every visitor), frames scaled to at most LIVE_SIDE pixels.
LIVE_EVERY_S = float(os.environ.get("SSD_LIVE_EVERY_S", "0.25"))
LIVE_LIMIT_S = int(os.environ.get("SSD_LIVE_LIMIT_S", "60"))
LIVE_SIDE = 640
LIVE_STREAMS = int(os.environ.get("SSD_LIVE_STREAMS", "4"))  # webcam streams open at once
# The Learn tab (ui.learn_tab): a visitor's copy of the network trains on one photo. Runs take the 2 cores for
# tens of seconds, so at most LEARN_RUNS run at once (a Train pressed meanwhile is refused with a message), each
# at most LEARN_MAX_STEPS steps (the slider starts at LEARN_STEPS) and LEARN_LIMIT_S seconds (then it stops early,
# and says so); its pictures are redrawn every LEARN_EVERY steps.
LEARN_RUNS = int(os.environ.get("SSD_LEARN_RUNS", "1"))
LEARN_STEPS = int(os.environ.get("SSD_LEARN_STEPS", "30"))
LEARN_MAX_STEPS = int(os.environ.get("SSD_LEARN_MAX_STEPS", "60"))
LEARN_LIMIT_S = float(os.environ.get("SSD_LEARN_LIMIT_S", "120"))
LEARN_EVERY = 3
