"""ONNX Runtime sessions on the CUDA provider with the tqexport custom ops, and which provider ran each node.

Shared by tests/gpu/test_converted_model_cuda.py and bench/decode_ort_gpu.py. ORT's CUDA provider uses TF32
for float32 MatMul by default; `exact_fp32=True` turns it off (`use_tf32=0`) for float32 comparisons.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def preload_cuda_libraries() -> None:
    """Let onnxruntime-gpu find the CUDA/cuDNN libraries of the nvidia-* wheels (as torch does)."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # noqa: BLE001 - the session reports a missing library more clearly
            pass


def cuda_unavailable_reason() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime not importable: {exc}"
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {CUDA} (install onnxruntime-gpu)"
    return None


def make_session(
    model_path: str | Path, provider: str, exact_fp32: bool = True, profile_prefix: str | None = None
) -> Any:
    """An InferenceSession on `provider` (CPU kept as fallback) with the tqexport ops registered.

    Raises RuntimeError when a CUDA session silently came up without the CUDA provider.
    """
    import onnxruntime as ort

    from tqexport import runtime

    options = ort.SessionOptions()
    options.log_severity_level = 3
    runtime.register_with(options)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if provider == CUDA:
        preload_cuda_libraries()
        providers: list[Any] = [(CUDA, {"use_tf32": "0" if exact_fp32 else "1"}), CPU]
    else:
        providers = [CPU]
    session = ort.InferenceSession(str(model_path), options, providers=providers)
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"{model_path}: asked for {provider}, session runs on {session.get_providers()}")
    return session


def node_providers(profile_json: str | Path) -> dict[str, Counter]:
    """From an ORT profile: op type -> Counter of the providers its node runs were timed on."""
    events = json.loads(Path(profile_json).read_text())
    seen: dict[str, Counter] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "op_name" in args and "provider" in args:
            seen.setdefault(args["op_name"], Counter())[args["provider"]] += 1
    return seen


def card_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
