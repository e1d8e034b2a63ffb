"""Test-session settings shared by every test module."""

import atexit
import os
import shutil
import tempfile

# Before any test module imports torch (see ssd/__init__.py): threads that sleep instead of spinning, so that
# the suite's own processes (the app server, DataLoader workers) do not stall each other on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# ONNX exports made by tests (and by apps the tests start) go to a cache of this session, not the user's.
os.environ["SSD_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssd-test-cache-")
atexit.register(shutil.rmtree, os.environ["SSD_CACHE_DIR"], ignore_errors=True)
# Gradio's upload folder (where it keeps what it received, and the only place the app reads uploads from) is
# this session's too, for the in-process tabs and for the apps the tests start.
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="ssd-test-gradio-")
atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

