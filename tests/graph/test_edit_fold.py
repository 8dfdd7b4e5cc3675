"""Graph hygiene (cleanup, toposort, subgraph-aware uses) and the static scalar folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tqexport.graph import GraphIndex, cleanup, fold_constant, replace_subgraph, toposort
from tqexport.graph.fold import fold_scalar


def _vi(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _graph(nodes, inputs, outputs, inits=()):
    return helper.make_graph(nodes, "g", inputs, outputs, list(inits))


def test_cleanup_removes_dead_nodes_whatever_the_order() -> None:
    nodes = [
        helper.make_node("Relu", ["b"], ["y"], name="uses_b"),  # out of order on purpose
        helper.make_node("Neg", ["x"], ["b"], name="makes_b"),
        helper.make_node("Exp", ["x"], ["dead"], name="dead"),
    ]
    graph = _graph(
        nodes, [_vi("x", [2])], [_vi("y", [2])], [numpy_helper.from_array(np.ones(2, np.float32), "w")]
    )
    assert cleanup(graph) == 1
    assert [n.name for n in graph.node] == ["uses_b", "makes_b"]
    assert not graph.initializer  # unused initializer dropped
    toposort(graph)
    assert [n.name for n in graph.node] == ["makes_b", "uses_b"]


def test_subgraph_reads_keep_outer_nodes_alive() -> None:
    then_branch = _graph([helper.make_node("Identity", ["outer"], ["t"])], [], [_vi("t", [2])])
    else_branch = _graph([helper.make_node("Identity", ["x"], ["e"])], [], [_vi("e", [2])])
    nodes = [
        helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch, name="if"),
        helper.make_node("Neg", ["x"], ["outer"], name="feeds_branch"),
    ]
    graph = _graph(nodes, [_vi("x", [2]), _vi("cond", [], TensorProto.BOOL)], [_vi("y", [2])])
    assert cleanup(graph) == 0
    toposort(graph)
    assert [n.name for n in graph.node] == ["feeds_branch", "if"]
    index = GraphIndex(graph)
    assert [(use.node.name, use.index) for use in index.uses("outer")] == [("if", -1)]


def test_replace_subgraph_takes_over_boundary_names() -> None:
    nodes = [
        helper.make_node("Neg", ["x"], ["a"], name="old_a"),
        helper.make_node("Relu", ["a"], ["y"], name="r"),
    ]
    graph = _graph(nodes, [_vi("x", [2])], [_vi("y", [2])])
    replace_subgraph(graph, [helper.make_node("Abs", ["x"], ["a"], name="new_a")])
    toposort(graph)
    assert [n.op_type for n in graph.node] == ["Abs", "Relu"]


def test_toposort_names_the_missing_input() -> None:
    graph = _graph([helper.make_node("Relu", ["nowhere"], ["y"], name="r")], [], [_vi("y", [2])])
    with pytest.raises(ValueError, match="nowhere"):
        toposort(graph)


def _scale_model(head_dim) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Shape", ["q"], ["s"]),
        helper.make_node("Gather", ["s", "minus_one"], ["d"], axis=0),
        helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["df"], ["root"]),
        helper.make_node("Div", ["one", "root"], ["scale"]),
        helper.make_node("Mul", ["q", "scale"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(-1, np.int64), "minus_one"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    graph = _graph(nodes, [_vi("q", ["B", 4, "S", head_dim])], [_vi("y", ["B", 4, "S", head_dim])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_fold_scale_from_shape_with_symbolic_leading_dims() -> None:
    index = GraphIndex.build(_scale_model(64), Path("."))
    assert fold_scalar(index, "scale") == pytest.approx(0.125)


def test_fold_refuses_an_unknown_dim() -> None:
    index = GraphIndex.build(_scale_model("D"), Path("."))
    assert fold_constant(index, "scale") is None
