"""Shared fixtures of the C++ CPU kernel tests: codecs built by the NumPy reference codec."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
