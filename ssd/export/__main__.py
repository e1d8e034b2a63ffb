"""`python -m ssd.export` (the command line lives with the others, in ssd/cli.py)."""

import sys

from ..cli import export_main

sys.exit(export_main())
