"""Project-wide pytest setup: the `gpu` and `trt` markers skip with a visible reason when the hardware or
runtime is missing, and `ort_library` gives the built tqexport ORT custom-op library (an error, not a skip,
when it was not built: scripts/setup.sh always builds it)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest


@functools.cache
def cuda_unavailable_reason() -> str | None:
    """Why CUDA tests cannot run here, or None when a CUDA device and ORT's CUDA provider are present."""
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "no CUDA device (/dev/nvidia*)"
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime not importable: {exc}"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


@functools.cache
def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT tests cannot run here, or None."""
    reason = cuda_unavailable_reason()
    if reason:
        return reason
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"tensorrt not importable: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("gpu") and (reason := cuda_unavailable_reason()):
            item.add_marker(pytest.mark.skip(reason=f"gpu test skipped: {reason}"))
        elif item.get_closest_marker("trt") and (reason := tensorrt_unavailable_reason()):
            item.add_marker(pytest.mark.skip(reason=f"TensorRT test skipped: {reason}"))


@pytest.fixture(scope="session")
def ort_library() -> Path:
    """Path of libtqexport_ort.so (built by scripts/setup.sh / pip install)."""
    from tqexport.runtime import ort_library_path

    return ort_library_path()
