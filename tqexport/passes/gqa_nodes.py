"""Plain-ONNX node builders for unfusing `com.microsoft::GroupQueryAttention` (see `group_query_attention`).

Letters as in docs/format.md: B batch, Hq query heads, Hkv kv heads, G = Hq / Hkv, S new tokens, P past
tokens, T = P + S, D head dim, R rotary dim (2 * cos_cache.shape[1], <= D).

Each builder appends nodes to a `NodeEmitter` and returns the name of the tensor it built. The attention
builder writes the same op sequence the decomposed exporters write (GQA repeat, `Transpose[0,1,3,2]`,
MatMul, Mul(scale), softcap `Div/Tanh/Mul`, `Where(mask, scores, -inf)`, Softmax, NaN guard, MatMul), so the
attention-read matcher recognises it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass
class NodeEmitter:
    """Appends uniquely named nodes; `op` returns the (first) output name."""

    prefix: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    count: int = 0

    def fresh(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}_{what}_{self.count}"

    def op(self, op_type: str, inputs: list[str], output: str = "", outputs: int = 1, **attrs) -> str:
        names = [output or self.fresh(op_type.lower())] + [
            self.fresh(op_type.lower()) for _ in range(outputs - 1)
        ]
        self.nodes.append(
            helper.make_node(op_type, inputs, names, name=self.fresh(f"{op_type}_node"), **attrs)
        )
        return names[0]

    def split(self, x: str, sizes: list[int], axis: int) -> list[str]:
        outputs = [self.fresh("split") for _ in sizes]
        self.nodes.append(
            helper.make_node(
                "Split", [x, self.ints(sizes)], outputs, name=self.fresh("Split_node"), axis=axis
            )
        )
        return outputs

    def const(self, value: np.ndarray) -> str:
        name = self.fresh("const")
        self.nodes.append(
            helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value, name))
        )
        return name

    def ints(self, values: list[int]) -> str:
        return self.const(np.asarray(values, dtype=np.int64))

    def scalar(self, value: float, elem_type: int) -> str:
        return self.const(np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(elem_type)))


def heads_BHSD(e: NodeEmitter, x_BSHD_flat: str, num_heads: int, head_dim: int) -> str:
    """[B, S, H * D] -> [B, H, S, D]."""
    reshaped = e.op("Reshape", [x_BSHD_flat, e.ints([0, 0, num_heads, head_dim])])
    return e.op("Transpose", [reshaped], perm=[0, 2, 1, 3])


def positions_BS(e: NodeEmitter, seqlens_k: str, query: str) -> str:
    """int64 [B, S]: query s of row b sits at max(L_b - S, 0) + s, L_b = seqlens_k[b] + 1 (ORT's rule: the
    first prompt starts at 0, every later step right after the row's L_b - S cached tokens)."""
    total = e.op("Add", [e.op("Cast", [seqlens_k], to=onnx.TensorProto.INT64), e.ints([1])])
    s_1 = e.op("Shape", [query], start=1, end=2)
    past = e.op("Max", [e.op("Sub", [e.op("Unsqueeze", [total, e.ints([1])]), s_1]), e.const(np.int64(0))])
    steps = e.op("Range", [e.const(np.int64(0)), e.op("Squeeze", [s_1, e.ints([0])]), e.const(np.int64(1))])
    return e.op("Add", [past, steps])


def visible_B1ST(e: NodeEmitter, attention_mask: str, positions_BS: str, window: int) -> str:
    """bool [B, 1, S, T]: slot t of row b holds a token iff attention_mask[b, t] = 1; that token's position
    is cumsum(attention_mask[b])[t] - 1; query s sees it iff its position is <= the query's (causal) and, with
    a local window W > 0, > the query's - W."""
    mask_i64 = e.op("Cast", [attention_mask], to=onnx.TensorProto.INT64)
    holds = e.op("Unsqueeze", [e.op("Cast", [attention_mask], to=onnx.TensorProto.BOOL), e.ints([1, 2])])
    key_pos = e.op("Sub", [e.op("CumSum", [mask_i64, e.const(np.int64(1))]), e.const(np.int64(1))])
    key_pos = e.op("Unsqueeze", [key_pos, e.ints([1, 2])])  # [B, 1, 1, T]
    query_pos = e.op("Unsqueeze", [positions_BS, e.ints([1, 3])])  # [B, 1, S, 1]
    visible = e.op("And", [e.op("LessOrEqual", [key_pos, query_pos]), holds])
    if window > 0:
        oldest = e.op("Sub", [query_pos, e.const(np.int64(window))])
        visible = e.op("And", [visible, e.op("Greater", [key_pos, oldest])])
    return visible


def rotary_tables(e: NodeEmitter, cos_cache: str, sin_cache: str, positions: str) -> tuple[str, str]:
    """cos/sin rows at the positions, as [B, 1, S, R / 2] (broadcast over heads)."""
    axes = e.ints([1])
    cos = e.op("Unsqueeze", [e.op("Gather", [cos_cache, positions], axis=0), axes])
    sin = e.op("Unsqueeze", [e.op("Gather", [sin_cache, positions], axis=0), axes])
    return cos, sin


def rotate(
    e: NodeEmitter, x_BHSD: str, cos: str, sin: str, head_dim: int, rotary_dim: int, interleaved: bool
) -> str:
    """RoPE on the first R channels (x1 cos - x2 sin, x2 cos + x1 sin) with x1/x2 the two halves, or the
    even/odd channels when interleaved; channels R..D pass through."""
    rot, rest = x_BHSD, ""
    if rotary_dim < head_dim:
        rot, rest = e.split(x_BHSD, [rotary_dim, head_dim - rotary_dim], axis=-1)
    half = rotary_dim // 2
    if interleaved:
        pairs = e.op("Reshape", [rot, e.ints([0, 0, 0, half, 2])])
        x1, x2 = e.split(pairs, [1, 1], axis=-1)
        last = e.ints([-1])
        cos, sin = e.op("Unsqueeze", [cos, last]), e.op("Unsqueeze", [sin, last])
    else:
        x1, x2 = e.split(rot, [half, half], axis=-1)
    first = e.op("Sub", [e.op("Mul", [x1, cos]), e.op("Mul", [x2, sin])])
    second = e.op("Add", [e.op("Mul", [x2, cos]), e.op("Mul", [x1, sin])])
    out = e.op("Concat", [first, second], axis=-1)
    if interleaved:
        out = e.op("Reshape", [out, e.ints([0, 0, 0, rotary_dim])])
    return e.op("Concat", [out, rest], axis=-1) if rest else out


@dataclass(frozen=True)
class AttentionShape:
    num_heads: int
    kv_num_heads: int
    head_dim: int
    scale: float
    softcap: float
    elem_type: int


def _repeat_kv(e: NodeEmitter, cache_BHkvTD: str, shape: AttentionShape) -> str:
    """HF's repeat_kv: Unsqueeze(2) -> Expand(G on axis 2) -> Reshape [B, Hq, T, D]."""
    group = shape.num_heads // shape.kv_num_heads
    if group == 1:
        return cache_BHkvTD
    expanded = e.op("Expand", [e.op("Unsqueeze", [cache_BHkvTD, e.ints([2])]), e.ints([1, 1, group, 1, 1])])
    return e.op("Reshape", [expanded, e.ints([0, shape.num_heads, -1, shape.head_dim])])


def attention(
    e: NodeEmitter,
    q_BHqSD: str,
    key_BHkvTD: str,
    value_BHkvTD: str,
    visible: str,
    shape: AttentionShape,
    output: str,
) -> str:
    """softmax(softcap(scale * q k^T) where visible, else -inf) v, written to `output` as [B, S, Hq * D]."""
    key_T = e.op("Transpose", [_repeat_kv(e, key_BHkvTD, shape)], perm=[0, 1, 3, 2])
    scores = e.op("Mul", [e.op("MatMul", [q_BHqSD, key_T]), e.scalar(shape.scale, shape.elem_type)])
    if shape.softcap > 0:
        cap = e.scalar(shape.softcap, shape.elem_type)
        scores = e.op("Mul", [e.op("Tanh", [e.op("Div", [scores, cap])]), cap])
    scores = e.op("Where", [visible, scores, e.scalar(-np.inf, shape.elem_type)])
    probs = e.op("Softmax", [scores], axis=-1)
    probs = e.op("Where", [e.op("IsNaN", [probs]), e.scalar(0.0, shape.elem_type), probs])
    out = e.op("MatMul", [probs, _repeat_kv(e, value_BHkvTD, shape)])
    merged = e.op("Transpose", [out], perm=[0, 2, 1, 3])
    return e.op("Reshape", [merged, e.ints([0, 0, shape.num_heads * shape.head_dim])], output=output)
