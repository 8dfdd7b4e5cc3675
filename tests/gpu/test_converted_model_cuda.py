"""A converted model decodes the same on ORT's CUDA provider as on its CPU provider.

The model is a random-weight Llama with SmolLM2-135M's exact shapes (30 layers, hidden 576, Hq 9, Hkv 3,
D 64, vocab 49152, float32), exported by bench/gpu_e2e/export_models.py and converted with `tqexport convert`
(4-bit preset; 4-bit with --sink-tokens 4 --recent-window 32). Set TQEXPORT_E2E_MODELS to the folder holding
`smol/`, `smol-tq4/` and `smol-tq4-w/` (each a model.onnx; missing weights are filled by
bench/gpu_e2e/fill_weights.py). The tiny committed fixtures cannot serve: their D = 32 has no CUDA kernel.

Oracle: the same graph on CPUExecutionProvider. Both run a 40-token prefill (longer than the 36-token window,
so the prefill itself compresses tokens) and 64 teacher-forced decode steps through
tqexport.eval.session.DecodeSession; every logit must agree within 1e-3 of max|logit| (CUDA with use_tf32=0).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gpu_e2e.ort_cuda import CPU, CUDA, cuda_unavailable_reason, make_session, node_providers  # noqa: E402
from tqexport.eval.session import DecodeSession  # noqa: E402

pytestmark = pytest.mark.gpu

MODELS_ENV = "TQEXPORT_E2E_MODELS"
BATCH = 2
PREFILL = 40
DECODE_STEPS = 64
# The brief's bound: max|cuda - cpu| / max|cpu| over all logits. The CUDA attention rounds q, K and V to
# float16 for its tensor-core products (tests/ort/test_cuda_ops.py), the CPU ops stay float32.
REL_TOL = 1e-3
VARIANTS = {"tq4": "smol-tq4", "tq4_sink4_window32": "smol-tq4-w"}


def _models_dir() -> Path:
    folder = os.environ.get(MODELS_ENV)
    if not folder:
        pytest.skip(f"{MODELS_ENV} is not set (folder of bench/gpu_e2e models, see module docstring)")
    if reason := cuda_unavailable_reason():
        pytest.skip(f"gpu test skipped: {reason}")
    return Path(folder)


def _ready(model: Path) -> Path:
    """The model path, with its external weights written when missing (shared with the original's)."""
    if not model.is_file():
        pytest.skip(f"{model} not built (bench/gpu_e2e/export_models.py + tqexport convert)")
    from bench.gpu_e2e.fill_weights import external_tensors, fill, share

    if not all((model.parent / t[3]).is_file() for t in external_tensors(model)):
        original = model.parent.parent / "smol" / "model.onnx"
        if model != original and original.is_file():
            _ready(original)
            share(original, model)
        else:
            fill(model, seed=0)
    return model


def _decode(session, ids: np.ndarray) -> np.ndarray:
    """Prefill ids[:, :PREFILL], then one teacher-forced step per remaining id; logits [steps + 1, B, V]."""
    decoder = DecodeSession(session)
    logits = [decoder.prefill(ids[:, :PREFILL])[:, -1, :]]
    for t in range(PREFILL, ids.shape[1]):
        logits.append(decoder.step(ids[:, t]))
    return np.stack(logits)


def _compare(model: Path, tmp_path: Path) -> tuple[float, dict]:
    vocab = 49152
    ids = np.random.default_rng(7).integers(3, vocab, size=(BATCH, PREFILL + DECODE_STEPS))
    cpu = _decode(make_session(model, CPU), ids)
    cuda_session = make_session(model, CUDA, exact_fp32=True, profile_prefix=str(tmp_path / "cuda"))
    cuda = _decode(cuda_session, ids)
    providers = node_providers(cuda_session.end_profiling())
    assert np.isfinite(cuda).all(), "CUDA logits hold NaN/inf"
    error = float(np.max(np.abs(cuda.astype(np.float64) - cpu)) / np.max(np.abs(cpu)))
    worst_step = int(np.argmax(np.max(np.abs(cuda - cpu), axis=(1, 2))))
    print(
        f"\n{model.parent.name}: max|cuda-cpu|/max|cpu| = {error:.3e} (worst step {worst_step}); {providers}"
    )
    return error, providers


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ort_cuda_converted_model_matches_cpu(variant: str, tmp_path: Path) -> None:
    model = _ready(_models_dir() / VARIANTS[variant] / "model.onnx")
    error, providers = _compare(model, tmp_path)
    for op in ("TQQuantize", "TQAttention"):
        assert set(providers.get(op, {})) == {CUDA}, (
            f"{op} ran on {dict(providers.get(op, {}))}, not only {CUDA}"
        )
    assert error <= REL_TOL, f"{variant}: CUDA vs CPU logits differ by {error:.3e} x max|logit| (> {REL_TOL})"


def test_ort_cuda_original_model_matches_cpu(tmp_path: Path) -> None:
    """Control: the unconverted graph, so a failure above can be told apart from ORT's own CUDA drift."""
    model = _ready(_models_dir() / "smol" / "model.onnx")
    error, _ = _compare(model, tmp_path)
    assert error <= REL_TOL, f"original: CUDA vs CPU logits differ by {error:.3e} x max|logit|"
