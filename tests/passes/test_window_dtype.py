"""float16 sink/window tokens in a float32 graph: window I/O is float16, q and x are cast around the ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.passes.referee import (
    OriginalRunner,
    OrtConvertedRunner,
    ort_library_available,
    teacher_forced_logits,
)
from tqexport.converter import ConvertOptions, convert_model

FIXTURE = Path(__file__).resolve().parents[2] / "graphs/fixtures/optimum/llama/model.onnx"


def _window_types(path: Path) -> set[int]:
    model = onnx.load(str(path), load_external_data=False)
    return {
        v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output] if "window" in v.name
    }


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture graphs/fixtures/optimum/llama is not committed")
@pytest.mark.skipif(not ort_library_available(), reason="tqexport ORT custom-op library not built")
def test_float16_window_in_float32_graph_matches_float32_window(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(3, 100, (2, 6 + 16))
    original = teacher_forced_logits(OriginalRunner(str(FIXTURE)), ids, [0, 3], 6, 16)
    logits = {}
    for dtype in ("float16", "model"):
        out = tmp_path / dtype / "m.onnx"
        options = ConvertOptions(key_bits=8, value_bits=8, sink_tokens=2, recent_window=4, window_dtype=dtype)
        convert_model(FIXTURE, out, options, log=lambda _: None)
        expected = onnx.TensorProto.FLOAT16 if dtype == "float16" else onnx.TensorProto.FLOAT
        assert _window_types(out) == {expected}
        logits[dtype] = teacher_forced_logits(OrtConvertedRunner(str(out)), ids, [0, 3], 6, 16)
    scale = np.abs(original).max()
    err16 = np.abs(logits["float16"] - original).max() / scale
    err32 = np.abs(logits["model"] - original).max() / scale
    # x is rounded to float16 (2^-11 relative) before quantizing: a few 8-bit codes move one cell, an error of
    # the codec's own size, so the float16 model may be somewhat worse, never of another order
    assert err16 < 1.5 * err32 + 2e-3, (err16, err32)
