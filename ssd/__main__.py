"""`python -m ssd`: the library's command line (detections as text or JSON); see `ssd.cli`."""

import sys

from .cli import main

sys.exit(main())
