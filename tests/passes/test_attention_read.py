"""Attention-read rule: each form matches with the right scale, softcap and mask; near-misses say why."""

from __future__ import annotations

import math
from pathlib import Path

import onnx
import pytest

from tests.passes.builders import TinySpec, build_tiny_llm
from tqexport.graph.index import GraphIndex
from tqexport.passes.layers import analyze

SCALE = 1.0 / math.sqrt(32)

# (spec, expected form, expected scale, mask kind)
VARIANTS = [
    (TinySpec(form="eager"), "eager", SCALE, "additive"),
    (TinySpec(form="sdpa"), "decomposed-sdpa", SCALE, "additive"),
    (TinySpec(form="bool_where"), "eager", SCALE, "bool"),
    (TinySpec(form="opt"), "eager", 1.0, "additive"),  # scale folded into q_proj: stays in the graph
    (TinySpec(form="onnx_attention"), "onnx-attention", SCALE, "bool"),
    (TinySpec(form="eager", k_transpose="reshape3d"), "eager", SCALE, "additive"),
    (TinySpec(form="eager", scale_from_shape=True), "eager", SCALE, "additive"),
    (TinySpec(form="sdpa", scale_from_shape=True), "decomposed-sdpa", SCALE, "additive"),
    (TinySpec(form="eager", num_kv_heads=4), "eager", SCALE, "additive"),  # MHA: no GQA repeat
    (TinySpec(form="eager", softcap=30.0, sliding_window=4), "eager", SCALE, "additive"),
    (TinySpec(form="onnx_attention", softcap=30.0), "onnx-attention", SCALE, "bool"),
]


def _analyze(model: onnx.ModelProto):
    return analyze(GraphIndex.build(model, Path(".")))


@pytest.mark.parametrize("spec,form,scale,mask_kind", VARIANTS, ids=lambda v: str(v)[:60])
def test_every_form_matches(spec: TinySpec, form: str, scale: float, mask_kind: str) -> None:
    analysis = _analyze(build_tiny_llm(spec))
    assert analysis.all_convertible, [layer.reason() for layer in analysis.layers]
    for layer in analysis.layers:
        read = layer.attention
        assert read.form == form
        assert read.scale == pytest.approx(scale, rel=1e-6)
        assert read.softcap == pytest.approx(spec.softcap)
        assert read.mask_kind == mask_kind
        assert read.num_q_heads == spec.num_q_heads
        assert read.gqa_repeat == (spec.num_kv_heads < spec.num_q_heads and form != "onnx-attention")


def test_sliding_window_layers_keep_their_own_mask() -> None:
    analysis = _analyze(build_tiny_llm(TinySpec(num_layers=4, sliding_window=4)))
    masks = [layer.attention.mask for layer in analysis.layers]
    assert masks[0] == masks[2] and masks[1] == masks[3] and masks[0] != masks[1]
    assert analysis.layers[1].mask_shared_with == [3]


def _find(model: onnx.ModelProto, op_type: str) -> onnx.NodeProto:
    return next(node for node in model.graph.node if node.op_type == op_type)


def test_softcap_after_mask_is_refused() -> None:
    model = build_tiny_llm(TinySpec(num_layers=1, softcap=30.0))
    # Move the mask Add before the softcap: Div reads the Add output, the Add reads the raw scores.
    tanh = _find(model, "Tanh")
    div = next(n for n in model.graph.node if n.output[0] == tanh.input[0])
    cap_mul = next(n for n in model.graph.node if tanh.output[0] in n.input)
    add = next(n for n in model.graph.node if n.op_type == "Add" and cap_mul.output[0] in n.input)
    scores = div.input[0]
    add.input[list(add.input).index(cap_mul.output[0])] = scores
    softmax = _find(model, "Softmax")
    div.input[0] = add.output[0]
    softmax.input[0] = cap_mul.output[0]
    layer = _analyze(model).layers[0]
    assert not layer.convertible
    assert "softcap after the mask" in layer.reason()


def test_is_causal_attention_is_refused() -> None:
    model = build_tiny_llm(TinySpec(num_layers=1, form="onnx_attention"))
    node = _find(model, "Attention")
    node.attribute.append(onnx.helper.make_attribute("is_causal", 1))
    layer = _analyze(model).layers[0]
    assert "is_causal=1" in layer.reason()


def test_missing_mask_is_refused() -> None:
    model = build_tiny_llm(TinySpec(num_layers=1, form="eager"))
    softmax = _find(model, "Softmax")
    add = next(n for n in model.graph.node if n.output[0] == softmax.input[0])
    softmax.input[0] = add.input[0]
    model.graph.node.remove(add)
    layer = _analyze(model).layers[0]
    assert "no attention mask" in layer.reason()


def test_non_constant_scale_is_refused() -> None:
    model = build_tiny_llm(TinySpec(num_layers=1, form="eager"))
    transpose = _find(model, "Transpose")
    while transpose.attribute[0].ints != [0, 1, 3, 2]:
        transpose = next(
            n
            for n in model.graph.node
            if n.op_type == "Transpose" and n is not transpose and list(n.attribute[0].ints) == [0, 1, 3, 2]
        )
    scores = next(n for n in model.graph.node if n.op_type == "MatMul" and transpose.output[0] in n.input)
    scale_mul = next(n for n in model.graph.node if n.op_type == "Mul" and scores.output[0] in n.input)
    scale_mul.input[1] = "attention_mask"  # a runtime tensor: cannot be folded into TQAttention's scale
    layer = _analyze(model).layers[0]
    assert not layer.convertible
    assert "non-constant" in layer.reason()
