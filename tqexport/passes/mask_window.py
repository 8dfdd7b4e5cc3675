"""Which keys each layer's mask lets the newest query see: sliding windows found by running the mask subgraph.

A sliding window (Gemma2's even layers, Mistral) reaches the attention as part of the mask, built by exporter-
specific arithmetic on positions (a `>` against `cache_position - W`, a `Trilu` with a negative diagonal, a
`Where` over a position difference...). Matching those expressions one by one would be as brittle as the
fusers this project avoids, so `inspect` evaluates them instead: the nodes that compute one layer's mask terms
(only those, with their constants) run in ONNX Runtime on a single decode step of one unpadded row after
`PROBE_TOKENS - 1` cached tokens, and the keys the last query may read are counted. Visible keys forming the
last W positions with W < T is a window of W; every key visible is no window within the probe's reach.

The conversion does not depend on this: the converted graph applies each layer's own mask exactly as the
original did. It labels layers for the user, and lets tests check that a window survived export.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tqexport.graph.edit import node_input_names
from tqexport.graph.index import GraphIndex
from tqexport.passes.match import LayerMatch

PROBE_TOKENS = 8192  # > 4096, the window of Gemma2 and Mistral checkpoints
MIN_PROBE_TOKENS = 16
SMALL_CONSTANT_ELEMENTS = 4096  # initializers loaded for shape inference (shape/index constants, not weights)
MAX_PROBE_CONSTANT_BYTES = 64 << 20  # a mask subgraph never needs weights; refuse to load them
ADDITIVE_MASKED = -1.0e4  # additive terms at or below this exclude a key (exporters fill with -1e4 .. -inf)


@dataclass(frozen=True)
class WindowProbe:
    """What the newest query of one layer may read after `total` tokens."""

    visible: int | None  # keys visible to the newest query; None when the probe could not run
    total: int
    window: int | None  # W when the visible keys are exactly the last W < total positions
    note: str = ""

    def describe(self) -> str:
        if self.visible is None:
            return f"unknown ({self.note})"
        if self.window is not None:
            return f"sliding {self.window} (probed: newest query sees the last {self.window} of {self.total})"
        if self.visible == self.total:
            return f"none (probed: newest query sees all {self.total} keys)"
        return f"irregular (probed: newest query sees {self.visible} of {self.total} keys, not the last ones)"


def probe_windows(
    model: onnx.ModelProto, index: GraphIndex, layers: Iterable[LayerMatch], total: int = PROBE_TOKENS
) -> dict[int, WindowProbe]:
    """One probe per layer with a matched mask; layers sharing mask terms share one evaluation."""
    layers = [layer for layer in layers if layer.attention is not None and layer.key is not None]
    terms_of = {layer.layer: list(layer.attention.mask_terms) for layer in layers}
    tensors = sorted({tensor for terms in terms_of.values() for _, tensor in terms})
    if not tensors:
        return {}
    failure = ""
    for tokens in _probe_lengths(total):
        try:
            values = _evaluate(model, index, tensors, _cache_shapes(layers), tokens)
        except _ProbeFailed as failed:
            failure = failure or str(failed)
            continue
        return {layer: _classify(terms, values, tokens) for layer, terms in terms_of.items()}
    return {layer: WindowProbe(None, total, None, failure) for layer in terms_of}


def _probe_lengths(total: int) -> list[int]:
    """`total`, then shorter probes for graphs whose mask path reads a learned position table (GPT-2, OPT)
    that ends before `total`: the window is found only when it is shorter than the probe that runs."""
    lengths = [total]
    while lengths[-1] > MIN_PROBE_TOKENS:
        lengths.append(max(lengths[-1] // 4, MIN_PROBE_TOKENS))
    return lengths


class _ProbeFailed(Exception):
    pass


def _cache_shapes(layers: list[LayerMatch]) -> dict[str, tuple[int, int]]:
    """(Hkv, D) of every past input, and of every present (Concat output): the probe feeds the former
    with total - 1 tokens, and tells shape inference the latter hold total tokens."""
    shapes = {}
    for layer in layers:
        for cache in (layer.key, layer.value):
            if cache is not None:
                for name in (cache.past_input, cache.concat_output, cache.present_output):
                    shapes[name] = (cache.num_kv_heads, cache.head_dim)
    return shapes


def _classify(terms: list[tuple[str, str]], values: dict[str, np.ndarray], total: int) -> WindowProbe:
    allowed = np.ones(total, dtype=bool)
    for kind, tensor in terms:
        value = values[tensor]
        last = value.reshape(-1, value.shape[-2] if value.ndim >= 2 else 1, total)[0, -1]
        if kind == "additive":
            allowed &= last > ADDITIVE_MASKED
        elif kind == "bool":
            allowed &= last.astype(bool)
        elif kind == "bool_inverted":
            allowed &= ~last.astype(bool)
        else:
            return WindowProbe(None, total, None, f"mask term kind {kind!r}")
    visible = int(allowed.sum())
    if 0 < visible < total and allowed[total - visible :].all():
        return WindowProbe(visible, total, visible)
    return WindowProbe(visible, total, None)


def _evaluate(
    model: onnx.ModelProto,
    index: GraphIndex,
    tensors: list[str],
    cache_shapes: dict[str, tuple[int, int]],
    total: int,
) -> dict[str, np.ndarray]:
    static = _static_shapes(model, index, cache_shapes, total)
    nodes, inputs, constants = _subgraph(index, tensors, static)
    feeds = {name: _probe_input(index, name, cache_shapes, total) for name in inputs}
    initializers = []
    for name in constants:
        tensor = index.initializers[name]
        size = int(np.prod(tensor.dims, dtype=np.int64)) * 8
        if size > MAX_PROBE_CONSTANT_BYTES:
            raise _ProbeFailed(f"the mask needs initializer {name} of {size >> 20} MiB")
        initializers.append(_load(index, name))
    graph = helper.make_graph(
        nodes,
        "mask_probe",
        [index.inputs[name] for name in inputs],
        [helper.make_tensor_value_info(name, _elem_type(index, name), None) for name in tensors],
        initializers,
    )
    probe = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    probe.functions.extend(model.functions)
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        outputs = session.run(tensors, feeds, quiet)
    except Exception as error:  # noqa: BLE001 - any runtime failure makes the label unknown, never the pass
        raise _ProbeFailed(f"the mask subgraph did not run: {str(error).splitlines()[0][:160]}") from error
    for name, value in zip(tensors, outputs, strict=True):
        if value.ndim == 0 or value.shape[-1] != total or (value.ndim >= 2 and value.shape[-2] < 1):
            raise _ProbeFailed(f"mask {name} has shape {list(value.shape)} at {total} tokens")
    return dict(zip(tensors, outputs, strict=True))


def _load(index: GraphIndex, name: str) -> onnx.TensorProto:
    try:
        return numpy_helper.from_array(index.load_initializer(name), name)
    except Exception as error:  # noqa: BLE001 - e.g. onnx refusing hard-linked external data
        raise _ProbeFailed(f"initializer {name} could not be read: {str(error)[:120]}") from error


def _elem_type(index: GraphIndex, name: str) -> int:
    if name not in index.dtypes:
        raise _ProbeFailed(f"no element type known for mask {name}")
    return index.dtypes[name]


def _static_shapes(
    model: onnx.ModelProto, index: GraphIndex, cache_shapes: dict[str, tuple[int, int]], total: int
) -> dict[str, list[int]]:
    """Every tensor's shape at the probe's input shapes, where shape inference can tell. A mask often takes
    its size from `Shape(inputs_embeds)`; knowing that shape spares the probe the embedding table."""
    inputs = []
    for value in index.graph.input:
        try:
            shape = _probe_input(index, value.name, cache_shapes, total).shape
        except _ProbeFailed:
            inputs.append(value)
            continue
        inputs.append(helper.make_tensor_value_info(value.name, index.dtypes[value.name], list(shape)))
    initializers = []
    for tensor in index.graph.initializer:
        if int(np.prod(tensor.dims, dtype=np.int64)) <= SMALL_CONSTANT_ELEMENTS:
            try:
                initializers.append(_load(index, tensor.name))
                continue
            except _ProbeFailed:
                pass
        inputs.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    outputs = [helper.make_empty_tensor_value_info(value.name) for value in index.graph.output]
    presents = [
        helper.make_tensor_value_info(name, index.dtypes[name], [1, heads, total, head_dim])
        for name, (heads, head_dim) in cache_shapes.items()
        if name not in index.inputs and name in index.dtypes
    ]
    graph = helper.make_graph(
        list(index.graph.node), "mask_shapes", inputs, outputs, initializers, value_info=presents
    )
    light = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    light.functions.extend(model.functions)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception:  # noqa: BLE001 - without shapes the probe evaluates the Shape inputs themselves
        return {}
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _shape_constant(node: onnx.NodeProto, dims: list[int]) -> onnx.NodeProto:
    """`Shape(x)` (with its start/end slice) as a Constant, for an x whose shape is known at the probe."""
    start, end = 0, len(dims)
    for attr in node.attribute:
        if attr.name == "start":
            start = attr.i
        elif attr.name == "end":
            end = attr.i
    value = np.asarray(dims, dtype=np.int64)[slice(start, end)]
    return helper.make_node(
        "Constant", [], [node.output[0]], name=f"{node.name}_probe", value=numpy_helper.from_array(value)
    )


def _subgraph(
    index: GraphIndex, tensors: list[str], static: dict[str, list[int]]
) -> tuple[list[onnx.NodeProto], list[str], list[str]]:
    """The nodes computing `tensors` in graph order (`Shape` of a tensor in `static` folded to a Constant),
    the graph inputs they read, the initializers they use."""
    folded: dict[int, onnx.NodeProto] = {}
    needed: set[int] = set()
    inputs: set[str] = set()
    constants: set[str] = set()
    order = {id(node): i for i, node in enumerate(index.graph.node)}
    stack = list(tensors)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        node = index.producer.get(name)
        if node is not None:
            if id(node) in needed:
                continue
            needed.add(id(node))
            if node.op_type == "Shape" and node.domain in ("", "ai.onnx") and node.input[0] in static:
                folded[id(node)] = _shape_constant(node, static[node.input[0]])
                continue
            stack.extend(node_input_names(node))
        elif name in index.initializers:
            constants.add(name)
        elif name in index.inputs:
            inputs.add(name)
    kept = sorted((node for node in index.graph.node if id(node) in needed), key=lambda n: order[id(n)])
    nodes = [folded.get(id(node), node) for node in kept]
    graph_inputs = [value.name for value in index.graph.input if value.name in inputs]
    return nodes, graph_inputs, sorted(constants)


def _probe_input(
    index: GraphIndex, name: str, cache_shapes: dict[str, tuple[int, int]], total: int
) -> np.ndarray:
    dtype = helper.tensor_dtype_to_np_dtype(index.dtypes.get(name, onnx.TensorProto.FLOAT))
    if name in cache_shapes and name in index.inputs:
        heads, head_dim = cache_shapes[name]
        return np.zeros((1, heads, total - 1, head_dim), dtype=dtype)
    if name == "input_ids":
        return np.zeros((1, 1), dtype=dtype)
    if name == "attention_mask":
        return np.ones((1, total), dtype=dtype)
    if name == "position_ids":
        return np.full((1, 1), total - 1, dtype=dtype)
    if name == "cache_position":
        return np.full((1,), total - 1, dtype=dtype)
    raise _ProbeFailed(f"the mask reads input {name!r}, which the probe cannot fill")
