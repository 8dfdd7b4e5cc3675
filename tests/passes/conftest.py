"""Shared fixtures for the pass tests: tiny builder models saved to tmp paths, and the runners."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.passes.builders import TinySpec, build_tiny_llm


@pytest.fixture
def save_tiny(tmp_path: Path):
    def save(spec: TinySpec, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(build_tiny_llm(spec), path)
        return path

    return save
