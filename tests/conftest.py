"""Test-session settings shared by every test module."""

import atexit
import os
import shutil
import tempfile

# ONNX exports made by tests (and by apps the tests start) go to a cache of this session, not the user's.
os.environ["SSD_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssd-test-cache-")
atexit.register(shutil.rmtree, os.environ["SSD_CACHE_DIR"], ignore_errors=True)
