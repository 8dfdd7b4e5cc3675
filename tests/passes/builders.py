"""Tiny decoder-only LLM graphs built with onnx.helper, mimicking each exporter's attention/cache form.

Inputs: input_ids [B, S] int64, attention_mask [B, T] int64 (1 = real token; left padding),
past_key_values.N.key/.value [B, Hkv, T_past, D]. Outputs: logits [B, S, V], present.N.key/.value.
No RoPE (the pass never looks inside the new K): K/V come straight from the projections.

Letters as in docs/format.md: B batch, S new tokens, T = T_past + S, Hq, Hkv, D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FORMS = ("eager", "sdpa", "bool_where", "opt", "onnx_attention", "gqa_contrib")


@dataclass(frozen=True)
class TinySpec:
    form: str = "eager"
    num_layers: int = 2
    hidden: int = 64
    num_q_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    vocab: int = 48
    softcap: float = 0.0
    sliding_window: int = 0  # > 0: odd layers attend only to the last `sliding_window` positions (own mask)
    k_transpose: str = "transpose"  # "transpose" | "reshape3d"
    scale_from_shape: bool = False  # scale = 1 / Sqrt(Cast(Shape(q)[3])) (GPT-2 style)
    cache_prefix: str = "past_key_values"
    present_prefix: str = "present"
    past_shape_reader: bool = False  # Shape(past_key) feeds the mask length (dynamo style)
    seed: int = 0
    dtype: str = "float32"  # "float16": weights, activations and caches in half precision


class _Builder:
    def __init__(self, spec: TinySpec) -> None:
        self.spec = spec
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.rng = np.random.default_rng(spec.seed)

    def name(self, base: str) -> str:
        self.count += 1
        return f"node_{base}_{self.count}"

    def op(
        self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs
    ) -> list[str] | str:
        node_name = self.name(op_type)
        outs = [f"{node_name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    @property
    def float_type(self):
        return np.float16 if self.spec.dtype == "float16" else np.float32

    @property
    def onnx_float(self) -> int:
        return TensorProto.FLOAT16 if self.spec.dtype == "float16" else TensorProto.FLOAT

    def const(self, value, dtype=None) -> str:
        dtype = self.float_type if dtype is None else dtype
        name = self.name("const")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, shape) -> str:
        return self.const(self.rng.standard_normal(shape) / np.sqrt(shape[0]))


def _mask_bool(b: _Builder, attention_mask: str, t_source: str, s_len: str, window: int) -> str:
    """bool [B, 1, S, T]: causal (query i is token T - S + i), padding, optional sliding window."""
    shape_t = b.op("Shape", [t_source])
    total = b.op("Gather", [shape_t, b.const(1, np.int64)], axis=0)
    key_pos = b.op("Range", [b.const(0, np.int64), total, b.const(1, np.int64)])
    start = b.op("Sub", [total, s_len])
    query_pos = b.op("Range", [start, total, b.const(1, np.int64)])
    q_col = b.op("Unsqueeze", [query_pos, b.const([1], np.int64)])
    allowed = b.op("LessOrEqual", [key_pos, q_col])  # [S, T]
    if window:
        low = b.op("Sub", [q_col, b.const(window, np.int64)])
        allowed = b.op("And", [allowed, b.op("Greater", [key_pos, low])])
    pad = b.op("Cast", [attention_mask], to=TensorProto.BOOL)
    pad4 = b.op("Unsqueeze", [pad, b.const([1, 2], np.int64)])  # [B, 1, 1, T]
    return b.op("And", [pad4, allowed])


def _to_additive(b: _Builder, mask_bool: str) -> str:
    return b.op("Where", [mask_bool, b.const(0.0), b.const(np.finfo(b.float_type).min)])


def _heads(b: _Builder, x: str, batch: str, seq: str, heads: int, d: int) -> str:
    shape = b.op("Concat", [batch, seq, b.const([heads, d], np.int64)], axis=0)
    return b.op("Transpose", [b.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])


def _repeat_kv(b: _Builder, x: str, group: int) -> str:
    if group == 1:
        return x
    shape = b.op("Shape", [x])
    unsq = b.op("Unsqueeze", [x, b.const([2], np.int64)])
    dims = [b.op("Gather", [shape, b.const([i], np.int64)], axis=0) for i in range(4)]
    exp_shape = b.op("Concat", [dims[0], dims[1], b.const([group], np.int64), dims[2], dims[3]], axis=0)
    expanded = b.op("Expand", [unsq, exp_shape])
    heads = b.op("Mul", [dims[1], b.const([group], np.int64)])
    new_shape = b.op("Concat", [dims[0], heads, dims[2], dims[3]], axis=0)
    return b.op("Reshape", [expanded, new_shape])


def _k_transposed(b: _Builder, k: str, how: str) -> str:
    if how == "transpose":
        return b.op("Transpose", [k], perm=[0, 1, 3, 2])
    shape = b.op("Shape", [k])
    dims = [b.op("Gather", [shape, b.const([i], np.int64)], axis=0) for i in range(4)]
    flat = b.op("Concat", [b.op("Mul", [dims[0], dims[1]]), dims[2], dims[3]], axis=0)
    r1 = b.op("Reshape", [k, flat])
    t = b.op("Transpose", [r1], perm=[0, 2, 1])
    back = b.op("Concat", [dims[0], dims[1], dims[3], dims[2]], axis=0)
    return b.op("Reshape", [t, back])


def _scale(b: _Builder, q: str) -> tuple[str, float]:
    d = b.spec.head_dim
    if b.spec.scale_from_shape:
        dim = b.op("Gather", [b.op("Shape", [q]), b.const(3, np.int64)], axis=0)
        root = b.op("Sqrt", [b.op("Cast", [dim], to=b.onnx_float)])
        return b.op("Div", [b.const(1.0), root]), 1.0 / np.sqrt(d)
    return b.const(1.0 / np.sqrt(d)), 1.0 / np.sqrt(d)


def build_tiny_llm(spec: TinySpec) -> onnx.ModelProto:
    b = _Builder(spec)
    hq, hkv, d, hidden = spec.num_q_heads, spec.num_kv_heads, spec.head_dim, spec.hidden
    group = hq // hkv
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", b.onnx_float, ["batch", "seq", spec.vocab])]
    embed = b.weight([spec.vocab, hidden])
    h = b.op("Gather", [embed, "input_ids"], axis=0)
    ids_shape = b.op("Shape", ["input_ids"])
    batch = b.op("Gather", [ids_shape, b.const([0], np.int64)], axis=0)
    seq = b.op("Gather", [ids_shape, b.const([1], np.int64)], axis=0)
    t_source = "attention_mask"
    masks: dict[int, str] = {}
    additive: dict[int, str] = {}
    for layer in range(spec.num_layers):
        past_k, past_v = f"{spec.cache_prefix}.{layer}.key", f"{spec.cache_prefix}.{layer}.value"
        pres_k, pres_v = f"{spec.present_prefix}.{layer}.key", f"{spec.present_prefix}.{layer}.value"
        for name in (past_k, past_v):
            inputs.append(helper.make_tensor_value_info(name, b.onnx_float, ["batch", hkv, "past_len", d]))
        for name in (pres_k, pres_v):
            outputs.append(helper.make_tensor_value_info(name, b.onnx_float, ["batch", hkv, "total", d]))
        window = spec.sliding_window if spec.sliding_window and layer % 2 == 1 else 0
        if window not in masks:
            source = t_source
            if spec.past_shape_reader:
                past_len = b.op("Gather", [b.op("Shape", [past_k]), b.const([2], np.int64)], axis=0)
                total = b.op("Add", [past_len, seq])
                source = b.op(
                    "ConstantOfShape",
                    [b.op("Concat", [batch, total], axis=0)],
                    value=helper.make_tensor("v", TensorProto.INT64, [1], [1]),
                )
                masks_bool = _mask_bool(b, "attention_mask", source, seq, window)
            else:
                masks_bool = _mask_bool(b, "attention_mask", source, seq, window)
            masks[window] = masks_bool
        mask_bool = masks[window]
        x = h
        q_proj = b.op("MatMul", [x, b.weight([hidden, hq * d])])
        if spec.form == "opt":
            q_proj = b.op("Mul", [q_proj, b.const(1.0 / np.sqrt(d))])
        q = _heads(b, q_proj, batch, seq, hq, d)
        k_new = _heads(b, b.op("MatMul", [x, b.weight([hidden, hkv * d])]), batch, seq, hkv, d)
        v_new = _heads(b, b.op("MatMul", [x, b.weight([hidden, hkv * d])]), batch, seq, hkv, d)
        b.nodes.append(helper.make_node("Concat", [past_k, k_new], [pres_k], name=b.name("Concat"), axis=2))
        b.nodes.append(helper.make_node("Concat", [past_v, v_new], [pres_v], name=b.name("Concat"), axis=-2))
        if spec.form == "onnx_attention":
            attrs = {"softcap": spec.softcap} if spec.softcap else {}
            attn = b.op("Attention", [q, pres_k, pres_v, mask_bool], **attrs)
        else:
            k_all, v_all = _repeat_kv(b, pres_k, group), _repeat_kv(b, pres_v, group)
            kt = _k_transposed(b, k_all, spec.k_transpose)
            scale_name, _ = _scale(b, q)
            if spec.form == "sdpa":
                root = b.op("Sqrt", [scale_name])
                scores = b.op("MatMul", [b.op("Mul", [q, root]), b.op("Mul", [kt, root])])
            elif spec.form == "opt":
                scores = b.op("MatMul", [q, kt])
            else:
                scores = b.op("Mul", [b.op("MatMul", [q, kt]), scale_name])
            if spec.softcap:
                cap = b.const(spec.softcap)
                scores = b.op("Mul", [b.op("Tanh", [b.op("Div", [scores, cap])]), cap])
            if spec.form == "bool_where":
                scores = b.op("Where", [mask_bool, scores, b.const(np.finfo(b.float_type).min)])
            else:
                if window not in additive:
                    additive[window] = _to_additive(b, mask_bool)
                scores = b.op("Add", [scores, additive[window]])
            probs = b.op("Softmax", [scores], axis=-1)
            if spec.form == "sdpa":
                probs = b.op("Where", [b.op("IsNaN", [probs]), b.const(0.0), probs])
            attn = b.op("MatMul", [probs, v_all])
        merged = b.op(
            "Reshape",
            [
                b.op("Transpose", [attn], perm=[0, 2, 1, 3]),
                b.op("Concat", [batch, seq, b.const([hq * d], np.int64)], axis=0),
            ],
        )
        h = b.op("Add", [h, b.op("MatMul", [merged, b.weight([hq * d, hidden])])])
    b.nodes.append(
        helper.make_node("MatMul", [h, b.weight([hidden, spec.vocab])], ["logits"], name="lm_head")
    )
    graph = helper.make_graph(b.nodes, f"tiny_{spec.form}", inputs, outputs, b.inits)
    opset = 23 if spec.form == "onnx_attention" else 18
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def build_no_cache_model() -> onnx.ModelProto:
    """Negative: the same kind of LM without any cache I/O."""
    model = build_tiny_llm(TinySpec(num_layers=1))
    graph = model.graph
    x = helper.make_tensor_value_info
    nodes = [helper.make_node("Identity", ["input_ids"], ["ids_copy"])]
    g = helper.make_graph(
        nodes,
        "no_cache",
        [x("input_ids", TensorProto.INT64, ["b", "s"])],
        [x("ids_copy", TensorProto.INT64, ["b", "s"])],
    )
    del graph
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def build_vision_model() -> onnx.ModelProto:
    """Negative: a conv classifier (no cache, no attention)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "conv_w")
    nodes = [
        helper.make_node("Conv", ["pixel_values", "conv_w"], ["feat"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["feat"], ["logits"]),
    ]
    g = helper.make_graph(
        nodes,
        "vision",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, 1, 1])],
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
