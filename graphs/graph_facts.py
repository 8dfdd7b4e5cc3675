"""Facts read off an exported graph (onnx only, no weights loaded): cache I/O names per layer,
dtype, opsets, and the op path from a layer's past-key input to its attention scores.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper

_PAST_RE = re.compile(r"^past(?:_key_values)?[._](\d+)[._](key|value)$")
_PRESENT_RE = re.compile(r"^present(?:_key_values)?[._](\d+)[._](key|value)$")
ATTENTION_OPS = {"Softmax", "Attention", "GroupQueryAttention", "MultiHeadAttention"}
_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
}


@dataclass
class GraphFacts:
    opsets: dict[str, int]
    inputs: list[str]
    outputs: list[str]
    cache_inputs: list[tuple[str, str]]  # per layer (key, value)
    cache_outputs: list[tuple[str, str]]
    cache_dtype: str
    op_counts: dict[str, int]
    key_path: list[str]  # layer 0: past key -> attention scores, "Op(attrs)" in topological order
    value_path: list[str]  # layer 0: past value -> first MatMul/attention op that consumes it


def _by_layer(names: list[str], pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    found = {(int(m.group(1)), m.group(2)): n for n in names if (m := pattern.match(n))}
    return [(found[(i, "key")], found[(i, "value")]) for i in sorted({i for i, _ in found})]


def _describe(node: onnx.NodeProto, consts: dict[str, onnx.TensorProto]) -> str:
    attrs = []
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, onnx.TensorProto):
            arr = numpy_helper.to_array(value)
            value = arr.item() if arr.size == 1 else f"tensor{list(arr.shape)}"
        if isinstance(value, float):
            value = round(value, 6)
        if a.name in {
            "value",
            "perm",
            "axis",
            "axes",
            "to",
            "scale",
            "softcap",
            "num_heads",
            "kv_num_heads",
            "q_num_heads",
            "is_causal",
            "local_window_size",
            "keepdims",
        }:
            attrs.append(f"{a.name}={value}")
    for name in node.input:
        if name in consts and consts[name].data_location != onnx.TensorProto.EXTERNAL:
            arr = numpy_helper.to_array(consts[name])
            if arr.size == 1:
                attrs.append(f"const={round(float(arr.item()), 6)}")
    domain = f"{node.domain}." if node.domain and node.domain != "ai.onnx" else ""
    return f"{domain}{node.op_type}({', '.join(attrs)})" if attrs else f"{domain}{node.op_type}"


def _path(graph: onnx.GraphProto, start: str, stop_ops: set[str]) -> list[str]:
    """Nodes downstream of `start` and upstream of the first stop op reached (topological order).

    Shape ops are not followed: they carry metadata (lengths for masks and reshapes), not the
    cached values, so the path stays on the data flow the pass must rewrite."""
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.node):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    down: set[int] = set()
    stops: list[int] = []
    frontier = [start]
    while frontier:
        name = frontier.pop()
        for i in consumers.get(name, []):
            if i in down:
                continue
            if graph.node[i].op_type == "Shape":
                continue
            down.add(i)
            if graph.node[i].op_type in stop_ops:
                stops.append(i)
            else:
                frontier += list(graph.node[i].output)
    if not stops:
        return []
    first = min(stops)
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    up: set[int] = set()
    frontier = [first]
    while frontier:
        i = frontier.pop()
        if i in up or i not in down:
            continue
        up.add(i)
        frontier += [producer[x] for x in graph.node[i].input if x in producer]
    consts = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    return [_describe(graph.node[i], consts) for i in sorted(up)]


def read_facts(model_path: Path) -> GraphFacts:
    model = onnx.load(str(model_path), load_external_data=False)
    g = model.graph
    inputs = [i.name for i in g.input]
    outputs = [o.name for o in g.output]
    cache_in = _by_layer(inputs, _PAST_RE)
    cache_out = _by_layer(outputs, _PRESENT_RE)
    dtype = "none"
    if cache_in:
        elem = next(i for i in g.input if i.name == cache_in[0][0]).type.tensor_type.elem_type
        dtype = _DTYPES.get(elem, str(elem))
    key_path = _path(g, cache_in[0][0], ATTENTION_OPS) if cache_in else []
    value_path = _path(g, cache_in[0][1], ATTENTION_OPS | {"MatMul"}) if cache_in else []
    return GraphFacts(
        opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
        inputs=inputs,
        outputs=outputs,
        cache_inputs=cache_in,
        cache_outputs=cache_out,
        cache_dtype=dtype,
        op_counts=dict(Counter(n.op_type for n in g.node)),
        key_path=key_path,
        value_path=value_path,
    )


def strip_debug_metadata(model_path: Path) -> None:
    """Drop the dynamo exporter's per-node stack traces and FX dumps: they hold absolute paths of
    the machine that exported, so fixtures would differ per checkout. Weights stay untouched."""
    model = onnx.load(str(model_path), load_external_data=False)
    drop = {"pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node"}
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if p.key not in drop]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(model, str(model_path))
