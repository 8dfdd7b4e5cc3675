"""Find the native tqexport libraries and register the ONNX Runtime custom ops with a session.

The ORT custom-op library `libtqexport_ort.so` (ops `TQQuantize`, `TQAttention` in domain `tqexport`) is built
from `plugins/` by `pip install` / `scripts/setup.sh` and installed into `tqexport/_native/`. Look-up order:

1. the environment variable (`TQEXPORT_ORT_LIBRARY` / `TQEXPORT_TRT_LIBRARY`): a path to the library file;
2. `_native/` of the installed package (also where an editable install puts it);
3. `build/*/lib/` of a source checkout (a `cmake --build` tree), newest first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqexport.errors import MissingDependencyError

ORT_LIBRARY_ENV = "TQEXPORT_ORT_LIBRARY"
TRT_LIBRARY_ENV = "TQEXPORT_TRT_LIBRARY"
ORT_LIBRARY_NAME = "libtqexport_ort.so"
TRT_LIBRARY_NAME = "libtqexport_trt.so"

_BUILD_HINT = (
    "build it with `bash scripts/setup.sh` (or `pip install -e .`; TensorRT plugins need "
    "`TQ_WITH_TRT=ON pip install -e .`), or point {env} at a built {name}"
)


class NativeLibraryNotFoundError(MissingDependencyError):
    """A native tqexport library is neither installed nor named by its environment variable."""


def _package_dir() -> Path:
    return Path(__file__).resolve().parent.parent


def _candidates(name: str) -> Iterator[Path]:
    import tqexport

    seen: set[Path] = set()
    for root in [*getattr(tqexport, "__path__", []), str(_package_dir())]:
        path = Path(root) / "_native" / name
        if path not in seen:
            seen.add(path)
            yield path
    build_dir = _package_dir().parent / "build"
    if build_dir.is_dir():
        built = sorted(build_dir.glob(f"*/lib/{name}"), key=lambda p: p.stat().st_mtime, reverse=True)
        yield from built


def _find(name: str, env: str) -> Path:
    override = os.environ.get(env)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise NativeLibraryNotFoundError(
                f"{env}={override} is not a file; unset it or {_BUILD_HINT.format(env=env, name=name)}"
            )
        return path.resolve()
    tried: list[str] = []
    for path in _candidates(name):
        if path.is_file():
            return path.resolve()
        tried.append(str(path))
    raise NativeLibraryNotFoundError(
        f"{name} not found (looked in: {', '.join(tried) or 'nowhere'}); "
        f"{_BUILD_HINT.format(env=env, name=name)}"
    )


def ort_library_path() -> Path:
    """Path of the ORT custom-op library; raises NativeLibraryNotFoundError saying how to build it."""
    return _find(ORT_LIBRARY_NAME, ORT_LIBRARY_ENV)


def trt_library_path() -> Path:
    """Path of the TensorRT plugin library (built with TQ_WITH_TRT=ON)."""
    return _find(TRT_LIBRARY_NAME, TRT_LIBRARY_ENV)


def register_with(session_options: Any) -> Path:
    """Register the tqexport custom ops with an `onnxruntime.SessionOptions`; returns the library's path."""
    path = ort_library_path()
    session_options.register_custom_ops_library(str(path))
    return path
