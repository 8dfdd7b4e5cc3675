"""Whole conversions of the builder models: pass counts, metadata, refusals, and logits vs the original over a
32-step teacher-forced decode (batch 2, left padding), with the NumPy reference ops as the referee."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.passes.builders import TinySpec, build_vision_model
from tests.passes.referee import ConvertedRunner, OriginalRunner, teacher_forced_logits
from tqexport.converter import ConvertOptions, convert_model
from tqexport.errors import NotConvertibleError
from tqexport.passes.hadamard_promises import broken_promises

PREFILL, STEPS, PAD = 6, 32, [0, 3]
FORMS = [
    TinySpec(form="eager"),
    TinySpec(form="sdpa", scale_from_shape=True),
    TinySpec(form="bool_where", k_transpose="reshape3d"),
    TinySpec(form="opt"),
    TinySpec(form="onnx_attention"),
    TinySpec(form="eager", softcap=30.0, sliding_window=4, past_shape_reader=True),
]
# Nodes the cleanup removes per form (2 layers: attention internals, GQA repeats, cache Concats) and Shape
# reads of a cache rewritten to the logical shape (past_shape_reader: one per distinct mask).
EXPECTED = {
    "eager": (54, 0),
    "sdpa": (72, 0),
    "bool_where": (74, 0),
    "opt": (52, 0),
    "onnx_attention": (0, 0),
    "eager-cap30.0": (60, 2),
}


def _quiet(_line: str) -> None:
    pass


def _decode(runner, spec: TinySpec) -> np.ndarray:
    ids = np.random.default_rng(1).integers(0, spec.vocab, (2, PREFILL + STEPS))
    return teacher_forced_logits(runner, ids, PAD, PREFILL, STEPS)


@pytest.mark.parametrize("spec", FORMS, ids=lambda s: f"{s.form}-cap{s.softcap}-win{s.sliding_window}")
def test_counts_and_metadata(spec: TinySpec, save_tiny, tmp_path: Path) -> None:
    source = save_tiny(spec)
    result = convert_model(source, tmp_path / "out.onnx", ConvertOptions(), log=_quiet)
    cleanup, cache_shapes = EXPECTED[spec.form + (f"-cap{spec.softcap}" if spec.softcap else "")]
    assert result.counts == {
        "attention_read": 2,
        "kv_write": 4,
        "cache_io": 4,
        "cleanup": cleanup,
        "cache_shapes": cache_shapes,
        "verify_cache_uses": 8,
        "trt_plugin_fields": 0,
        "trt_promises": 0,
    }
    model = onnx.load(result.output)
    config = json.loads({p.key: p.value for p in model.metadata_props}["tqexport.config"])
    assert config["format_version"] == 1 and sorted(config["layers"]) == ["0", "1"]
    seeds = {config["layers"][layer][kind]["seed"] for layer in ("0", "1") for kind in ("key", "value")}
    assert len(seeds) == 4, "each layer and cache needs its own seed"
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("TQQuantize") == 4 and ops.count("TQAttention") == 2
    assert "Softmax" not in ops and "Attention" not in ops
    cache = next(v for v in model.graph.input if v.name == "past_key_values.0.key")
    assert cache.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [v.name for v in model.graph.input][:6] == [v.name for v in onnx.load(source).graph.input][:6]


@pytest.mark.slow
@pytest.mark.parametrize("spec", FORMS, ids=lambda s: f"{s.form}-cap{s.softcap}-win{s.sliding_window}")
def test_8bit_logits_match_original(spec: TinySpec, save_tiny, tmp_path: Path) -> None:
    source = save_tiny(spec)
    out = convert_model(source, tmp_path / "out.onnx", ConvertOptions(key_bits=8, value_bits=8), log=_quiet)
    original = _decode(OriginalRunner(onnx.load(source)), spec)
    converted = _decode(ConvertedRunner(onnx.load(out.output)), spec)
    error = np.abs(original - converted).max() / np.abs(original).max()
    assert error < 1e-2, f"8-bit K/V: max |logit diff| = {error:.4f} x max|logit|"


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        ConvertOptions(key_bits=4, value_bits=4),
        ConvertOptions(preset="3.5"),
        ConvertOptions(preset="2.5", rotation="dense"),
        ConvertOptions(key_bits=4, value_bits=4, sink_tokens=2, recent_window=4),
    ],
    ids=["4bit", "3.5", "2.5-dense", "4bit-window"],
)
def test_low_bit_runs_and_stays_finite(options: ConvertOptions, save_tiny, tmp_path: Path) -> None:
    spec = TinySpec(form="sdpa", softcap=30.0, sliding_window=4)
    source = save_tiny(spec)
    out = convert_model(source, tmp_path / "out.onnx", options, log=_quiet)
    original = _decode(OriginalRunner(onnx.load(source)), spec)
    converted = _decode(ConvertedRunner(onnx.load(out.output)), spec)
    assert np.isfinite(converted).all()
    error = np.abs(original - converted).max() / np.abs(original).max()
    assert error < 0.5, f"{error:.3f}: low-bit output is no longer related to the original"


def test_window_io_follows_format_section_9(save_tiny, tmp_path: Path) -> None:
    source = save_tiny(TinySpec())
    out = convert_model(
        source, tmp_path / "o.onnx", ConvertOptions(sink_tokens=2, recent_window=4), log=_quiet
    )
    model = onnx.load(out.output)
    inputs = [v.name for v in model.graph.input]
    outputs = [v.name for v in model.graph.output]
    assert inputs[-4:] == [f"past_key_values.{i}.{k}_window" for i in (0, 1) for k in ("key", "value")]
    assert outputs[-4:] == [f"present.{i}.{k}_window" for i in (0, 1) for k in ("key", "value")]
    quantize = next(node for node in model.graph.node if node.op_type == "TQQuantize")
    assert list(quantize.output)[1].endswith("_window")


def test_outlier_split_uses_projection_weights(save_tiny, tmp_path: Path) -> None:
    source = save_tiny(TinySpec(head_dim=64, num_q_heads=2, num_kv_heads=1))
    result = convert_model(source, tmp_path / "o.onnx", ConvertOptions(preset="2.5"), log=_quiet)
    assert any("k_proj/v_proj weight" in note for note in result.notes)
    config = json.loads({p.key: p.value for p in onnx.load(result.output).metadata_props}["tqexport.config"])
    key = config["layers"]["0"]["key"]
    assert key["part_sizes"] == [16, 48] and key["bits"] == [4, 2] and key["bits_per_element"] == 2.5
    weight_cols = _k_proj_column_norms(onnx.load(source))
    assert key["channels"][0][0] == sorted(np.argsort(-weight_cols)[:16].tolist())


def _k_proj_column_norms(model: onnx.ModelProto) -> np.ndarray:
    from onnx import numpy_helper

    concat = next(n for n in model.graph.node if n.op_type == "Concat" and n.output[0] == "present.0.key")
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer[concat.input[1]]
    while node.op_type != "MatMul":
        node = producer[node.input[0]]
    weight = next(t for t in model.graph.initializer if t.name == node.input[1])
    return np.linalg.norm(numpy_helper.to_array(weight), axis=0)


def test_trt_target_fills_plugin_fields(save_tiny, tmp_path: Path) -> None:
    source = save_tiny(TinySpec())
    result = convert_model(source, tmp_path / "o.onnx", ConvertOptions(target="trt"), log=_quiet)
    assert result.counts["trt_plugin_fields"] == 6
    model = onnx.load(result.output)
    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.domain != "tqexport":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"tqexport"
        assert len(node.input) == (7 if node.op_type == "TQQuantize" else 12)
        assert all(name for name in node.input)
        absent = [initializers[n] for n in node.input if n.startswith("tq_absent_")]
        assert absent and all(list(t.dims) == [0] for t in absent)


PROMISE_ATTRS = {
    "TQQuantize": ("constant_hadamard",),
    "TQAttention": ("k_constant_hadamard", "v_constant_hadamard"),
}


def _promises(model: onnx.ModelProto) -> list[int]:
    values = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        values += [attrs[name] for name in PROMISE_ATTRS.get(node.op_type, ()) if name in attrs]
    return values


@pytest.mark.parametrize(("rotation", "expected"), [("hadamard", 1), ("dense", 0)])
def test_trt_target_promises_only_its_hadamard_rotations(
    save_tiny, tmp_path: Path, rotation: str, expected: int
) -> None:
    """docs/format.md 8.3: 1 on every op whose rotation initializers are Sylvester-Hadamard (D = 32 here), 0
    for dense rotations; the file passes the check `tqexport build` runs, and a sign flip fails it."""
    source = save_tiny(TinySpec())
    options = ConvertOptions(target="trt", rotation=rotation)
    result = convert_model(source, tmp_path / "o.onnx", options, log=_quiet)
    model = onnx.load(result.output)
    assert _promises(model) == [expected] * 8  # 2 layers x (K and V quantize, attention's K and V)
    assert result.counts["trt_promises"] == 8 * expected
    assert broken_promises(model.graph) == []
    if expected:
        attention = next(n for n in model.graph.node if n.op_type == "TQAttention")
        tensor = next(t for t in model.graph.initializer if t.name == attention.input[6])
        values = numpy_helper.to_array(tensor).copy()
        values.reshape(-1)[40] = -values.reshape(-1)[40]
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
        problems = broken_promises(model.graph)
        # the V quantize node and the attention read the same initializer: both promises break
        assert len(problems) == 2
        assert f"constant_hadamard = 1 but input 2 {tensor.name!r} is not Sylvester-Hadamard" in problems[0]
        assert f"v_constant_hadamard = 1 but input 6 {tensor.name!r} is not Sylvester-Hadamard" in problems[1]


def test_ort_target_writes_no_promise_attributes(save_tiny, tmp_path: Path) -> None:
    source = save_tiny(TinySpec())
    result = convert_model(source, tmp_path / "o.onnx", ConvertOptions(), log=_quiet)
    assert _promises(onnx.load(result.output)) == [] and result.counts["trt_promises"] == 0


def test_refusal_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "vision.onnx"
    onnx.save(build_vision_model(), source)
    with pytest.raises(NotConvertibleError, match="no KV-cache graph inputs"):
        convert_model(source, tmp_path / "o.onnx", ConvertOptions(), log=_quiet)
    assert not (tmp_path / "o.onnx").exists()


def test_partial_conversion_needs_the_flag(save_tiny, tmp_path: Path) -> None:
    source = save_tiny(TinySpec())
    model = onnx.load(source)
    attention_nodes = [n for n in model.graph.node if n.op_type == "Softmax"]
    attention_nodes[1].attribute[0].i = 1  # layer 1: Softmax over the wrong axis
    onnx.save(model, source)
    with pytest.raises(NotConvertibleError, match="layer 1: Softmax axis 1"):
        convert_model(source, tmp_path / "o.onnx", ConvertOptions(), log=_quiet)
    assert not (tmp_path / "o.onnx").exists()
    result = convert_model(source, tmp_path / "o.onnx", ConvertOptions(allow_partial=True), log=_quiet)
    assert result.converted_layers == [0] and result.skipped_layers == [1]
    converted = onnx.load(result.output)
    types = {v.name: v.type.tensor_type.elem_type for v in converted.graph.input}
    assert types["past_key_values.0.key"] == onnx.TensorProto.UINT8
    assert types["past_key_values.1.key"] == onnx.TensorProto.FLOAT


def test_buffer_mode_is_recorded(save_tiny, tmp_path: Path) -> None:
    """Buffer mode converts (tests/passes/test_buffer_mode.py decodes it); the metadata records it."""
    result = convert_model(
        save_tiny(TinySpec()), tmp_path / "o.onnx", ConvertOptions(cache_mode="buffer"), log=_quiet
    )
    model = onnx.load(result.output)
    config = json.loads({p.key: p.value for p in model.metadata_props}["tqexport.config"])
    assert config["cache_mode"] == "buffer"


@pytest.mark.slow
@pytest.mark.parametrize("form", ["eager", "onnx_attention"])
def test_float16_model_keeps_float16_windows_and_output(form: str, save_tiny, tmp_path: Path) -> None:
    spec = TinySpec(form=form, dtype="float16")
    source = save_tiny(spec)
    options = ConvertOptions(key_bits=8, value_bits=8, sink_tokens=1, recent_window=2)
    out = convert_model(source, tmp_path / "out.onnx", options, log=_quiet)
    model = onnx.load(out.output)
    window = next(v for v in model.graph.input if v.name == "past_key_values.0.key_window")
    assert window.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    original = _decode(OriginalRunner(onnx.load(source)), spec).astype(np.float64)
    converted = _decode(ConvertedRunner(model), spec).astype(np.float64)
    error = np.abs(original - converted).max() / np.abs(original).max()
    assert error < 1e-2, f"float16 8-bit: {error:.4f} x max|logit|"


def test_cache_read_inside_an_if_branch_is_refused(save_tiny, tmp_path: Path) -> None:
    model = onnx.load(save_tiny(TinySpec(num_layers=1)))
    branch = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["past_key_values.0.key"], ["peek"])],
        "peek_branch",
        [],
        [onnx.helper.make_tensor_value_info("peek", onnx.TensorProto.FLOAT, None)],
    )
    cond = onnx.helper.make_tensor_value_info("use_cache_branch", onnx.TensorProto.BOOL, [])
    model.graph.input.append(cond)
    model.graph.node.append(
        onnx.helper.make_node("If", ["use_cache_branch"], ["peeked"], then_branch=branch, else_branch=branch)
    )
    model.graph.output.append(onnx.helper.make_tensor_value_info("peeked", onnx.TensorProto.FLOAT, None))
    path = tmp_path / "if.onnx"
    onnx.save(model, path)
    with pytest.raises(NotConvertibleError, match="inside a subgraph"):
        convert_model(path, tmp_path / "o.onnx", ConvertOptions(), log=_quiet)


def test_calibration_scores_choose_the_outlier_channels(save_tiny, tmp_path: Path) -> None:
    spec = TinySpec(head_dim=64, num_q_heads=2, num_kv_heads=1, num_layers=1)
    source = save_tiny(spec)
    scores = np.zeros((1, 64))
    scores[0, 48:] = 1.0  # channels 48..63 are the outliers
    calibration = tmp_path / "cal.json"
    calibration.write_text(json.dumps({"layers": {"0": {"key": scores.tolist(), "value": scores.tolist()}}}))
    options = ConvertOptions(preset="3.5", calibration=str(calibration))
    result = convert_model(source, tmp_path / "o.onnx", options, log=_quiet)
    config = json.loads({p.key: p.value for p in onnx.load(result.output).metadata_props}["tqexport.config"])
    key = config["layers"]["0"]["key"]
    assert key["outlier_channels"] == "calibration"
    assert key["channels"][0][0] == list(range(48, 64)) and key["bits"] == [5, 3]


def test_output_over_the_input_is_refused(save_tiny) -> None:
    from tqexport.errors import UsageError

    source = save_tiny(TinySpec())
    with pytest.raises(UsageError, match="overwrite the input"):
        convert_model(source, source, ConvertOptions(), log=_quiet)


def test_trt_absent_windows_take_the_cache_dtype(save_tiny, tmp_path: Path) -> None:
    source = save_tiny(TinySpec(dtype="float16", num_layers=1))
    result = convert_model(source, tmp_path / "o.onnx", ConvertOptions(target="trt"), log=_quiet)
    model = onnx.load(result.output)
    initializers = {t.name: t for t in model.graph.initializer}
    attention = next(n for n in model.graph.node if n.op_type == "TQAttention")
    assert initializers[attention.input[9]].data_type == onnx.TensorProto.FLOAT16  # k_window
    assert initializers[attention.input[8]].data_type == onnx.TensorProto.FLOAT  # k_qjl_matrix
    assert initializers[attention.input[11]].data_type == onnx.TensorProto.INT64  # past_lengths
