"""GroupQueryAttention unfusing (tqexport/passes/group_query_attention.py).

Oracle: ONNX Runtime's own com.microsoft::GroupQueryAttention kernel. A one-node model per variant (packed or
separate q/k/v, rotary halves / interleaved / partial / none, local window, softcap, sliding_window_cache,
MHA, explicit scale) runs through a right-padded prefill and cached steps, once as is and once unfused; the
outputs of every real token must agree to float32 rounding. Unsupported variants are refused with their
reason, and `tqexport inspect` reports the form, heads, D, softcap and window.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tqexport.converter import ConvertOptions, convert_model, inspect_model
from tqexport.errors import NotConvertibleError
from tqexport.graph.model_io import load_model
from tqexport.passes.group_query_attention import GQA_FORM, unfuse_group_query_attention

catalog = pytest.importorskip("graphs.catalog")


@dataclass(frozen=True)
class GqaSpec:
    num_heads: int = 4
    kv_num_heads: int = 2
    head_dim: int = 32
    packed: bool = True
    rotary: str = "half"  # "half", "interleaved" or "none"
    rotary_dim: int = 32
    window: int = -1
    softcap: float = 0.0
    scale: float = 0.0
    sliding_window_cache: bool = False
    attrs: dict = field(default_factory=dict)  # extra node attributes
    extra_inputs: dict = field(default_factory=dict)  # slot -> numpy initializer
    seqlens_is_input: bool = False  # seqlens_k as a graph input instead of ReduceSum(attention_mask) - 1


def gqa_model(spec: GqaSpec) -> onnx.ModelProto:
    """One GroupQueryAttention layer with genai's seqlens_k / total_sequence_length arithmetic."""
    hq, hkv, d = spec.num_heads, spec.kv_num_heads, spec.head_dim
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("query", f32, ["B", "S", (hq + 2 * hkv) * d if spec.packed else hq * d])
    ]
    if not spec.packed:
        inputs += [helper.make_tensor_value_info(n, f32, ["B", "S", hkv * d]) for n in ("key", "value")]
    inputs += [helper.make_tensor_value_info("attention_mask", i64, ["B", "T"])]
    inputs += [
        helper.make_tensor_value_info(f"past_key_values.0.{kind}", f32, ["B", hkv, "P", d])
        for kind in ("key", "value")
    ]
    outputs = [helper.make_tensor_value_info("out", f32, ["B", "S", hq * d])]
    outputs += [
        helper.make_tensor_value_info(f"present.0.{kind}", f32, ["B", hkv, "T", d])
        for kind in ("key", "value")
    ]
    nodes = [
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Constant", [], ["one_s"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("ReduceSum", ["attention_mask", "one"], ["tokens"], keepdims=0),
        helper.make_node("Sub", ["tokens", "one"], ["seqlens_i64"]),
        helper.make_node("Cast", ["seqlens_i64"], ["seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
        helper.make_node("Gather", ["mask_shape", "one_s"], ["total_i64"], axis=0),
        helper.make_node("Cast", ["total_i64"], ["total"], to=TensorProto.INT32),
    ]
    if spec.seqlens_is_input:
        nodes = nodes[:1] + nodes[5:]
        inputs.append(helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["B"]))
    initializers = []
    gqa_inputs = ["query", "key" if not spec.packed else "", "value" if not spec.packed else ""]
    gqa_inputs += ["past_key_values.0.key", "past_key_values.0.value", "seqlens_k", "total", "", ""]
    if spec.rotary != "none":
        half = spec.rotary_dim // 2
        angles = np.arange(64)[:, None] * (10000.0 ** (-np.arange(half) / half))[None]
        initializers += [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos_cache")]
        initializers += [numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin_cache")]
        gqa_inputs[7:9] = ["cos_cache", "sin_cache"]
    for slot, value in spec.extra_inputs.items():
        gqa_inputs += [""] * (slot + 1 - len(gqa_inputs))
        gqa_inputs[slot] = f"extra_{slot}"
        initializers.append(numpy_helper.from_array(value, f"extra_{slot}"))
    attrs = dict(
        num_heads=hq,
        kv_num_heads=hkv,
        scale=spec.scale,
        softcap=spec.softcap,
        local_window_size=spec.window,
        do_rotary=int(spec.rotary != "none"),
        rotary_interleaved=int(spec.rotary == "interleaved"),
        **spec.attrs,
    )
    if spec.sliding_window_cache:
        attrs["sliding_window_cache"] = 1
    nodes.append(
        helper.make_node(
            "GroupQueryAttention",
            gqa_inputs,
            ["out", "present.0.key", "present.0.value"],
            name="gqa",
            domain="com.microsoft",
            **attrs,
        )
    )
    graph = helper.make_graph(nodes, "gqa", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", 22), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _decode(session, spec: GqaSpec, lengths: list[int], prefill: int, steps: int, capacity: int) -> list:
    """Right-padded prefill (row b's lengths[b] tokens first), then `steps` one-token steps; the outputs of
    real tokens, per step. Inputs are drawn from a fixed seed, so both models see the same ones."""
    rng = np.random.default_rng(7)
    batch, hq, hkv, d = len(lengths), spec.num_heads, spec.kv_num_heads, spec.head_dim
    past = {
        f"past_key_values.0.{k}": np.zeros((batch, hkv, capacity, d), np.float32) for k in ("key", "value")
    }
    mask = (np.arange(prefill)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
    real = []
    for step in range(steps + 1):
        width = prefill if step == 0 else 1
        if step:
            mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        hidden = (hq + 2 * hkv) * d if spec.packed else hq * d
        feeds = {
            "query": rng.standard_normal((batch, width, hidden)).astype(np.float32),
            "attention_mask": mask,
        }
        if not spec.packed:
            feeds.update(
                {n: rng.standard_normal((batch, width, hkv * d)).astype(np.float32) for n in ("key", "value")}
            )
        out, *present = session.run(["out", "present.0.key", "present.0.value"], {**feeds, **past})
        past = dict(zip(past, present, strict=True))
        real += [out[b, : lengths[b]] for b in range(batch)] if step == 0 else [out]
    return real


VARIANTS = {
    "packed-half-rotary": GqaSpec(),
    "separate-qkv": GqaSpec(packed=False),
    "interleaved-rotary": GqaSpec(rotary="interleaved"),
    "partial-rotary": GqaSpec(rotary_dim=16),
    "no-rotary": GqaSpec(rotary="none"),
    "window-softcap": GqaSpec(window=3, softcap=5.0),
    "mha-scale": GqaSpec(kv_num_heads=4, scale=0.3),
    "sliding-window-cache": GqaSpec(window=3, sliding_window_cache=True),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_unfused_matches_the_ort_kernel(name: str) -> None:
    spec = VARIANTS[name]
    model = gqa_model(spec)
    unfused = gqa_model(spec)
    records = unfuse_group_query_attention(unfused)
    assert [r.reason for r in records] == [""]
    assert not any(node.domain == "com.microsoft" for node in unfused.graph.node)
    # ORT refuses a right-padded prompt on a sliding_window_cache layer, and a capacity below the window.
    lengths = [5, 5] if spec.sliding_window_cache else [5, 3]
    expected = _decode(_session(model), spec, lengths, 5, 6, capacity=4 if spec.sliding_window_cache else 0)
    got = _decode(_session(unfused), spec, lengths, 5, 6, capacity=0)
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, atol=2e-5, rtol=0)


REFUSED = {
    "smooth-softmax": (GqaSpec(attrs={"smooth_softmax": 1}), "smooth_softmax=1"),
    "bidirectional": (GqaSpec(attrs={"causal": 0}), "causal=0"),
    "attention-bias": (GqaSpec(extra_inputs={10: np.zeros((1, 1, 1, 1), np.float32)}), "attention_bias"),
    "head-sink": (GqaSpec(extra_inputs={11: np.zeros(4, np.float32)}), "head_sink"),
    "position-ids": (GqaSpec(extra_inputs={9: np.zeros((1, 1), np.int64)}), "position_ids"),
    "seqlens-input": (GqaSpec(seqlens_is_input=True), "seqlens_k is not ReduceSum(attention_mask"),
    "quantized-cache": (GqaSpec(attrs={"kv_cache_bit_width": 8}), "KV-cache quantization"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_unsupported_variant_is_refused_with_reason(name: str, tmp_path: Path) -> None:
    spec, reason = REFUSED[name]
    path = tmp_path / "model.onnx"
    onnx.save(gqa_model(spec), path)
    layer = inspect_model(path)["layers"][0]
    assert not layer["converts"]
    assert "com.microsoft::GroupQueryAttention" in layer["reason"] and reason in layer["reason"]
    with pytest.raises(NotConvertibleError, match="GroupQueryAttention"):
        convert_model(path, tmp_path / "out.onnx", ConvertOptions(), log=lambda _line: None)
    assert not (tmp_path / "out.onnx").exists()


def test_refused_layer_leaves_the_node_and_the_others_convert(tmp_path: Path) -> None:
    """genai/llama with smooth_softmax on layer 0 only: layer 0 is refused, layer 1 still unfuses."""
    fx = catalog.fixture("genai", "llama")
    model = load_model(fx.path)
    gqa = [node for node in model.graph.node if node.op_type == "GroupQueryAttention"]
    gqa[0].attribute.append(helper.make_attribute("smooth_softmax", 1))
    edited = fx.path.parent / f".{tmp_path.name}.onnx"  # beside model.onnx.data
    onnx.save(model, edited)
    try:
        report = inspect_model(edited)
        assert [layer["converts"] for layer in report["layers"]] == [False, True]
        assert "smooth_softmax=1" in report["layers"][0]["reason"]
        with pytest.raises(NotConvertibleError, match="smooth_softmax"):
            convert_model(edited, tmp_path / "out.onnx", ConvertOptions(), log=lambda _line: None)
    finally:
        edited.unlink()


def test_inspect_reports_form_heads_softcap_window() -> None:
    fx = catalog.fixture("genai", "gemma2")
    report = inspect_model(fx.path)
    assert report["convertible_layers"] == 2
    sliding, full = report["layers"]
    for layer in (sliding, full):
        assert layer["attention_form"] == GQA_FORM
        assert (layer["num_q_heads"], layer["num_kv_heads"], layer["head_dim"]) == (4, 2, 32)
        assert layer["softcap"] == pytest.approx(50.0)
        assert layer["group_query_attention"]["rotary"] == "half"
    assert sliding["group_query_attention"]["local_window_size"] == 8
    assert sliding["group_query_attention"]["sliding_window_cache"] is True
    assert sliding["window"].startswith("local_window_size=8")
    assert full["group_query_attention"]["local_window_size"] == -1 and full["window"] == "none"


def test_sliding_window_cache_layer_gets_full_length_dims() -> None:
    """The window-sized cache becomes a full-length one: its token dim takes the full layers' name."""
    model = load_model(catalog.fixture("genai", "gemma2").path)
    unfuse_group_query_attention(model)
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.input, *model.graph.output]
    }
    assert (
        dims["past_key_values.0.key"]
        == dims["past_key_values.1.key"]
        == ["batch_size", 2, "past_sequence_length", 32]
    )
    assert dims["present.0.value"] == ["batch_size", 2, "total_sequence_length", 32]


def test_spec_variants_differ() -> None:
    """Guard for the oracle: the variants really change the kernel's output (a window that never bites, or a
    softcap that never caps, would make the comparison above vacuous)."""
    base = _decode(_session(gqa_model(GqaSpec())), GqaSpec(), [5, 3], 5, 6, capacity=0)
    for spec in (
        replace(GqaSpec(), window=3),
        replace(GqaSpec(), softcap=1.0),
        replace(GqaSpec(), rotary="interleaved"),
    ):
        other = _decode(_session(gqa_model(spec)), spec, [5, 3], 5, 6, capacity=0)
        assert max(np.abs(a - b).max() for a, b in zip(base, other, strict=True)) > 1e-2


def test_calibration_taps_the_unfused_keys() -> None:
    """`tqexport calibrate` on a genai graph: the per-channel RMS of the new K equals that of the original's
    present K after the same prefill (GroupQueryAttention writes post-RoPE K there)."""
    from tqexport.calibration.capture import capture_stats

    fx = catalog.fixture("genai", "llama")
    ids = np.random.default_rng(0).integers(3, 150, 24)
    stats = capture_stats(fx.path, ids)
    session = ort.InferenceSession(str(fx.path), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, fx.num_kv_heads, 0, fx.head_dim), np.float32)
    feeds = {"input_ids": ids[None], "attention_mask": np.ones((1, ids.size), np.int64)}
    feeds.update({name: empty for layer in fx.cache_inputs for name in layer})
    present = session.run(["present.1.key"], feeds)[0].astype(np.float64)
    np.testing.assert_allclose(stats.rms[(1, "key")], np.sqrt(np.mean(present**2, axis=(0, 2))), rtol=1e-5)
