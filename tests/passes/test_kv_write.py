"""KV-write rule: cache Concat -> TQQuantize. Positive cases over cache names/axes, negatives with reasons."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.passes.builders import TinySpec, build_tiny_llm
from tqexport.graph.index import GraphIndex
from tqexport.passes.kv_write import find_cache_anchors, match_kv_write
from tqexport.passes.layers import analyze
from tqexport.passes.match import Mismatch


def _index(model: onnx.ModelProto) -> GraphIndex:
    return GraphIndex.build(model, Path("."))


@pytest.mark.parametrize(
    "cache_prefix,present_prefix",
    [("past_key_values", "present"), ("past_key_values", "present_key_values"), ("past", "present")],
)
def test_cache_concat_matches_each_naming(cache_prefix: str, present_prefix: str) -> None:
    model = build_tiny_llm(TinySpec(cache_prefix=cache_prefix, present_prefix=present_prefix))
    index = _index(model)
    anchors = find_cache_anchors(index)
    assert [(a.layer, a.kind) for a in anchors] == [(0, "key"), (0, "value"), (1, "key"), (1, "value")]
    writes = [match_kv_write(index, anchor) for anchor in anchors]
    assert [w.present_output for w in writes] == [
        f"{present_prefix}.{layer}.{kind}" for layer in (0, 1) for kind in ("key", "value")
    ]
    assert all((w.num_kv_heads, w.head_dim) == (2, 32) for w in writes)


def test_past_shape_reads_are_recorded() -> None:
    index = _index(build_tiny_llm(TinySpec(past_shape_reader=True)))
    write = match_kv_write(index, find_cache_anchors(index)[0])
    assert [n.op_type for n in write.past_shape_uses] == ["Shape"]


def test_wrong_axis_is_refused_with_reason() -> None:
    model = build_tiny_llm(TinySpec())
    for node in model.graph.node:
        if node.op_type == "Concat" and node.output[0] == "present.0.key":
            node.attribute[0].i = 3
    index = _index(model)
    with pytest.raises(Mismatch, match="axis=3, expected 2 or -2"):
        match_kv_write(index, find_cache_anchors(index)[0])


def test_cache_removed_model_has_no_anchors() -> None:
    from tests.passes.builders import build_no_cache_model

    analysis = analyze(_index(build_no_cache_model()))
    assert analysis.layers == []
    assert "no KV-cache graph inputs" in analysis.problem


def test_contrib_gqa_owner_is_named() -> None:
    model = build_tiny_llm(TinySpec(num_layers=1))
    node = onnx.helper.make_node(
        "GroupQueryAttention",
        ["q", "k", "v", "past_key_values.0.key", "past_key_values.0.value"],
        ["o", "pk", "pv"],
        domain="com.microsoft",
        do_rotary=1,
    )
    model.graph.node.append(node)
    analysis = analyze(_index(model))
    assert not analysis.layers[0].convertible
    assert "com.microsoft::GroupQueryAttention" in analysis.layers[0].reason()
