"""The rewrite pipeline: a flat, ordered list of named passes; running it returns a dict of counts.

Each pass takes the graph and the `RewritePlan` and returns how many things it rewrote. `convert` prints the
dict and tests assert it per fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
from onnx import helper

from tqexport.errors import UnsupportedError
from tqexport.graph.edit import cleanup, replace_subgraph, toposort
from tqexport.graph.index import GraphIndex, node_label
from tqexport.passes.attention_read import build_attention_nodes
from tqexport.passes.buffer_lengths import PAST_LENGTHS
from tqexport.passes.cache_io import fuse_cache_io, fuse_cache_shapes, fuse_path_shapes, needs_logical_shape
from tqexport.passes.hadamard_promises import set_promises
from tqexport.passes.kv_write import TQ_DOMAIN, CacheCodecTensors, WindowConfig, fuse_kv_write
from tqexport.passes.match import LayerMatch


@dataclass
class LayerPlan:
    match: LayerMatch
    key_codec: CacheCodecTensors
    value_codec: CacheCodecTensors


@dataclass
class RewritePlan:
    layers: list[LayerPlan]
    window: WindowConfig = field(default_factory=WindowConfig)
    target: str = "ort"  # "ort" | "trt"

    def cache_writes(self):
        for plan in self.layers:
            yield plan.match.key, plan.key_codec
            yield plan.match.value, plan.value_codec


def fuse_attention_read(graph: onnx.GraphProto, plan: RewritePlan) -> int:
    nodes = []
    for layer in plan.layers:
        m = layer.match
        nodes += build_attention_nodes(
            m.layer,
            m.key,
            m.value,
            m.attention,
            layer.key_codec,
            layer.value_codec,
            plan.window,
            PAST_LENGTHS if plan.window.cache_mode == 1 else "",
        )
    replace_subgraph(graph, nodes)
    return len(plan.layers)


def _kv_write(graph: onnx.GraphProto, plan: RewritePlan) -> int:
    return fuse_kv_write(graph, list(plan.cache_writes()), plan.window)


def _cache_io(graph: onnx.GraphProto, plan: RewritePlan) -> int:
    return fuse_cache_io(graph, list(plan.cache_writes()), plan.window)


def _cache_shapes(graph: onnx.GraphProto, plan: RewritePlan) -> int:
    """Shape reads of the caches and of the replaced K/V paths become logical shapes; then dead code goes."""
    count = fuse_cache_shapes(graph, list(plan.cache_writes()), plan.window)
    triples = [(p.match.key, p.match.value, p.match.attention) for p in plan.layers]
    count += fuse_path_shapes(graph, triples, plan.window)
    cleanup(graph)
    toposort(graph)
    return count


def _cleanup(graph: onnx.GraphProto, plan: RewritePlan) -> int:
    removed = cleanup(graph)
    toposort(graph)
    return removed


def verify_cache_uses(graph: onnx.GraphProto, plan: RewritePlan) -> int:
    """No surviving original node may read a compressed cache (it would see bytes, not floats)."""
    index = GraphIndex(graph)
    allowed = {"TQQuantize", "TQAttention", "Identity"}
    checked = 0
    for write, _codec in plan.cache_writes():
        for name in (write.past_input, write.concat_output):
            for use in index.uses(name):
                node = use.node
                if node.op_type in allowed or node.name.startswith("tq_logical_shape_"):
                    continue
                if node.op_type == "Shape" and not needs_logical_shape(node, plan.window):
                    continue  # B, Hkv and T keep their values when there is no window
                raise UnsupportedError(
                    f"layer {write.layer} {write.kind}: {node_label(node)} still reads the compressed cache "
                    f"{name!r} after the rewrite (its float value was used outside attention)"
                )
            checked += 1
    return checked


_TQ_ARITY = {"TQQuantize": 7, "TQAttention": 12}


def trt_plugin_fields(graph: onnx.GraphProto, plan: RewritePlan) -> int:
    """TensorRT: plugin_version/plugin_namespace fields; absent optional inputs become zero-element
    tensors."""
    if plan.target != "trt":
        return 0
    index = GraphIndex(graph)
    absent: dict[int, str] = {}
    cache_types: dict[str, int] = {}  # node name -> K/V dtype, for zero-element windows of the right type
    for layer in plan.layers:
        m = layer.match
        cache_types[f"tq_attention_{m.layer}"] = m.key.elem_type
        for write in (m.key, m.value):
            cache_types[f"tq_quantize_{write.layer}_{write.kind}"] = write.elem_type

    def absent_tensor(elem_type: int) -> str:
        if elem_type not in absent:
            name = f"tq_absent_{onnx.TensorProto.DataType.Name(elem_type).lower()}"
            graph.initializer.append(helper.make_tensor(name, elem_type, [0], []))
            absent[elem_type] = name
        return absent[elem_type]

    count = 0
    for node in graph.node:
        if node.domain != TQ_DOMAIN:
            continue
        data_type = cache_types.get(node.name) or index.dtypes.get(node.input[0], onnx.TensorProto.FLOAT)
        inputs = list(node.input) + [""] * (_TQ_ARITY[node.op_type] - len(node.input))
        for slot, name in enumerate(inputs):
            if name:
                continue
            if (node.op_type, slot) in (("TQQuantize", 6), ("TQAttention", 11)):
                inputs[slot] = absent_tensor(onnx.TensorProto.INT64)
            elif (node.op_type, slot) in (("TQQuantize", 4), ("TQAttention", 8)):
                inputs[slot] = absent_tensor(onnx.TensorProto.FLOAT)
            else:
                inputs[slot] = absent_tensor(data_type)
        del node.input[:]
        node.input.extend(inputs)
        node.attribute.extend(
            [
                helper.make_attribute("plugin_version", "1"),
                helper.make_attribute("plugin_namespace", "tqexport"),
            ]
        )
        count += 1
    return count


def trt_promises(graph: onnx.GraphProto, plan: RewritePlan) -> int:
    """TensorRT: the constant-Hadamard promises (docs/format.md 8.3), 1 where the written rotations keep them;
    returns how many are 1 (the ORT ops find constants themselves, so the ORT target gets none)."""
    return set_promises(graph, GraphIndex(graph)) if plan.target == "trt" else 0


PASSES: list[tuple[str, Callable[[onnx.GraphProto, RewritePlan], int]]] = [
    ("attention_read", fuse_attention_read),
    ("kv_write", _kv_write),
    ("cache_io", _cache_io),  # before any toposort: it declares the window inputs the new nodes read
    ("cleanup", _cleanup),
    ("cache_shapes", _cache_shapes),
    ("verify_cache_uses", verify_cache_uses),
    ("trt_plugin_fields", trt_plugin_fields),
    ("trt_promises", trt_promises),
]


def run_pipeline(model: onnx.ModelProto, plan: RewritePlan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, fuse in PASSES:
        counts[name] = fuse(model.graph, plan)
    if not any(opset.domain == TQ_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(TQ_DOMAIN, 1))
    return counts
