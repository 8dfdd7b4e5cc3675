"""Unfuse `com.microsoft::GroupQueryAttention` (onnxruntime-genai graphs) into plain ONNX ops.

Letters as in docs/format.md: B batch, Hq query heads, Hkv kv heads, S new tokens, P past tokens, T = P + S,
D head dim, W local window, L_b = seqlens_k[b] + 1 (row b's tokens after the step).

The op owns the cache write and the attention read. `unfuse_group_query_attention` replaces each supported
node by the form the other exporters write: `present = Concat(past, new, axis=2)` for K (post-RoPE) and V,
and an explicit attention (GQA repeat, MatMul, scale, softcap, bool mask, Softmax, MatMul), so `kv_write` and
`attention_read` match it like any other layer and the pipeline rewrites it to TQQuantize + TQAttention.

What the unfused graph computes (ONNX Runtime 1.32's CPU kernel; tests/passes/test_group_query_attention.py
checks it against that kernel):
- q/k/v from the packed input [B, S, (Hq + 2 Hkv) D] or from separate query/key/value, split into heads;
- row b's query s sits at position p = max(L_b - S, 0) + s; RoPE (do_rotary=1) rotates q and the new k with
  cos_cache[p], sin_cache[p] on the first R = 2 * cos_cache.shape[1] channels (halves, or even/odd pairs when
  rotary_interleaved=1);
- score = scale * q.k (scale 0 means 1/sqrt(D)), then softcap c * tanh(score / c), then the mask, softmax;
- a key at position k is visible iff k <= p and, with local_window_size W > 0, k > p - W (W keys in all).

Cache layout. GQA writes row b's new tokens at its slot L_b - S (it keeps each row's tokens first, right
padding last); the unfused graph appends every step at slot P (Concat), like every other exporter, and marks
which slots hold row b's tokens with the model's `attention_mask` (the graph input seqlens_k is computed from,
ReduceSum(attention_mask) - 1): slot t holds a token iff attention_mask[b, t] = 1, at position
cumsum(attention_mask[b])[t] - 1. The two give the same outputs wherever the original is right: unpadded
batches, and rows right-padded in the prompt whose later steps append a 1 per new token. They differ where
the original is wrong (left padding: GQA takes a row's first L_b slots as its tokens) and when a decode
step's mask column is 0 (GQA then overwrites the row's last token). `sliding_window_cache=1` (a window-sized
cache the op evicts from) becomes a full-length cache with the window in the mask: the same attention, a
growing cache.

Refused, with the reason, node left in place: smooth_softmax, causal=0, qk_output, an attention_bias,
head_sink, position_ids, query_seqlens, QK-norm weights, a quantized cache (k_scale/v_scale,
kv_cache_bit_width, k/v_quant_type), a legacy past_present_share_buffer=1 attribute, rotary caches that are
not constant, seqlens_k not derived from an attention_mask graph input, and a missing past or present.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from tqexport.graph.edit import cleanup, replace_subgraph, toposort
from tqexport.graph.fold import fold_scalar
from tqexport.graph.index import GraphIndex, attribute, node_label
from tqexport.passes import gqa_nodes
from tqexport.passes.gqa_nodes import AttentionShape, NodeEmitter
from tqexport.passes.kv_write import PAST_NAME

GQA_FORM = "group-query-attention"
_ARITY = 17
_UNSUPPORTED_INPUTS = {
    9: "position_ids (explicit rotary positions)",
    10: "attention_bias (an additive bias on the scores)",
    11: "head_sink (a per-head softmax sink)",
    12: "k_scale (an already-quantized K cache)",
    13: "v_scale (an already-quantized V cache)",
    14: "q_norm_weight (QK-norm inside the op)",
    15: "k_norm_weight (QK-norm inside the op)",
    16: "query_seqlens (right-padded query chunks)",
}


@dataclass
class GqaLayer:
    """One GroupQueryAttention node: its attributes, and why it was refused (empty when it was unfused)."""

    layer: int | None  # from the past_key name; None when the node has no recognisable cache input
    node: str
    num_heads: int
    kv_num_heads: int
    head_dim: int | None
    scale: float
    softcap: float
    local_window_size: int  # -1: no window
    sliding_window_cache: bool
    rotary: str  # "none", "half" or "interleaved"
    rotary_dim: int
    packed_qkv: bool
    attention_mask: str = ""
    reason: str = ""

    def report(self) -> dict:
        record = asdict(self)
        record.pop("layer")
        return record


def _ints_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return int(attribute(node, name, default))


def _string_attr(node: onnx.NodeProto, name: str, default: str) -> str:
    value = attribute(node, name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _attention_mask_of(index: GraphIndex, seqlens_k: str) -> str | None:
    """The rank-2 graph input behind `seqlens_k = [Cast](ReduceSum([Cast](mask), axis 1, keepdims 0) - 1)`."""
    node = index.producer.get(seqlens_k)
    if node is not None and node.op_type == "Cast":
        node = index.producer.get(node.input[0])
    if node is None or node.op_type != "Sub" or fold_scalar(index, node.input[1]) != 1.0:
        return None
    node = index.producer.get(node.input[0])
    if node is None or node.op_type != "ReduceSum" or _ints_attr(node, "keepdims", 1) != 0:
        return None
    axes = attribute(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = index.constant(node.input[1])
        axes = None if value is None else [int(v) for v in value.reshape(-1)]
    if axes not in ([1], [-1]):
        return None
    mask = node.input[0]
    cast = index.producer.get(mask)
    if cast is not None and cast.op_type == "Cast":
        mask = cast.input[0]
    return mask if mask in index.inputs and index.rank(mask) == 2 else None


def _refusal(index: GraphIndex, node: onnx.NodeProto, info: GqaLayer, inputs: list[str]) -> str:
    if info.layer is None:
        return f"past_key {inputs[3]!r} is not a cache graph input named like past_key_values.N.key"
    if _ints_attr(node, "smooth_softmax", -1) == 1:
        return "smooth_softmax=1 adds 1 to the softmax denominator; TQAttention has no such term"
    if _ints_attr(node, "causal", 1) != 1:
        return f"causal={_ints_attr(node, 'causal', 1)} (bidirectional attention) is not supported"
    if _ints_attr(node, "qk_output", 0) != 0 or (len(node.output) > 3 and node.output[3]):
        return "qk_output (the QK matrix as a 4th output) is not supported"
    if _ints_attr(node, "past_present_share_buffer", 0) == 1:
        return "past_present_share_buffer=1 (present aliases a preallocated past buffer) is not supported"
    quant_types = [_string_attr(node, kind, "NONE") for kind in ("k_quant_type", "v_quant_type")]
    if _ints_attr(node, "kv_cache_bit_width", 0) or quant_types != ["NONE", "NONE"]:
        return "the op's own KV-cache quantization (kv_cache_bit_width / k_quant_type / v_quant_type) is on"
    for slot, what in _UNSUPPORTED_INPUTS.items():
        if inputs[slot]:
            return f"input {slot} {what} is given; not supported"
    if not (inputs[3] and inputs[4] and len(node.output) > 2 and node.output[1] and node.output[2]):
        return "past_key/past_value inputs and present_key/present_value outputs are required (no cache)"
    if bool(inputs[1]) != bool(inputs[2]):
        return "key and value must be both given or both absent (packed QKV)"
    if info.num_heads <= 0 or info.kv_num_heads <= 0 or info.num_heads % info.kv_num_heads:
        return f"num_heads={info.num_heads} is not a positive multiple of kv_num_heads={info.kv_num_heads}"
    past_shape = index.shape(inputs[3])
    if past_shape is None or len(past_shape) != 4 or past_shape[1] != info.kv_num_heads:
        return f"past_key shape {past_shape}: needs [B, Hkv={info.kv_num_heads}, P, D]"
    static_d = past_shape[3] if isinstance(past_shape[3], int) else info.head_dim
    if info.head_dim is None or static_d != info.head_dim:
        return f"head dim unknown or inconsistent (past_key {past_shape}, query {index.shape(inputs[0])})"
    if index.dtypes.get(inputs[3]) not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        return f"cache dtype {index.dtypes.get(inputs[3])} is not float32/float16"
    if info.local_window_size == 0 or info.local_window_size < -1:
        return f"local_window_size={info.local_window_size} (valid: -1 for none, or >= 1)"
    if info.sliding_window_cache and info.local_window_size < 1:
        return "sliding_window_cache=1 without a local window"
    if info.rotary != "none":
        if not (inputs[7] and inputs[8]):
            return "do_rotary=1 without cos_cache/sin_cache"
        shapes = [index.shape(inputs[7]), index.shape(inputs[8])]
        if not all(index.is_constant(name) for name in inputs[7:9]) or shapes[0] != shapes[1]:
            return "cos_cache/sin_cache are not constant initializers of one static shape"
        if not info.rotary_dim or info.rotary_dim > info.head_dim or info.rotary_dim % 2:
            return (
                f"rotary dim {info.rotary_dim} (2 * cos_cache.shape[1]) does not fit head dim {info.head_dim}"
            )
    if not info.attention_mask:
        return (
            "seqlens_k is not ReduceSum(attention_mask, axis 1) - 1 of a graph input: the unfused cache "
            "appends every step and needs the mask to tell which slots hold each row's tokens"
        )
    return ""


def _head_dim(index: GraphIndex, inputs: list[str], num_heads: int, kv_num_heads: int) -> int | None:
    """D from the past cache's static shape, else from the query's last dim ((Hq + 2 Hkv) D when packed)."""
    past_shape = index.shape(inputs[3]) if inputs[3] else None
    if past_shape and len(past_shape) == 4 and isinstance(past_shape[3], int):
        return past_shape[3]
    heads = num_heads if inputs[1] else num_heads + 2 * kv_num_heads
    hidden = index.static_dim(inputs[0], -1)
    if hidden is None or heads <= 0 or hidden % heads:
        return None
    return hidden // heads


def _describe(index: GraphIndex, node: onnx.NodeProto) -> tuple[GqaLayer, list[str]]:
    inputs = list(node.input) + [""] * (_ARITY - len(node.input))
    found = PAST_NAME.match(inputs[3]) if inputs[3] in index.inputs else None
    num_heads, kv_num_heads = _ints_attr(node, "num_heads", 0), _ints_attr(node, "kv_num_heads", 0)
    head_dim = _head_dim(index, inputs, num_heads, kv_num_heads)
    scale = float(attribute(node, "scale", 0.0))
    if scale == 0.0 and head_dim:
        scale = 1.0 / math.sqrt(head_dim)
    rotary = "none"
    if _ints_attr(node, "do_rotary", 0):
        rotary = "interleaved" if _ints_attr(node, "rotary_interleaved", 0) else "half"
    cos_shape = index.shape(inputs[7]) if inputs[7] else None
    rotary_dim = (
        2 * cos_shape[1] if cos_shape and len(cos_shape) == 2 and isinstance(cos_shape[1], int) else 0
    )
    info = GqaLayer(
        layer=int(found.group(1)) if found else None,
        node=node_label(node),
        num_heads=num_heads,
        kv_num_heads=kv_num_heads,
        head_dim=head_dim,
        scale=scale,
        softcap=float(attribute(node, "softcap", 0.0)),
        local_window_size=_ints_attr(node, "local_window_size", -1),
        sliding_window_cache=bool(_ints_attr(node, "sliding_window_cache", 0)),
        rotary=rotary,
        rotary_dim=rotary_dim if rotary != "none" else 0,
        packed_qkv=not inputs[1],
        attention_mask=_attention_mask_of(index, inputs[5]) or "",
    )
    info.reason = _refusal(index, node, info, inputs)
    return info, inputs


class _Unfuser:
    """Builds the replacement nodes; positions and masks are built once, shared by the layers that agree."""

    def __init__(self, index: GraphIndex) -> None:
        self.index = index
        self.shared = NodeEmitter("tq_gqa")
        self.positions: dict[str, str] = {}
        self.masks: dict[tuple[str, int], str] = {}
        self.tables: dict[tuple[str, str, str], tuple[str, str]] = {}
        self.layer_nodes: list[onnx.NodeProto] = []

    def _positions(self, seqlens_k: str, query: str) -> str:
        if seqlens_k not in self.positions:  # S is every layer's; the first layer's query gives it
            self.positions[seqlens_k] = gqa_nodes.positions_BS(self.shared, seqlens_k, query)
        return self.positions[seqlens_k]

    def unfuse(self, node: onnx.NodeProto, info: GqaLayer, inputs: list[str]) -> None:
        e = NodeEmitter(f"tq_gqa{info.layer}")
        hq, hkv, d = info.num_heads, info.kv_num_heads, info.head_dim
        assert d is not None
        if info.packed_qkv:
            q, k, v = e.split(gqa_nodes.heads_BHSD(e, inputs[0], hq + 2 * hkv, d), [hq, hkv, hkv], axis=1)
        else:
            q = gqa_nodes.heads_BHSD(e, inputs[0], hq, d)
            k = gqa_nodes.heads_BHSD(e, inputs[1], hkv, d)
            v = gqa_nodes.heads_BHSD(e, inputs[2], hkv, d)
        positions = self._positions(inputs[5], inputs[0])
        if info.rotary != "none":
            key = (inputs[7], inputs[8], positions)
            if key not in self.tables:
                self.tables[key] = gqa_nodes.rotary_tables(self.shared, inputs[7], inputs[8], positions)
            cos, sin = self.tables[key]
            interleaved = info.rotary == "interleaved"
            q = gqa_nodes.rotate(e, q, cos, sin, d, info.rotary_dim, interleaved)
            k = gqa_nodes.rotate(e, k, cos, sin, d, info.rotary_dim, interleaved)
        window = info.local_window_size if info.local_window_size > 0 else 0
        mask_key = (info.attention_mask, window)
        if mask_key not in self.masks:
            self.masks[mask_key] = gqa_nodes.visible_B1ST(self.shared, info.attention_mask, positions, window)
        present_k = e.op("Concat", [inputs[3], k], output=node.output[1], axis=2)
        present_v = e.op("Concat", [inputs[4], v], output=node.output[2], axis=2)
        elem_type = self.index.dtypes[inputs[3]]
        shape = AttentionShape(hq, hkv, d, info.scale, info.softcap, elem_type)
        gqa_nodes.attention(e, q, present_k, present_v, self.masks[mask_key], shape, node.output[0])
        self.layer_nodes += e.nodes


def _static_cache_dims(graph: onnx.GraphProto, infos: list[GqaLayer], nodes: dict[str, list[str]]) -> None:
    """Unfused caches get static Hkv and D (genai declares D as a symbol; the op's attributes fix it)."""
    values = {v.name: v for v in [*graph.input, *graph.output]}
    for info in infos:
        if info.reason:
            continue
        for name in nodes[info.node]:
            dims = values[name].type.tensor_type.shape.dim if name in values else []
            if len(dims) == 4:
                for axis, size in ((1, info.kv_num_heads), (3, info.head_dim)):
                    dims[axis].Clear()
                    dims[axis].dim_value = int(size)


def _full_length_cache_dims(
    graph: onnx.GraphProto, infos: list[GqaLayer], nodes: dict[str, list[str]]
) -> None:
    """A sliding_window_cache layer's past/present now hold every token: give their token dim the name the
    full-length layers use."""
    values = {v.name: v for v in [*graph.input, *graph.output]}

    def token_dim(name: str) -> onnx.TensorShapeProto.Dimension | None:
        value = values.get(name)
        dims = value.type.tensor_type.shape.dim if value is not None else []
        return dims[2] if len(dims) == 4 else None

    full = [info for info in infos if not info.reason and not info.sliding_window_cache]
    past_name, present_name = "past_sequence_length", "total_sequence_length"
    if full:
        past_dim, present_dim = token_dim(nodes[full[0].node][0]), token_dim(nodes[full[0].node][2])
        past_name = past_dim.dim_param if past_dim is not None and past_dim.dim_param else past_name
        present_name = (
            present_dim.dim_param if present_dim is not None and present_dim.dim_param else present_name
        )
    for info in infos:
        if info.reason or not info.sliding_window_cache:
            continue
        past_k, past_v, present_k, present_v = nodes[info.node]
        for name, dim_name in (
            (past_k, past_name),
            (past_v, past_name),
            (present_k, present_name),
            (present_v, present_name),
        ):
            dim = token_dim(name)
            if dim is not None:
                dim.Clear()
                dim.dim_param = dim_name


def _drop_constant_value_info(graph: onnx.GraphProto) -> None:
    """The genai builder declares value_info for some Constant outputs with the wrong rank ([1] as a scalar),
    which the checker's full check refuses; a Constant's shape is its tensor's, so those entries go."""
    constants = {name for node in graph.node if node.op_type == "Constant" for name in node.output}
    for value in [value for value in graph.value_info if value.name in constants]:
        graph.value_info.remove(value)


def unfuse_group_query_attention(model: onnx.ModelProto) -> list[GqaLayer]:
    """Replace each supported GroupQueryAttention node of the main graph in place; one record per node."""
    graph = model.graph
    gqa = [n for n in graph.node if n.op_type == "GroupQueryAttention" and n.domain == "com.microsoft"]
    if not gqa:
        return []
    index = GraphIndex.build(model, Path("."))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    unfuser = _Unfuser(index)
    infos, cache_names = [], {}
    for node in gqa:
        info, inputs = _describe(index, node)
        if not info.reason and opset < 13:
            info.reason = f"default-domain opset {opset} < 13 (the unfused ops take axes/splits as inputs)"
        infos.append(info)
        cache_names[info.node] = [
            inputs[3],
            inputs[4],
            node.output[1] if len(node.output) > 1 else "",
            node.output[2] if len(node.output) > 2 else "",
        ]
        if not info.reason:
            unfuser.unfuse(node, info, inputs)
    if unfuser.layer_nodes:
        replace_subgraph(graph, unfuser.shared.nodes + unfuser.layer_nodes)
        cleanup(graph)
        toposort(graph)
        _drop_constant_value_info(graph)
        _static_cache_dims(graph, infos, cache_names)
        _full_length_cache_dims(graph, infos, cache_names)
    return infos
