"""The built custom-op library: its exports, how the loader finds it, sessions coming and going."""

from __future__ import annotations

import gc
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cases import empty_cache, make_codec, quantize_inputs
from ort_ops import run_quantize

from tqexport import runtime
from tqexport.runtime import NativeLibraryNotFoundError, ort_library_path


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) not installed")
def test_exports_only_register_custom_ops(ort_library: Path) -> None:
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(ort_library)], capture_output=True, text=True, check=True
    ).stdout
    symbols = {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}
    symbols.discard("VERS_1.0")
    assert symbols == {"RegisterCustomOps"}


def test_env_override_must_name_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.so"
    monkeypatch.setenv(runtime.ORT_LIBRARY_ENV, str(missing))
    with pytest.raises(NativeLibraryNotFoundError, match=f"TQEXPORT_ORT_LIBRARY={missing} is not a file"):
        ort_library_path()


def test_env_override_is_used(monkeypatch: pytest.MonkeyPatch, ort_library: Path) -> None:
    monkeypatch.setenv(runtime.ORT_LIBRARY_ENV, str(ort_library))
    assert ort_library_path() == ort_library.resolve()


def test_sessions_come_and_go() -> None:
    """ORT unloads a custom-op library with its SessionOptions; ours stays usable (worker threads live on)."""
    codec = make_codec(32, bits=(4,), kv_heads=2)
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 32)).astype(np.float32)
    inputs, attrs = quantize_inputs(x, codec, empty_cache(2, 2, codec))
    first, _ = run_quantize(inputs, attrs)
    for _ in range(5):
        again, _ = run_quantize(inputs, attrs)
        gc.collect()
        np.testing.assert_array_equal(again, first)
