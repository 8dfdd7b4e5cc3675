"""A converted fixture computes exactly its original with every new K/V replaced by the codec round trip.

The oracle (tests/passes/codec_roundtrip.py) runs the original graph with each layer's new K/V quantized and
dequantized by the converted model's own codec before attention and the cache. Whatever the converted model's
logits differ from that, beyond float rounding, is error the rewrite or the ops add (a wrong mask, scale,
softcap, GQA grouping, padding or precision loss); what the oracle differs from the original is the codec's.

Measured on the 25 left-padding fixtures at 8 bits, as a fraction of max|logit| over a 32-step batch-2
left-padded decode: converted graph with the NumPy reference ops vs oracle <= 6e-7; ORT custom ops vs oracle
<= 4.3e-4 (one or two 8-bit codes move one cell when ORT's float32 K/V differ from onnx.reference's in the
last bits: gemma2, gpt2), while the codec itself costs 7e-3 to 3e-2 (bench/eight_bit_error_budget.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tqexport.converter import ConvertOptions, convert_model

catalog = pytest.importorskip("graphs.catalog")
from tests.passes.codec_roundtrip import RoundTripRunner, codec_roundtrips  # noqa: E402
from tests.passes.referee import (  # noqa: E402
    ConvertedRunner,
    OrtConvertedRunner,
    ort_library_available,
    teacher_forced_logits,
)

FIXTURES = [fx for fx in catalog.FIXTURES if fx.exporter != "genai" and fx.left_padding_ok]
# 1e-3 x max|logit| admits a few 8-bit codes one cell off (4.3e-4 measured) and is 7-30x below the codec's own
# error, so anything the conversion adds on top of the codec shows.
ROUNDTRIP_TOLERANCE = 1e-3


def _ids(fx) -> str:
    return f"{fx.exporter}/{fx.arch}"


def _decode(runner) -> np.ndarray:
    ids = np.random.default_rng(0).integers(3, 100, (2, 6 + 32))
    return teacher_forced_logits(runner, ids, [0, 3], 6, 32)


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURES, reason="graphs/fixtures/manifest.json not generated yet")
@pytest.mark.parametrize("runtime", ["reference", "ort"])
@pytest.mark.parametrize("fx", FIXTURES, ids=_ids)
def test_converted_fixture_equals_codec_roundtrip_of_original(fx, runtime: str, tmp_path: Path) -> None:
    if runtime == "ort" and not ort_library_available():
        pytest.skip("tqexport ORT custom-op library not built")
    out = tmp_path / "tq8.onnx"
    convert_model(fx.path, out, ConvertOptions(key_bits=8, value_bits=8), log=lambda _line: None)
    oracle = _decode(RoundTripRunner(fx.path, codec_roundtrips(out)))
    if runtime == "ort":
        converted = _decode(OrtConvertedRunner(str(out)))
    else:
        converted = _decode(ConvertedRunner(onnx.load(str(out))))
    scale = np.abs(oracle).max()
    assert np.abs(converted - oracle).max() / scale < ROUNDTRIP_TOLERANCE
    # the oracle is not the original: the 8-bit codec moves the logits by 7e-3 .. 3e-2 x max|logit|
    unchanged = _decode(RoundTripRunner(fx.path, {}))
    assert np.abs(oracle - unchanged).max() / scale > 5 * ROUNDTRIP_TOLERANCE
