"""Unit tests import the relay package from the checkout's files/ directory."""

import os
import sys

FILES_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "files"))
if FILES_DIR not in sys.path:
    sys.path.insert(0, FILES_DIR)
