"""Tiny hand-built decoders shared by the eval tests (built once per session into a temp folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_decoder import build_tiny_decoder  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny_decoders")
    return {
        "original": build_tiny_decoder(folder / "original.onnx"),
        # Same seed, slightly different weights: a stand-in for "a different model".
        "perturbed": build_tiny_decoder(folder / "perturbed.onnx", weight_scale=0.33),
        # Same weights, uint8 caches: a stand-in for a converted model (lossy cache, fewer bytes).
        "uint8_cache": build_tiny_decoder(folder / "uint8_cache.onnx", uint8_cache=True),
    }
