"""KV-cache write: `Concat(past_BHkvTD, new_BHkvSD, axis=2)` -> `TQQuantize(new, past_cache, rotation,
codebook)`.

Letters as in docs/format.md: B batch, Hkv kv heads, T past tokens, S new tokens, D head dim.

Pattern: graph input `past` (a cache name) feeds exactly one Concat (axis 2 or -2, two inputs, past first),
whose output reaches a graph output (`present...`), directly or through Identity nodes.
Check: rank-4 cache with static Hkv and D; the past input's other uses are only Shape nodes (rewritten
later to
report the logical shape); the new tensor has the cache dtype.
Rewrite: the TQQuantize node takes over the Concat's output name, so the present output keeps its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx
from onnx import helper

from tqexport.graph.index import GraphIndex, attribute
from tqexport.passes.buffer_lengths import PAST_LENGTHS
from tqexport.passes.match import CacheKind, CacheWrite, Mismatch

PAST_NAME = re.compile(
    r"^(?:past_key_values|past_key_value|past|cache|past_key_values_cache)[._](\d+)[._](key|value)$"
)
PRESENT_NAME = re.compile(r"^(?:present_key_values|present|present_key_value)[._](\d+)[._](key|value)$")
TQ_DOMAIN = "tqexport"


@dataclass(frozen=True)
class CacheAnchor:
    layer: int
    kind: CacheKind
    past_input: str


def find_cache_anchors(index: GraphIndex) -> list[CacheAnchor]:
    anchors = []
    for name in index.inputs:
        found = PAST_NAME.match(name)
        if found:
            anchors.append(CacheAnchor(int(found.group(1)), found.group(2), name))  # type: ignore[arg-type]
    return sorted(anchors, key=lambda a: (a.layer, a.kind))


def _follow_identity_to_output(index: GraphIndex, name: str) -> str | None:
    seen = 0
    while seen < 8:
        if index.is_graph_output(name):
            return name
        identities = [use.node for use in index.uses(name) if use.node.op_type == "Identity"]
        if len(identities) != 1:
            return None
        name = identities[0].output[0]
        seen += 1
    return None


def _past_aliases(index: GraphIndex, past: str) -> tuple[set[str], list]:
    """Names carrying the past cache unchanged (Identity, one-input Concat: TorchScript emits those), and the
    uses of all of them that are not such aliases."""
    aliases, frontier, uses = {past}, [past], []
    while frontier:
        name = frontier.pop()
        for use in index.uses(name):
            node = use.node
            is_alias = node.op_type == "Identity" or (node.op_type == "Concat" and len(node.input) == 1)
            if is_alias and use.index == 0:
                aliases.add(node.output[0])
                frontier.append(node.output[0])
            else:
                uses.append(use)
    return aliases, uses


def match_kv_write(index: GraphIndex, anchor: CacheAnchor) -> CacheWrite:
    past = anchor.past_input
    uses = index.uses(past)
    contrib = [
        u.node
        for u in uses
        if u.node.op_type in ("GroupQueryAttention", "MultiHeadAttention", "Attention")
        and u.node.domain in ("com.microsoft",)
    ]
    if contrib:
        node = contrib[0]
        raise Mismatch.at_node(
            f"the cache is owned by com.microsoft::{node.op_type} (past/present on the node, "
            f"past_present_share_buffer={attribute(node, 'past_present_share_buffer', 0)}, "
            f"do_rotary={attribute(node, 'do_rotary', 0)}); rewriting contrib attention ops is not supported",
            node,
            2,
        )
    shape = index.shape(past)
    if shape is None or len(shape) != 4:
        raise Mismatch(f"cache input has shape {shape}, expected rank 4 [B, Hkv, T, D]", past, 1)
    num_kv_heads, head_dim = shape[1], shape[3]
    if not isinstance(num_kv_heads, int) or not isinstance(head_dim, int):
        raise Mismatch(f"cache input {past} needs static Hkv and D, got {shape}", past, 1)
    aliases, uses = _past_aliases(index, past)
    implicit = [u.node for u in uses if u.index < 0]
    if implicit:
        raise Mismatch.at_node(
            "the cache is read inside a subgraph (If/Loop branch); not supported", implicit[0], 2
        )
    concats = [u for u in uses if u.node.op_type == "Concat"]
    shape_uses = [u.node for u in uses if u.node.op_type == "Shape"]
    others = [u.node for u in uses if u.node.op_type not in ("Concat", "Shape")]
    if others:
        raise Mismatch.at_node(
            f"cache input {past} is used by {others[0].op_type}, expected only Concat (+ Shape)", others[0], 2
        )
    if len(concats) != 1:
        raise Mismatch(f"cache input {past} feeds {len(concats)} Concat nodes, expected exactly 1", past, 2)
    concat = concats[0].node
    axis = int(attribute(concat, "axis", 0))
    if axis not in (2, -2):
        raise Mismatch.at_node(f"cache Concat has axis={axis}, expected 2 or -2 (the token axis)", concat, 3)
    if len(concat.input) != 2 or concat.input[0] not in aliases:
        raise Mismatch.at_node(f"cache Concat inputs {list(concat.input)}: expected [past, new]", concat, 3)
    new = concat.input[1]
    elem_type = index.dtypes.get(past, 0)
    if index.dtypes.get(new, elem_type) != elem_type:
        raise Mismatch.at_node(
            f"new {anchor.kind} dtype {index.dtypes.get(new)} differs from the cache dtype {elem_type}",
            concat,
            4,
        )
    if elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        raise Mismatch(
            f"cache dtype {onnx.TensorProto.DataType.Name(elem_type)} is not float32/float16", past, 4
        )
    concat_output = concat.output[0]
    present = _follow_identity_to_output(index, concat_output)
    if present is None:
        raise Mismatch.at_node(
            "the Concat output does not reach a graph output (the present cache)", concat, 4
        )
    present_shape_uses = [u.node for u in index.uses(concat_output) if u.node.op_type == "Shape"]
    return CacheWrite(
        layer=anchor.layer,
        kind=anchor.kind,
        past_input=past,
        present_output=present,
        concat_output=concat_output,
        concat_node=concat,
        new_BHkvSD=new,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        elem_type=elem_type,
        past_shape_uses=shape_uses,
        present_shape_uses=present_shape_uses,
    )


@dataclass(frozen=True)
class CacheCodecTensors:
    """Initializer names and attributes of one cache's codec (docs/format.md sections 2-3)."""

    rotation: str
    codebook: str
    qjl_matrix: str  # "" when qjl = 0
    bits: tuple[int, ...]
    part_sizes: tuple[int, ...]
    qjl: int
    norm_correction: int
    rotation_kind: int
    row_bytes: int


@dataclass(frozen=True)
class WindowConfig:
    cache_mode: int = 0  # 0 concat, 1 buffer
    sink_tokens: int = 0
    recent_window: int = 0
    elem_type: int = 0  # window dtype (onnx TensorProto type); 0 = the model's K/V dtype

    @property
    def size(self) -> int:
        return self.sink_tokens + self.recent_window

    def window_type(self, model_type: int) -> int:
        return self.elem_type or model_type

    def casts(self, model_type: int) -> bool:
        """True when the ops run in the window dtype and the graph's K/V/q must be cast to it."""
        return bool(self.size) and self.window_type(model_type) != model_type


def window_name(cache_name: str) -> str:
    return f"{cache_name}_window"


def build_quantize_node(
    write: CacheWrite,
    codec: CacheCodecTensors,
    window: WindowConfig,
    past_lengths: str = "",
    x_name: str = "",
) -> onnx.NodeProto:
    inputs = [
        x_name or write.new_BHkvSD,
        write.past_input,
        codec.rotation,
        codec.codebook,
        codec.qjl_matrix,
        window_name(write.past_input) if window.size else "",
        past_lengths,
    ]
    while inputs and not inputs[-1]:
        inputs.pop()
    outputs = [write.concat_output]
    if window.size:
        outputs.append(window_name(write.present_output))
    return helper.make_node(
        "TQQuantize",
        inputs,
        outputs,
        name=f"tq_quantize_{write.layer}_{write.kind}",
        domain=TQ_DOMAIN,
        bits=list(codec.bits),
        part_sizes=list(codec.part_sizes),
        qjl=codec.qjl,
        norm_correction=codec.norm_correction,
        rotation_kind=codec.rotation_kind,
        cache_mode=window.cache_mode,
        sink_tokens=window.sink_tokens,
        recent_window=window.recent_window,
        format_version=1,
    )


def fuse_kv_write(
    graph: onnx.GraphProto, planned: list[tuple[CacheWrite, CacheCodecTensors]], window: WindowConfig
) -> int:
    """Replace each planned cache Concat by a TQQuantize node. Returns the number of rewrites."""
    from tqexport.graph.edit import replace_subgraph

    nodes = []
    for write, codec in planned:
        x_name = ""
        if window.casts(write.elem_type):  # the window (and so x) is stored in another dtype than the graph's
            x_name = f"tq_x_{write.layer}_{write.kind}"
            nodes.append(
                helper.make_node(
                    "Cast",
                    [write.new_BHkvSD],
                    [x_name],
                    name=f"tq_cast_x_{write.layer}_{write.kind}",
                    to=window.window_type(write.elem_type),
                )
            )
        past_lengths = PAST_LENGTHS if window.cache_mode == 1 else ""
        nodes.append(build_quantize_node(write, codec, window, past_lengths, x_name=x_name))
    replace_subgraph(graph, nodes)
    return len(planned)
