"""Calibration: the ONNX fake-quant equals the reference codec, budgets hold, results are deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tqexport.calibration.budget import StorageModel, allocate, mean_cost
from tqexport.calibration.fake_quant import codec_feeds, fake_quant_nodes
from tqexport.calibration.sensitivity import SensitivitySetup
from tqexport.codec import Codec, CodecConfig
from tqexport.converter.cache_codec import build_cache_codec

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "graphs/fixtures/optimum/llama/model.onnx"


def _fake_quant_session(d: int, heads: int, seq: int):
    ort = pytest.importorskip("onnxruntime")
    shape = [1, heads, seq, d]
    graph = helper.make_graph([], "fq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [])
    out = fake_quant_nodes(graph, "x", 0, "key", TensorProto.FLOAT)
    graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, shape))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "width, norm_correction",
    [("2", False), ("3", True), ("4", False), ("6", True), ("16@5+48@2", True), ("16@4+16@3+32@1", False)],
)
def test_onnx_fake_quant_matches_reference_codec(width: str, norm_correction: bool) -> None:
    d, heads, seq = 64, 2, 9
    rng = np.random.default_rng(len(width))
    scores = rng.random((heads, d))
    codec = build_cache_codec(
        width, 3, "key", d, heads, norm_correction=norm_correction, scores_HD=scores
    ).codec
    session = _fake_quant_session(d, heads, seq)
    x = rng.standard_normal((1, heads, seq, d)).astype(np.float32) * 3
    x[..., :4] *= 20  # outlier channels, so split parts have different norms
    got = session.run(None, {"x": x, **codec_feeds(0, "key", codec, np.ones((1, 1), bool))})[0]
    want = codec.dequantize(codec.quantize(x))
    # float32 rotation products: agreement to float32 rounding of |x| ~ 3 * sqrt(d)
    assert np.max(np.abs(got - want)) < 1e-4 * np.max(np.abs(want))
    assert np.max(np.abs(got - x)) > 1e-3 * np.max(np.abs(x))  # and it did quantize


def test_onnx_fake_quant_leaves_disabled_positions_exact() -> None:
    d, heads, seq = 64, 2, 9
    codec = Codec.build(CodecConfig(head_dim=d, bits=(2,), seed=1))
    session = _fake_quant_session(d, heads, seq)
    x = np.random.default_rng(0).standard_normal((1, heads, seq, d)).astype(np.float32)
    enable = np.array([False, True, True, True, True, True, True, False, False])[:, None]
    got = session.run(None, {"x": x, **codec_feeds(0, "key", codec, enable)})[0]
    want = codec.dequantize(codec.quantize(x))
    assert np.array_equal(got[:, :, ~enable[:, 0]], x[:, :, ~enable[:, 0]])
    assert np.max(np.abs(got[:, :, enable[:, 0]] - want[:, :, enable[:, 0]])) < 1e-4 * np.max(np.abs(want))


def test_sensitivity_setup_positions_mirror_sinks_and_window() -> None:
    quantized, scored = SensitivitySetup(sink_tokens=2, recent_window=3).positions(10)
    assert quantized.tolist() == [False, False, True, True, True, True, True, False, False, False]
    assert scored.tolist() == [False] * 7 + [True] * 3
    quantized, scored = SensitivitySetup(sink_tokens=1).positions(4)
    assert quantized.tolist() == [False, True, True, True] and scored.all()


def test_budget_is_respected_and_spent_where_kl_drops_most() -> None:
    sens = {
        (0, "key"): {2: 0.50, 3: 0.10, 4: 0.02},
        (0, "value"): {2: 0.05, 3: 0.04, 4: 0.03},
        (1, "key"): {2: 0.01, 3: 0.009, 4: 0.008},
    }
    storage = {k: StorageModel(head_dim=64, context=2048, sink_tokens=4, recent_window=32) for k in sens}
    for budget in (3.0, 3.5, 4.0, 4.6):
        if budget < mean_cost({k: 2 for k in sens}, storage):
            continue
        choice = allocate(sens, storage, budget)
        assert mean_cost(choice, storage) <= budget + 1e-9
    choice = allocate(sens, storage, mean_cost({(0, "key"): 4, (0, "value"): 2, (1, "key"): 2}, storage))
    assert choice == {(0, "key"): "4", (0, "value"): "2", (1, "key"): "2"}  # the steepest curve gets the bits


def _brute_force(sens, storage, budget):
    import itertools

    keys = sorted(sens)
    best = None
    for combo in itertools.product(*(sorted(sens[k]) for k in keys)):
        choice = dict(zip(keys, combo, strict=True))
        if mean_cost(choice, storage) <= budget + 1e-12:
            total = sum(sens[k][w] for k, w in choice.items())
            if best is None or total < best[0] - 1e-15:
                best = (total, choice)
    return best


def test_allocation_is_the_exact_optimum_over_mixed_widths() -> None:
    widths = ["2", "16@4+48@2", "3", "16@5+48@2", "4"]
    storage_model = StorageModel(head_dim=64, context=2304, sink_tokens=4, recent_window=32)
    rng = np.random.default_rng(7)
    for trial in range(6):
        sens = {}
        for k in [(0, "key"), (0, "value"), (1, "key"), (1, "value")]:
            # decreasing in cost but not convex, plus a noisy bump (as measured curves have)
            curve = np.sort(rng.random(len(widths)))[::-1] * rng.random()
            curve[trial % len(widths)] *= 1.5
            sens[k] = dict(zip(widths, curve.tolist(), strict=True))
        storage = {k: storage_model for k in sens}
        for budget in (2.6, 2.9, 3.0, 3.3, 3.8):
            choice = allocate(sens, storage, budget)
            assert mean_cost(choice, storage) <= budget
            total = sum(sens[k][w] for k, w in choice.items())
            best_total, _ = _brute_force(sens, storage, budget)
            assert total == pytest.approx(best_total, abs=1e-12)
            assert allocate(sens, storage, budget) == choice  # deterministic


def test_spec_widths_cost_their_row_bytes() -> None:
    storage = StorageModel(head_dim=64, context=2304, sink_tokens=4, recent_window=32)
    # 16 * 5 + 48 * 2 code bits + two float16 norms = 26 bytes, the same row as 3 bits
    assert storage.row_bytes("16@5+48@2") == storage.row_bytes(3) == 26
    assert storage.row_bytes("16@4+48@2") == 24 and storage.row_bytes("2.5") == 24
    assert storage.cost("2") == pytest.approx((2268 * 18 * 8 + 36 * 16 * 64) / (2304 * 64))


def test_budget_below_the_cheapest_option_is_refused() -> None:
    from tqexport.errors import UsageError

    sens = {(0, "key"): {2: 0.1, 4: 0.0}}
    with pytest.raises(UsageError, match="bits-budget"):
        allocate(sens, {(0, "key"): StorageModel(head_dim=64, context=128)}, 2.0)


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture graphs/fixtures/optimum/llama is not committed")
def test_capture_and_sensitivity_are_deterministic() -> None:
    pytest.importorskip("onnxruntime")
    from tqexport.calibration.capture import capture_stats
    from tqexport.calibration.sensitivity import measure_sensitivity

    ids = np.random.default_rng(0).integers(3, 150, 48)
    a, b = capture_stats(FIXTURE, ids), capture_stats(FIXTURE, ids)
    assert a.rms.keys() == b.rms.keys() and all(np.array_equal(a.rms[k], b.rms[k]) for k in a.rms)
    s1 = measure_sensitivity(FIXTURE, ids, (2, 4))
    s2 = measure_sensitivity(FIXTURE, ids, (2, 4))
    assert s1 == s2
    for curve in s1.values():
        assert curve["2"] > curve["4"] > 0  # fewer bits, more divergence
    windowed = SensitivitySetup(norm_correction=True, sink_tokens=2, recent_window=4, sequence_tokens=24)
    s3 = measure_sensitivity(FIXTURE, ids, (2, "16@4+16@2"), setup=windowed)
    assert s3 == measure_sensitivity(FIXTURE, ids, (2, "16@4+16@2"), setup=windowed)
    assert all(curve["2"] > 0 and curve["16@4+16@2"] > 0 for curve in s3.values())
    assert s3 != {k: {"2": v["2"], "16@4+16@2": v["4"]} for k, v in s1.items()}


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture graphs/fixtures/optimum/llama is not committed")
def test_convert_with_bits_budget_records_an_allocation_within_budget(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import json

    from tqexport.converter import ConvertOptions, convert_model

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(" ".join(str(i) for i in np.random.default_rng(1).integers(3, 150, 96)))
    options = ConvertOptions(
        calibration=str(ids_file), bits_budget=3.5, sink_tokens=2, recent_window=4, budget_context=1024
    )
    result = convert_model(FIXTURE, tmp_path / "m.onnx", options, log=lambda _: None)
    model = onnx.load(str(result.output), load_external_data=False)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["tqexport.config"])
    allocation = meta["bit_allocation"]
    assert allocation["achieved_bits_per_element"] <= 3.5
    chosen = {
        (int(layer), kind): rec[kind]["width"]
        for layer, rec in meta["layers"].items()
        for kind in ("key", "value")
    }
    storage = StorageModel(head_dim=32, context=1024, sink_tokens=2, recent_window=4)
    assert mean_cost(chosen, {k: storage for k in chosen}) == pytest.approx(
        allocation["achieved_bits_per_element"], abs=1e-4
    )
    assert all(rec["key"]["outlier_channels"] == "n/a (one part)" for rec in meta["layers"].values())


def test_bits_budget_without_calibration_text_is_refused(tmp_path: Path) -> None:
    from tqexport.converter import ConvertOptions, convert_model
    from tqexport.errors import UsageError

    with pytest.raises(UsageError, match="--bits-budget needs --calibration"):
        convert_model(FIXTURE, tmp_path / "m.onnx", ConvertOptions(bits_budget=3.0), log=lambda _: None)
