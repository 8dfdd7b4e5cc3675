"""Part specs ("16@5+48@2"): parsing, the codec they build, and a conversion that stores and runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tqexport.converter import ConvertOptions, convert_model
from tqexport.converter.cache_codec import build_cache_codec
from tqexport.converter.presets import PartSplit, parse_width, part_split, width_label
from tqexport.errors import UsageError

FIXTURE = Path(__file__).resolve().parents[2] / "graphs/fixtures/optimum/llama/model.onnx"


def test_specs_parse_to_their_parts() -> None:
    assert parse_width("16@5 + 48@2") == "16@5+48@2"
    assert parse_width("3") == 3.0 and parse_width("2.5") == 2.5
    assert part_split("16@5+48@2", 64) == PartSplit((16, 48), (5, 2))
    assert part_split("16@4+16@3+32@1", 64).mean_bits == pytest.approx((64 + 48 + 32) / 64)
    assert width_label(4.0) == "4" and width_label("2.5") == "2.5" and width_label("16@5+48@2") == "16@5+48@2"


@pytest.mark.parametrize(
    "spec", ["16@5+40@2", "8@5+56@2", "16@9+48@2", "16@1+16@1+16@1+8@1+8@1", "5@16", "x"]
)
def test_specs_outside_the_format_are_refused(spec: str) -> None:
    with pytest.raises(UsageError, match="width"):
        part_split(parse_width(spec), 64)


def test_split_codec_puts_the_highest_scoring_channels_in_part_one() -> None:
    scores = np.zeros((2, 64))
    scores[0, [3, 9, 40, 41, 50, 51, 60, 61, 0, 1, 2, 4, 5, 6, 7, 8]] = 10.0
    scores[1, 48:] = 5.0
    built = build_cache_codec("16@5+48@2", 0, "key", 64, 2, norm_correction=True, scores_HD=scores)
    assert built.channel_source == "calibration"
    assert built.channels is not None
    assert built.channels[0][0] == sorted([3, 9, 40, 41, 50, 51, 60, 61, 0, 1, 2, 4, 5, 6, 7, 8])
    assert built.channels[1][0] == list(range(48, 64))
    assert built.codec.row_bytes == (16 * 5 + 48 * 2) // 8 + 2 * 2
    assert built.codec.rotation.shape == (2, 64, 64)


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture graphs/fixtures/optimum/llama is not committed")
def test_convert_with_part_specs_records_and_runs_them(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    options = ConvertOptions(key_bits="16@4+16@2", value_bits=8.0, norm_correction=True)
    result = convert_model(FIXTURE, tmp_path / "m.onnx", options, log=lambda _: None)
    model = onnx.load(str(result.output), load_external_data=False)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["tqexport.config"])
    for rec in meta["layers"].values():
        assert rec["key"]["width"] == "16@4+16@2"
        assert rec["key"]["part_sizes"] == [16, 16] and rec["key"]["bits"] == [4, 2]
        assert rec["key"]["row_bytes"] == (16 * 4 + 16 * 2) // 8 + 2 * 2
        assert rec["value"]["width"] == "8" and rec["value"]["row_bytes"] == 32 * 8 // 8 + 2
    attrs = {
        a.name: list(a.ints)
        for n in model.graph.node
        if n.op_type == "TQAttention"
        for a in n.attribute
        if a.name in ("k_bits", "k_part_sizes")
    }
    assert attrs == {"k_bits": [4, 2], "k_part_sizes": [16, 16]}
    from tqexport.eval.session import DecodeSession

    plain = ConvertOptions(key_bits=2.0, value_bits=8.0, norm_correction=True)
    plain_path = convert_model(FIXTURE, tmp_path / "plain" / "m.onnx", plain, log=lambda _: None).output
    ids = np.random.default_rng(3).integers(3, 150, (1, 12))
    logits = {}
    for name, path in (("original", FIXTURE), ("split", result.output), ("plain", plain_path)):
        session = DecodeSession.from_path(path)
        steps = [session.prefill(ids[:, :8], np.ones((1, 8), np.int64))[:, -1]]
        steps += [session.step(ids[:, t]) for t in range(8, 12)]
        logits[name] = np.stack(steps, axis=1)
    # the ORT ops decode the split cache, and its 4-bit outlier part brings keys closer than 2 bits everywhere
    error = {name: np.abs(logits[name] - logits["original"]).mean() for name in ("split", "plain")}
    assert np.isfinite(logits["split"]).all()
    assert 0 < error["split"] < error["plain"]
