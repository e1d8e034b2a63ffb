"""Detect objects in images from the command line, and draw them: the library's CLI (`ssd.cli`) with
visualize's drawing behind --out. An application edge, like app.py.

    python detect.py photo.jpg more_photos/ --out annotated/      (installed: ssd-detect ...)
"""

from __future__ import annotations

import sys

from ssd.cli import main as run_cli
from visualize.draw import draw_detections


def main(argv: list[str] | None = None) -> int:
    return run_cli(argv, draw=draw_detections, prog=None)  # argparse names it as it was run


if __name__ == "__main__":
    sys.exit(main())
