"""Attention read: the subgraph from the present K/V caches to the attention output -> one `TQAttention` node.

Letters as in docs/format.md: B batch, Hq query heads, Hkv kv heads, S new tokens, T total tokens, D head dim.

Pattern (one rule, alternatives inside):
- K path from the K Concat output to the scores MatMul (input B): Cast/Identity; GQA repeat
  `Unsqueeze(axes=2) -> Expand -> Reshape`; K transpose `Transpose[0,1,3,2]` or `Reshape ->
  Transpose[0,2,1] ->
  Reshape`; Mul/Div by a constant scalar (sqrt-scale). Or the K input of an ONNX `Attention` node.
- Q: the scores MatMul's input A, after peeling Mul/Div by constant scalars (their product joins the scale).
- scores path: Mul/Div by a constant (scale); softcap `Div(c) -> Tanh -> Mul(c)`; the mask as `Add(scores, m)`
  (additive) or `Where(m, scores, -inf)` (bool; `Where(m, -inf, scores)` is an inverted bool mask); Cast;
  `Softmax(axis=-1)`; then Cast, `Where(IsNaN(p), 0, p)`, Dropout/Identity; the `MatMul(p, V)` whose
  input B is
  the V path (Cast/Identity/GQA repeat from the V Concat output).
Check: scale before softcap before mask (the order TQAttention computes); scale and softcap are static
constants (folded, e.g. `1 / Sqrt(Shape(q)[-1])`); one mask; rank-4 q.
Rewrite: TQAttention(q, k_cache, v_cache, mask, ...) takes over the attention output's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from tqexport.graph.fold import fold_constant, fold_partial, fold_scalar
from tqexport.graph.index import GraphIndex, attribute
from tqexport.passes.kv_write import TQ_DOMAIN, CacheCodecTensors, WindowConfig, window_name
from tqexport.passes.match import AttentionRead, CacheWrite, Mismatch

_PASS_THROUGH = ("Cast", "Identity")


def _data_uses(index: GraphIndex, name: str, write: CacheWrite | None = None) -> list:
    """Uses that carry data onward: drop Shape reads and, for the cache tensor itself, its Identity path
    to output."""
    uses = []
    for use in index.uses(name):
        if use.node.op_type == "Shape":
            continue
        if write is not None and name == write.concat_output and use.node.op_type == "Identity":
            continue
        uses.append(use)
    return uses


def _scalar_operand(index: GraphIndex, node: onnx.NodeProto, data_slot: int) -> float | None:
    other = node.input[1 - data_slot]
    return fold_scalar(index, other)


def _axes(index: GraphIndex, node: onnx.NodeProto) -> list[int] | None:
    axes = attribute(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = fold_constant(index, node.input[1])
        axes = None if value is None else [int(v) for v in value.reshape(-1)]
    return None if axes is None else list(axes)


@dataclass
class ShapeRead:
    """A Shape node reading a tensor on a replaced K/V path, and that tensor's layout in letters."""

    node: onnx.NodeProto
    layout: tuple[str, ...]  # letters from {B, Hkv, Hq, G, 1, T, D, BHkv, BHq}
    kind: str  # "key" | "value": whose present cache gives T


class _CachePath:
    """Walk from a cache Concat output to its consumer (scores MatMul, probs MatMul, or ONNX Attention)."""

    def __init__(self, index: GraphIndex, write: CacheWrite) -> None:
        self.index = index
        self.write = write
        self.transposed = False
        self.gqa_repeat = False
        self.scale = 1.0
        self.k_transpose = ""
        self.steps: list[str] = []
        # Shape reads of path tensors, with the tensor's layout in letters (rewritten to the logical shape).
        self.shape_reads: list[ShapeRead] = []
        self.layout: tuple[str, ...] = ("B", "Hkv", "T", "D")
        self.group: int | None = None  # G from a GQA repeat's Expand shape, when static

    def _note(self, name: str, layout: tuple[str, ...]) -> None:
        for use in self.index.uses(name):
            if use.node.op_type == "Shape":
                self.shape_reads.append(ShapeRead(use.node, layout, self.write.kind))

    def _single_use(self, name: str):
        uses = _data_uses(self.index, name, self.write)
        if len(uses) != 1:
            ops = [u.node.op_type for u in uses]
            raise Mismatch(
                f"{self.write.kind} path tensor {name!r} has {len(uses)} data consumers {ops}, expected 1",
                name,
                len(self.steps) + 5,
            )
        return uses[0]

    def walk(self):
        name = self.write.concat_output
        for _ in range(16):
            use = self._single_use(name)
            node = use.node
            op = node.op_type
            progress = len(self.steps) + 5
            if op in _PASS_THROUGH:
                self.steps.append(op)
                name = node.output[0]
                self._note(name, self.layout)
                continue
            if op == "Unsqueeze":
                if _axes(self.index, node) != [2]:
                    raise Mismatch.at_node(
                        f"Unsqueeze axes {_axes(self.index, node)} on the {self.write.kind} "
                        "path; the GQA repeat unsqueezes axis 2",
                        node,
                        progress,
                    )
                expand = self._single_use(node.output[0]).node
                if expand.op_type != "Expand":
                    raise Mismatch.at_node(
                        "GQA repeat: Unsqueeze(2) not followed by Expand", expand, progress
                    )
                reshape = self._single_use(expand.output[0]).node
                if reshape.op_type != "Reshape":
                    raise Mismatch.at_node("GQA repeat: Expand not followed by Reshape", reshape, progress)
                self.gqa_repeat = True
                expand_shape = fold_partial(self.index, expand.input[1]) if len(expand.input) > 1 else None
                if expand_shape and len(expand_shape) == 5 and expand_shape[2]:
                    self.group = expand_shape[2]
                self.steps += ["Unsqueeze", "Expand", "Reshape"]
                b, _h, t, d = self.layout
                self._note(node.output[0], (b, "Hkv", "1", t, d))
                self._note(expand.output[0], (b, "Hkv", "G", t, d))
                self.layout = (b, "Hq", t, d)
                name = reshape.output[0]
                self._note(name, self.layout)
                continue
            if op == "Transpose":
                perm = list(attribute(node, "perm", []) or [])
                if perm not in ([0, 1, 3, 2],):
                    raise Mismatch.at_node(
                        f"Transpose perm {perm} on the {self.write.kind} path", node, progress
                    )
                self.transposed = not self.transposed
                self.k_transpose = "Transpose[0,1,3,2]"
                self.steps.append("Transpose")
                self.layout = (*self.layout[:2], self.layout[3], self.layout[2])
                name = node.output[0]
                self._note(name, self.layout)
                continue
            if op == "Reshape":
                transpose = self._single_use(node.output[0]).node
                perm = list(attribute(transpose, "perm", []) or [])
                if transpose.op_type != "Transpose" or perm != [0, 2, 1]:
                    raise Mismatch.at_node(
                        f"Reshape on the {self.write.kind} path is neither a GQA repeat nor "
                        "a Reshape->Transpose[0,2,1]->Reshape K transpose",
                        node,
                        progress,
                    )
                back = self._single_use(transpose.output[0]).node
                if back.op_type != "Reshape":
                    raise Mismatch.at_node(
                        "K transpose: Transpose[0,2,1] not followed by Reshape", back, progress
                    )
                self.transposed = not self.transposed
                self.k_transpose = "Reshape->Transpose[0,2,1]->Reshape"
                self.steps += ["Reshape", "Transpose", "Reshape"]
                b, h, t, d = self.layout
                self._note(node.output[0], ("B" + h, t, d))
                self._note(transpose.output[0], ("B" + h, d, t))
                self.layout = (b, h, d, t)
                name = back.output[0]
                self._note(name, self.layout)
                continue
            if op in ("Mul", "Div") and use.index in (0, 1):
                if op == "Div" and use.index != 0:
                    raise Mismatch.at_node("Div with the cache as divisor", node, progress)
                value = _scalar_operand(self.index, node, use.index)
                if value is None:
                    raise Mismatch.at_node(
                        f"{op} on the {self.write.kind} path by a non-constant", node, progress
                    )
                self.scale *= value if op == "Mul" else 1.0 / value
                self.steps.append(op)
                name = node.output[0]
                self._note(name, self.layout)
                continue
            return use
        raise Mismatch(f"{self.write.kind} path too long", name, 20)


def _peel_q(index: GraphIndex, name: str) -> tuple[str, float, list[str]]:
    scale, steps = 1.0, []
    for _ in range(4):
        node = index.producer.get(name)
        if node is None or node.op_type not in ("Mul", "Div"):
            break
        slot = 0
        if node.op_type == "Mul":
            value = fold_scalar(index, node.input[1])
            if value is None:
                value, slot = fold_scalar(index, node.input[0]), 1
        else:
            value = fold_scalar(index, node.input[1])
        if value is None or (node.op_type == "Div" and value == 0):
            break
        scale *= value if node.op_type == "Mul" else 1.0 / value
        steps.append(node.op_type)
        name = node.input[slot]
    return name, scale, steps


def _is_minus_inf(index: GraphIndex, name: str) -> bool:
    value = fold_constant(index, name)
    if value is None or value.size != 1:
        return False
    v = float(value.reshape(-1)[0])
    return v == -math.inf or v <= -1e4 or v <= float(np.finfo(np.float16).min)


def _nan_guard(index: GraphIndex, uses: list) -> list:
    """`Where(IsNaN(p), 0, p)` reads p twice; keep the Where as the single onward use."""
    by_op = {use.node.op_type: use for use in uses}
    isnan, where = by_op.get("IsNaN"), by_op.get("Where")
    if isnan is None or where is None or where.node.input[0] != isnan.node.output[0] or where.index != 2:
        return uses
    return [where]


def _match_scores_to_probs_matmul(index: GraphIndex, scores: str, progress: int):
    """Forward from the QK MatMul output; returns (probs MatMul use, scale, softcap, mask, kind, steps)."""
    scale, softcap, steps = 1.0, 0.0, []
    terms: list[tuple[str, str]] = []  # (kind, tensor) of each mask applied before Softmax, in order
    name = scores
    softmax_seen = False
    for _ in range(16):
        uses = _data_uses(index, name)
        if softmax_seen and len(uses) == 2:
            uses = _nan_guard(index, uses)
        if len(uses) != 1:
            raise Mismatch(f"scores tensor {name!r} has {len(uses)} consumers, expected 1", name, progress)
        use = uses[0]
        node, op = use.node, use.node.op_type
        progress += 1
        if op == "Dropout" and len(node.input) > 2 and node.input[2]:
            training = fold_scalar(index, node.input[2])
            if training is None or training:
                raise Mismatch.at_node("Dropout with training_mode not constant false", node, progress)
        if op in _PASS_THROUGH or op == "Dropout":
            steps.append(op)
            name = node.output[0]
            continue
        if softmax_seen:
            if op == "MatMul" and use.index == 0:
                return use, scale, softcap, terms, steps
            if op == "Where" and use.index == 2:
                cond = index.producer.get(node.input[0])
                zero = fold_scalar(index, node.input[1])
                if cond is not None and cond.op_type == "IsNaN" and zero == 0.0:
                    steps.append("Where(IsNaN)")
                    name = node.output[0]
                    continue
            raise Mismatch.at_node(f"after Softmax expected MatMul(p, V), found {op}", node, progress)
        if op in ("Mul", "Div") and not (op == "Div" and use.index == 1):
            value = _scalar_operand(index, node, use.index)
            consumer = _data_uses(index, node.output[0])
            if (
                op == "Div"
                and value is not None
                and len(consumer) == 1
                and consumer[0].node.op_type == "Tanh"
            ):
                tanh = consumer[0].node
                after = _data_uses(index, tanh.output[0])
                cap = (
                    None
                    if len(after) != 1 or after[0].node.op_type != "Mul"
                    else _scalar_operand(index, after[0].node, after[0].index)
                )
                if cap is None or abs(cap - value) > 1e-6 * abs(value):
                    raise Mismatch.at_node(
                        "softcap Div(c)->Tanh->Mul(c) with different constants", tanh, progress
                    )
                if terms:
                    raise Mismatch.at_node(
                        "softcap after the mask; TQAttention caps before masking", tanh, progress
                    )
                softcap = value
                steps += ["Div", "Tanh", "Mul"]
                name = after[0].node.output[0]
                continue
            if value is None:
                raise Mismatch.at_node(f"{op} on the scores by a non-constant", node, progress)
            if softcap or terms:
                raise Mismatch.at_node(
                    f"scale {op} after the softcap or mask; TQAttention scales first", node, progress
                )
            scale *= value if op == "Mul" else 1.0 / value
            steps.append(op)
            name = node.output[0]
            continue
        if op == "Add":
            terms.append(("additive", node.input[1 - use.index]))
            steps.append("Add(mask)")
            name = node.output[0]
            continue
        if op == "Where" and use.index in (1, 2):
            other = node.input[3 - use.index]
            if not _is_minus_inf(index, other):
                raise Mismatch.at_node("Where on the scores with a fill that is not -inf", node, progress)
            terms.append(("bool" if use.index == 1 else "bool_inverted", node.input[0]))
            steps.append("Where(mask)")
            name = node.output[0]
            continue
        if op == "Softmax":
            axis = int(attribute(node, "axis", -1))
            rank = index.rank(name)
            if axis != -1 and not (rank is not None and axis == rank - 1):
                raise Mismatch.at_node(f"Softmax axis {axis} is not the last axis", node, progress)
            softmax_seen = True
            steps.append("Softmax")
            name = node.output[0]
            continue
        raise Mismatch.at_node(f"unexpected {op} between the scores MatMul and Softmax", node, progress)
    raise Mismatch("scores path too long", scores, progress)


def _check_mask(index: GraphIndex, mask: str, progress: int) -> int | None:
    if not mask:
        raise Mismatch(
            "no attention mask before Softmax; TQAttention needs the mask tensor (padding/causality)",
            "",
            progress,
        )
    rank = index.rank(mask)
    if rank is not None and rank > 4:
        raise Mismatch(f"mask {mask!r} has rank {rank}, expected <= 4", mask, progress)
    return rank


def match_attention_read(index: GraphIndex, key: CacheWrite, value: CacheWrite) -> AttentionRead:
    k_path, v_path = _CachePath(index, key), _CachePath(index, value)
    k_use = k_path.walk()
    v_use = v_path.walk()
    k_node, v_node = k_use.node, v_use.node
    progress = 8 + len(k_path.steps)
    if k_node.op_type == "Attention" and k_node.domain in ("", "ai.onnx"):
        return _match_onnx_attention(index, key, value, k_path, v_path, k_use, v_use, progress)
    if k_node.op_type != "MatMul" or k_use.index != 1:
        raise Mismatch.at_node(
            f"the K path ends at {k_node.op_type} input {k_use.index}, expected MatMul input B",
            k_node,
            progress,
        )
    if not k_path.transposed:
        raise Mismatch.at_node("the K path reaches the scores MatMul without a transpose", k_node, progress)
    if v_path.transposed or v_path.scale != 1.0:
        raise Mismatch.at_node("the V path is transposed or scaled", v_node, progress)
    q, q_scale, q_steps = _peel_q(index, k_node.input[0])
    probs_use, s_scale, softcap, terms, s_steps = _match_scores_to_probs_matmul(
        index, k_node.output[0], progress + 1
    )
    progress += 2 + len(s_steps)
    probs = probs_use.node
    if v_node is not probs or v_use.index != 1:
        raise Mismatch.at_node(
            f"the V path ends at {v_node.op_type}, not at the probs MatMul input B", v_node, progress
        )
    if not terms:
        _check_mask(index, "", progress)
    ranks = [_check_mask(index, tensor, progress) for _kind, tensor in terms]
    mask_rank = None if None in ranks else max(ranks)
    (kind, mask) = terms[0] if len(terms) == 1 else ("combined", "")
    q_shape = index.shape(q)
    if q_shape is not None and len(q_shape) != 4:
        raise Mismatch(f"q {q!r} has shape {q_shape}, expected [B, Hq, S, D]", q, progress)
    num_q_heads = _num_q_heads(index, q_shape, probs.output[0], key, k_path)
    form = "decomposed-sdpa" if "Where(IsNaN)" in s_steps or k_path.scale != 1.0 else "eager"
    return AttentionRead(
        form=form,
        q_BHqSD=q,
        out_BHqSD=probs.output[0],
        mask=mask,
        mask_kind=kind,
        mask_rank=mask_rank,
        scale=q_scale * k_path.scale * s_scale,
        softcap=softcap,
        num_q_heads=num_q_heads,
        out_elem_type=index.dtypes.get(probs.output[0]),
        q_elem_type=index.dtypes.get(q),
        nodes=q_steps + ["MatMul"] + s_steps + ["MatMul"],
        mask_terms=terms,
        shape_reads=k_path.shape_reads + v_path.shape_reads,
        gqa_repeat=k_path.gqa_repeat,
        k_transpose=k_path.k_transpose,
    )


def _num_q_heads(index: GraphIndex, q_shape, out: str, key: CacheWrite, k_path: _CachePath) -> int | None:
    """Hq from q's static shape, else the attention output's, else Hkv * G of the GQA repeat (or Hkv)."""
    for shape in (q_shape, index.shape(out)):
        if shape and len(shape) == 4 and isinstance(shape[1], int):
            return shape[1]
    if k_path.gqa_repeat:
        return key.num_kv_heads * k_path.group if k_path.group else None
    return key.num_kv_heads if key.num_kv_heads > 1 else None  # Hkv = 1 may broadcast over any Hq (MQA)


def _match_onnx_attention(index, key, value, k_path, v_path, k_use, v_use, progress) -> AttentionRead:
    node = k_use.node
    if k_use.index != 1 or v_use.node is not node or v_use.index != 2:
        raise Mismatch.at_node("K/V caches do not feed Attention inputs 1 and 2", node, progress)
    if k_path.transposed or k_path.scale != 1.0:
        raise Mismatch.at_node("K path into Attention is transposed or scaled", node, progress)
    inputs = list(node.input) + [""] * (7 - len(node.input))
    if inputs[4] or inputs[5]:
        raise Mismatch.at_node(
            "Attention has its own past_key/past_value inputs besides the outer Concat", node, progress
        )
    if inputs[6]:
        raise Mismatch.at_node("Attention nonpad_kv_seqlen input is not supported", node, progress)
    if any(name and index.uses(name) for name in list(node.output)[1:]) or any(
        name and index.is_graph_output(name) for name in list(node.output)[1:]
    ):
        raise Mismatch.at_node("Attention's present/qk outputs are used", node, progress)
    if int(attribute(node, "is_causal", 0)):
        raise Mismatch.at_node(
            "Attention is_causal=1 with an outer KV cache (implicit causal alignment) is not "
            "supported; export with an explicit mask",
            node,
            progress,
        )
    if int(attribute(node, "qk_matmul_output_mode", 0)):
        raise Mismatch.at_node("Attention qk_matmul_output_mode != 0", node, progress)
    q = inputs[0]
    if index.rank(q) not in (None, 4):
        raise Mismatch.at_node(
            f"Attention with rank-{index.rank(q)} q (3-D packed heads) is not supported", node, progress
        )
    mask = inputs[3]
    mask_rank = _check_mask(index, mask, progress)
    kind = "bool" if index.dtypes.get(mask) == onnx.TensorProto.BOOL else "additive"
    scale = attribute(node, "scale", None)
    if scale is None:
        scale = 1.0 / math.sqrt(key.head_dim)
    q_shape = index.shape(q)
    num_q_heads = q_shape[1] if q_shape and isinstance(q_shape[1], int) else None
    return AttentionRead(
        form="onnx-attention",
        q_BHqSD=q,
        out_BHqSD=node.output[0],
        mask=mask,
        mask_kind=kind,
        mask_rank=mask_rank,
        scale=float(scale),
        softcap=float(attribute(node, "softcap", 0.0)),
        num_q_heads=num_q_heads,
        out_elem_type=index.dtypes.get(node.output[0]),
        q_elem_type=index.dtypes.get(q),
        nodes=["Attention"],
        mask_terms=[(kind, mask)],
        gqa_repeat=k_path.gqa_repeat,
        shape_reads=k_path.shape_reads + v_path.shape_reads,
    )


def _combine_masks(nodes: list[onnx.NodeProto], layer: int, terms: list[tuple[str, str]]) -> str:
    """One additive mask equal in effect to several: additive terms summed; where a bool term excludes a
    position, the float32 minimum (as the exporters' own fill) takes the place of the sum."""
    p = f"tq_mask_{layer}"
    additive = [tensor for kind, tensor in terms if kind == "additive"]
    acc = ""
    for i, tensor in enumerate(additive):
        if not acc:
            acc = tensor
            continue
        nodes.append(helper.make_node("Add", [acc, tensor], [f"{p}_sum{i}"], name=f"{p}_sum{i}"))
        acc = f"{p}_sum{i}"
    fill = f"{p}_fill"
    nodes.append(
        helper.make_node(
            "Constant",
            [],
            [fill],
            name=fill,
            value=helper.make_tensor(fill, onnx.TensorProto.FLOAT, [], [float(np.finfo(np.float32).min)]),
        )
    )
    if not acc:
        zero = f"{p}_zero"
        nodes.append(
            helper.make_node(
                "Constant",
                [],
                [zero],
                name=zero,
                value=helper.make_tensor(zero, onnx.TensorProto.FLOAT, [], [0.0]),
            )
        )
        acc = zero
    else:
        nodes.append(helper.make_node("CastLike", [fill, acc], [f"{fill}_like"], name=f"{fill}_like"))
        fill = f"{fill}_like"
    for i, (kind, tensor) in enumerate(terms):
        if kind == "additive":
            continue
        cond = tensor
        if kind == "bool_inverted":
            nodes.append(helper.make_node("Not", [tensor], [f"{p}_not{i}"], name=f"{p}_not{i}"))
            cond = f"{p}_not{i}"
        nodes.append(helper.make_node("Where", [cond, acc, fill], [f"{p}_where{i}"], name=f"{p}_where{i}"))
        acc = f"{p}_where{i}"
    return acc


def build_attention_nodes(
    layer: int,
    key: CacheWrite,
    value: CacheWrite,
    read: AttentionRead,
    k_codec: CacheCodecTensors,
    v_codec: CacheCodecTensors,
    window: WindowConfig,
    past_lengths: str = "",
) -> list[onnx.NodeProto]:
    nodes: list[onnx.NodeProto] = []
    mask = read.mask
    if read.mask_kind == "combined":
        mask = _combine_masks(nodes, layer, read.mask_terms)
    if read.mask_kind == "bool_inverted":
        nodes.append(helper.make_node("Not", [mask], [f"tq_mask_{layer}"], name=f"tq_mask_not_{layer}"))
        mask = f"tq_mask_{layer}"
    if read.mask_rank is not None and read.mask_rank < 4:
        axes_name = f"tq_mask_axes_{layer}"
        axes = list(range(4 - read.mask_rank))
        nodes.append(
            helper.make_node(
                "Constant",
                [],
                [axes_name],
                name=f"tq_mask_axes_{layer}",
                value=helper.make_tensor(axes_name, onnx.TensorProto.INT64, [len(axes)], axes),
            )
        )
        nodes.append(
            helper.make_node(
                "Unsqueeze", [mask, axes_name], [f"tq_mask4_{layer}"], name=f"tq_mask_unsqueeze_{layer}"
            )
        )
        mask = f"tq_mask4_{layer}"
    q_name, op_type = read.q_BHqSD, read.q_elem_type
    if read.q_elem_type is not None and window.casts(read.q_elem_type):
        op_type = window.window_type(read.q_elem_type)  # windows and q share one dtype (format.md 8.2)
        q_name = f"tq_q_{layer}"
        nodes.append(
            helper.make_node("Cast", [read.q_BHqSD], [q_name], name=f"tq_cast_q_{layer}", to=op_type)
        )
    cast_output = read.out_elem_type is not None and op_type is not None and read.out_elem_type != op_type
    out = f"tq_attention_out_{layer}" if cast_output else read.out_BHqSD
    inputs = [
        q_name,
        key.concat_output,
        value.concat_output,
        mask,
        k_codec.rotation,
        k_codec.codebook,
        v_codec.rotation,
        v_codec.codebook,
        k_codec.qjl_matrix,
        window_name(key.present_output) if window.size else "",
        window_name(value.present_output) if window.size else "",
        past_lengths,
    ]
    while inputs and not inputs[-1]:
        inputs.pop()
    nodes.append(
        helper.make_node(
            "TQAttention",
            inputs,
            [out],
            name=f"tq_attention_{layer}",
            domain=TQ_DOMAIN,
            k_bits=list(k_codec.bits),
            k_part_sizes=list(k_codec.part_sizes),
            k_qjl=k_codec.qjl,
            v_bits=list(v_codec.bits),
            v_part_sizes=list(v_codec.part_sizes),
            scale=float(read.scale),
            softcap=float(read.softcap),
            cache_mode=window.cache_mode,
            sink_tokens=window.sink_tokens,
            recent_window=window.recent_window,
            format_version=1,
        )
    )
    if cast_output:
        nodes.append(
            helper.make_node(
                "Cast", [out], [read.out_BHqSD], name=f"tq_attention_cast_{layer}", to=int(read.out_elem_type)
            )
        )
    return nodes
