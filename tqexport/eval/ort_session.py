"""Create ONNX Runtime sessions that can run converted models (our custom-op library registered)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqexport.errors import MissingDependencyError, ModelLoadError

CONFIG_METADATA_KEY = "tqexport.config"  # docs/format.md section 9


class SessionCreationError(ModelLoadError):
    """ONNX Runtime refused the model; the message says why."""


class CustomOpsUnavailableError(MissingDependencyError):
    """The model uses tqexport ops but the custom-op library could not be registered."""


def _register_custom_ops(options: Any) -> str | None:
    """Register the tqexport custom-op library with `options`; return why it could not be, or None."""
    try:
        from tqexport import runtime
    except ImportError as exc:  # the native library is built by scripts/setup.sh
        return f"tqexport.runtime is not importable ({exc})"
    try:
        runtime.register_with(options)
    except Exception as exc:  # noqa: BLE001 - any failure here is reported with the session error
        return f"tqexport.runtime.register_with failed: {exc}"
    return None


def make_session(
    model_path: str | Path, providers: Sequence[str] | None = None, intra_op_threads: int = 0
) -> Any:
    """An InferenceSession for `model_path` with the tqexport custom ops registered when available."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    why_not = _register_custom_ops(options)
    providers = list(providers) if providers else ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(model_path), options, providers=providers)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if why_not and "tqexport" in str(exc):
            raise CustomOpsUnavailableError(
                f"{model_path} uses tqexport custom ops but {why_not} (run scripts/setup.sh): {first_line}"
            ) from exc
        raise SessionCreationError(f"cannot load {model_path}: {first_line}") from exc


def tqexport_config(session: Any) -> dict | None:
    """The `tqexport.config` metadata (JSON) of a session's model; None for an original model."""
    text = session.get_modelmeta().custom_metadata_map.get(CONFIG_METADATA_KEY)
    return json.loads(text) if text else None
