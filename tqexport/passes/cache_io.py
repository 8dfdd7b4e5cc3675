"""Cache graph I/O: fp caches become uint8 compressed caches of the same names; windows ride beside them.

Past input `past_key_values.N.key` [B, Hkv, T, D] float -> uint8 [B, Hkv, Tc, row_bytes]; present likewise.
When W = sink_tokens + recent_window > 0, window I/O `<cache name>_window` [B, Hkv, Wd, D] are appended after
the original inputs/outputs (docs/format.md sections 7 and 9), so positional order of the originals is
unchanged.
Shape nodes that read a cache are rewritten to the *logical* shape [B, Hkv, Tc + Wd, D], so downstream
sequence-length arithmetic (mask construction, position ids) keeps its meaning.
Buffer mode (cache_mode 1): past and present are both [B, Hkv, max_cache_len, row_bytes] and windows
[B, Hkv, W, D]; the logical token count comes from `tqexport.passes.buffer_lengths` (past = T - S tokens
for a past cache, T for a present cache and the K/V path) instead of the cache shapes.
"""

from __future__ import annotations

import onnx
from onnx import helper

from tqexport.graph.edit import replace_subgraph
from tqexport.graph.index import attribute
from tqexport.passes.buffer_lengths import (
    PAST_TOKENS,
    TOTAL_TOKENS,
    buffer_length_nodes,
    check_buffer_inputs,
)
from tqexport.passes.kv_write import CacheCodecTensors, WindowConfig, window_name
from tqexport.passes.match import CacheWrite


def _dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    return list(value.type.tensor_type.shape.dim)


def _dim_value(dim: onnx.TensorShapeProto.Dimension) -> int | str | None:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    if dim.HasField("dim_param"):
        return dim.dim_param
    return None


def _retype(value: onnx.ValueInfoProto, dims: list[int | str | None], elem_type: int) -> None:
    value.type.tensor_type.elem_type = elem_type
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for dim in dims:
        entry = shape.dim.add()
        if isinstance(dim, int):
            entry.dim_value = dim
        elif isinstance(dim, str):
            entry.dim_param = dim


def _find(values, name: str) -> onnx.ValueInfoProto:
    for value in values:
        if value.name == name:
            return value
    raise KeyError(name)


def fuse_cache_io(
    graph: onnx.GraphProto, planned: list[tuple[CacheWrite, CacheCodecTensors]], window: WindowConfig
) -> int:
    """Retype each planned cache input/output and add window I/O. Returns the number of caches retyped."""
    new_inputs, new_outputs = [], []
    buffer = window.cache_mode == 1
    if buffer and planned:
        check_buffer_inputs(graph)
        replace_subgraph(graph, buffer_length_nodes())
    for write, codec in planned:
        past = _find(graph.input, write.past_input)
        present = _find(graph.output, write.present_output)
        past_dims = [_dim_value(d) for d in _dims(past)] or [
            "batch_size",
            write.num_kv_heads,
            None,
            write.head_dim,
        ]
        present_dims = [_dim_value(d) for d in _dims(present)] or list(past_dims)
        batch = past_dims[0]
        past_rows = past_dims[2] if not window.size else "past_compressed_length"
        present_rows = present_dims[2] if not window.size else "present_compressed_length"
        past_window: int | str = window.size if buffer else "past_window_length"
        present_window: int | str = window.size if buffer else "present_window_length"
        if buffer:  # one fixed-capacity buffer, fed back as past (or aliased) each step
            past_rows = present_rows = "max_cache_len"
        _retype(past, [batch, write.num_kv_heads, past_rows, codec.row_bytes], onnx.TensorProto.UINT8)
        _retype(
            present,
            [present_dims[0], write.num_kv_heads, present_rows, codec.row_bytes],
            onnx.TensorProto.UINT8,
        )
        if window.size:
            new_inputs.append(
                helper.make_tensor_value_info(
                    window_name(write.past_input),
                    window.window_type(write.elem_type),
                    [batch, write.num_kv_heads, past_window, write.head_dim],
                )
            )
            new_outputs.append(
                helper.make_tensor_value_info(
                    window_name(write.present_output),
                    window.window_type(write.elem_type),
                    [present_dims[0], write.num_kv_heads, present_window, write.head_dim],
                )
            )
    graph.input.extend(new_inputs)
    graph.output.extend(new_outputs)
    return len(planned)


def _const_ints(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant",
        [],
        [name],
        name=name,
        value=helper.make_tensor(name, onnx.TensorProto.INT64, [len(values)], values),
    )


class _ShapeBuilder:
    """Builds `Shape(x)` replacements from letters: B and Hq from Shape(q), T from the present cache (plus
    window), Hkv, D and 1 as constants, G = Hq / Hkv, BHkv/BHq products."""

    def __init__(self, tag: str, num_kv_heads: int, head_dim: int, logical_tokens: str = "") -> None:
        self.prefix = f"tq_logical_shape_{tag}"
        self.logical_tokens = logical_tokens  # buffer mode: the token count as a tensor [1]
        self.nodes: list[onnx.NodeProto] = []
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.count = 0

    def _name(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}_{what}_{self.count}"

    def const(self, values: list[int]) -> str:
        name = self._name("c")
        self.nodes.append(_const_ints(name, values))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        name = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def dims(self, tensor: str, start: int, end: int) -> str:
        return self.op("Slice", [self.op("Shape", [tensor]), self.const([start]), self.const([end])])

    def tokens(self, cache: str, window: str) -> str:
        if self.logical_tokens:
            return self.logical_tokens
        tokens = self.dims(cache, 2, 3)
        return self.op("Add", [tokens, self.dims(window, 2, 3)]) if window else tokens

    def finish(self, pieces: list[str], shape_node: onnx.NodeProto, rank: int) -> None:
        full = self.op("Concat", pieces, axis=0)
        start = int(attribute(shape_node, "start", 0))
        end = attribute(shape_node, "end", None)
        end = rank if end is None else int(end)
        name = f"{self.prefix}_slice"
        self.nodes.append(
            helper.make_node(
                "Slice", [full, self.const([start]), self.const([end])], [shape_node.output[0]], name=name
            )
        )


def logical_shape_nodes(
    shape_node: onnx.NodeProto, cache: str, window: str, head_dim: int, tag: str, logical_tokens: str = ""
) -> list[onnx.NodeProto]:
    """Nodes computing Shape(cache)'s logical value [B, Hkv, Tc + Wd, D] (sliced like the original Shape);
    `logical_tokens` (buffer mode) gives the token count instead of Tc + Wd."""
    builder = _ShapeBuilder(tag, 0, head_dim, logical_tokens)
    pieces = [builder.dims(cache, 0, 2), builder.tokens(cache, window), builder.const([head_dim])]
    builder.finish(pieces, shape_node, 4)
    return builder.nodes


def path_shape_nodes(
    read,
    q: str,
    cache: str,
    window: str,
    num_kv_heads: int,
    head_dim: int,
    tag: str,
    logical_tokens: str = "",
) -> list[onnx.NodeProto]:
    """Nodes computing Shape(x) for a tensor x on a replaced K/V path, from its layout letters."""
    builder = _ShapeBuilder(tag, num_kv_heads, head_dim, logical_tokens)
    cached: dict[str, str] = {}

    def letter(name: str) -> str:
        if name in cached:
            return cached[name]
        if name == "B":
            value = builder.dims(q, 0, 1)
        elif name == "Hq":
            value = builder.dims(q, 1, 2)
        elif name == "Hkv":
            value = builder.const([num_kv_heads])
        elif name == "D":
            value = builder.const([head_dim])
        elif name == "1":
            value = builder.const([1])
        elif name == "T":
            value = builder.tokens(cache, window)
        elif name == "G":
            value = builder.op("Div", [letter("Hq"), letter("Hkv")])
        elif name.startswith("B"):
            value = builder.op("Mul", [letter("B"), letter(name[1:])])
        else:
            raise ValueError(f"unknown layout letter {name!r}")
        cached[name] = value
        return value

    builder.finish([letter(name) for name in read.layout], read.node, len(read.layout))
    return builder.nodes


def needs_logical_shape(shape_node: onnx.NodeProto, window: WindowConfig) -> bool:
    if window.size or window.cache_mode == 1:  # buffer mode: dim 2 is the capacity, not the token count
        return True
    end = attribute(shape_node, "end", None)
    start = int(attribute(shape_node, "start", 0))
    # Without a window the first three dims keep their values; only D (now row_bytes) changes.
    return end is None or int(end) > 3 or int(end) < 0 or start in (3, -1)


def fuse_cache_shapes(
    graph: onnx.GraphProto, planned: list[tuple[CacheWrite, CacheCodecTensors]], window: WindowConfig
) -> int:
    """Rewrite Shape(cache) reads to the logical cache shape. Returns the number of Shape nodes rewritten."""
    nodes: list[onnx.NodeProto] = []
    # Shape reads on removed paths (e.g. a GQA repeat) are gone; nodes are compared by output name because
    # protobuf copies messages when the node list is rebuilt.
    live = {node.output[0] for node in graph.node if node.output}
    buffer = window.cache_mode == 1
    for write, _codec in planned:
        for role, uses, cache, win, tokens in (
            ("past", write.past_shape_uses, write.past_input, window_name(write.past_input), PAST_TOKENS),
            (
                "present",
                write.present_shape_uses,
                write.concat_output,
                window_name(write.present_output),
                TOTAL_TOKENS,
            ),
        ):
            for i, shape_node in enumerate(uses):
                if shape_node.output[0] in live and needs_logical_shape(shape_node, window):
                    tag = f"{write.layer}_{write.kind}_{role}_{i}"
                    nodes += logical_shape_nodes(
                        shape_node,
                        cache,
                        win if window.size else "",
                        write.head_dim,
                        tag,
                        tokens if buffer else "",
                    )
    replace_subgraph(graph, nodes)
    return sum(1 for node in nodes if node.name.endswith("_slice"))


def fuse_path_shapes(graph: onnx.GraphProto, layers: list, window: WindowConfig) -> int:
    """Rewrite Shape reads of replaced K/V path tensors (mask slicing, reshapes) from their layout letters.

    `layers` holds (key CacheWrite, value CacheWrite, AttentionRead) triples.
    """
    live = {node.output[0] for node in graph.node if node.output}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for key, value, read in layers:
        for i, shape_read in enumerate(read.shape_reads):
            if shape_read.node.output[0] not in live:
                continue
            write = key if shape_read.kind == "key" else value
            win = window_name(write.present_output) if window.size else ""
            nodes += path_shape_nodes(
                shape_read,
                read.q_BHqSD,
                write.concat_output,
                win,
                write.num_kv_heads,
                write.head_dim,
                f"{write.layer}_{write.kind}_path_{i}",
                TOTAL_TOKENS if window.cache_mode == 1 else "",
            )
            count += 1
    replace_subgraph(graph, nodes)
    return count
