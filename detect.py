"""`python detect.py IMAGE ... [--out DIR]` in a checkout: the `ssd-detect` command (`visualize.detect`)."""

import sys

from visualize.detect import main

if __name__ == "__main__":
    sys.exit(main())
