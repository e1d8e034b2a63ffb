"""Detect objects in images from the command line, and draw them: the library's CLI (`ssd.cli`) with
visualize's drawing behind --out. A command-line edge, like app.py is the web's; it lives in visualize/ so that
the installed package carries it (the checkout's `python detect.py` runs it too).

    ssd-detect photo.jpg more_photos/ --out annotated/      (a checkout: python detect.py ..., or
                                                             python -m visualize.detect ...)
"""

from __future__ import annotations

import sys

from ssd.cli import main as run_cli

from .draw import draw_detections


def main(argv: list[str] | None = None) -> int:
    return run_cli(argv, draw=draw_detections, prog=None)  # argparse names it as it was run


if __name__ == "__main__":
    sys.exit(main())
