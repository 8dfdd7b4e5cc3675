"""Kernel tests need a CUDA device, torch with CUDA, and the harness library; not onnxruntime's CUDA provider.

The project conftest skips every `gpu` test when ORT has no CUDAExecutionProvider; for the kernel tests in
this folder (which call the launchers through ctypes, not ORT) that skip is replaced by this folder's own
reason.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # bench.gpu_harness


@functools.cache
def kernel_unavailable_reason() -> str | None:
    try:
        import torch
    except ImportError as exc:
        return f"torch not importable: {exc}"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    from bench.gpu_harness.capi import library_path

    if not library_path().exists():
        return f"{library_path()} not built (bash plugins/kernels/build_standalone.sh)"
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/gpu/" not in str(item.path).replace("\\", "/") or "ort_cuda" in item.name:
            continue
        item.own_markers = [
            m
            for m in item.own_markers
            if not (
                m.name == "skip"
                and str(m.kwargs.get("reason", "")).startswith("gpu test skipped: onnxruntime")
            )
        ]
        if reason := kernel_unavailable_reason():
            item.add_marker(pytest.mark.skip(reason=f"gpu kernel test skipped: {reason}"))


@pytest.fixture(scope="session")
def kernels():
    from bench.gpu_harness.capi import Kernels

    return Kernels()
