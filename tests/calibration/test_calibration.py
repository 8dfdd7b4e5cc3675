"""Calibration: the ONNX fake-quant equals the reference codec, budgets hold, results are deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tqexport.calibration.budget import StorageModel, allocate, mean_cost
from tqexport.calibration.fake_quant import enabled_feeds, fake_quant_nodes
from tqexport.codec import Codec, CodecConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "graphs/fixtures/optimum/llama/model.onnx"


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_onnx_fake_quant_matches_reference_codec(bits: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    d, heads = 64, 2
    codec = Codec.build(CodecConfig(head_dim=d, bits=(bits,), seed=5))
    graph = helper.make_graph(
        [], "fq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, heads, 9, d])], []
    )
    out = fake_quant_nodes(graph, "x", 0, "key", codec.rotation, TensorProto.FLOAT)
    graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, heads, 9, d]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    x = np.random.default_rng(bits).standard_normal((1, heads, 9, d)).astype(np.float32) * 3
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x, **enabled_feeds(0, "key", d, bits)})[0]
    want = codec.dequantize(codec.quantize(x))
    # float32 rotation products: agreement to float32 rounding of |x| ~ 3 * sqrt(d)
    assert np.max(np.abs(got - want)) < 1e-4 * np.max(np.abs(want))


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
    assert choice[(0, "key")] == 4  # the steepest curve gets the bits


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
        assert curve[2] > curve[4] > 0  # fewer bits, more divergence


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
        (int(layer), kind): rec[kind]["bits"][0]
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
