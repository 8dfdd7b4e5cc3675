"""A hand-built ONNX decoder with a KV cache, so eval tests need neither torch nor committed fixtures.

Layout follows optimum's names: inputs `input_ids` [B, S], `attention_mask` [B, T], `position_ids` [B, S],
`past_key_values.{l}.key|value` [B, Hkv, T - S, D]; outputs `logits` [B, S, V], `present.{l}.key|value`
[B, Hkv, T, D]. Attention is causal with left padding, grouped-query (Hq = G * Hkv), and positions enter
through a learned position embedding, so wrong position_ids or a wrong mask change the logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB = 64
EMBED = 32
HEAD_DIM = 16
KV_HEADS = 2
GROUP = 2
Q_HEADS = KV_HEADS * GROUP
LAYERS = 2
MAX_POSITIONS = 128
NEG = -1e9
Q_SCALE = 0.04  # uint8 cache step


@dataclass(frozen=True)
class TqCache:
    """Hand-converted attention: TQQuantize + TQAttention (docs/format.md section 8) in concat mode."""

    key_bits: int = 4
    value_bits: int = 4
    sink_tokens: int = 0
    recent_window: int = 0
    seed: int = 0

    def codecs(self):
        from tqexport.codec import Codec, CodecConfig

        def one(bits: int, seed: int):
            config = CodecConfig(
                head_dim=HEAD_DIM,
                part_sizes=(HEAD_DIM,),
                bits=(bits,),
                qjl=False,
                norm_correction=False,
                rotation="hadamard",
                seed=seed,
            )
            return Codec.build(config, num_heads=KV_HEADS)

        return {"key": one(self.key_bits, self.seed), "value": one(self.value_bits, self.seed + 1)}

    @property
    def window(self) -> int:
        return self.sink_tokens + self.recent_window


def build_tiny_decoder(
    path: Path, seed: int = 0, weight_scale: float = 0.3, uint8_cache: bool = False, tq: TqCache | None = None
) -> Path:
    """Write the model to `path`. With `uint8_cache` the caches are uint8 (QuantizeLinear with a fixed scale,
    zero point 128), a stand-in for a converted model: same weights, lossy compressed caches. With `tq` the
    attention is rewritten by hand to our custom ops (what the converter produces), windows included."""
    codecs = tq.codecs() if tq else None
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, *shape: int) -> str:
        return const(name, (rng.standard_normal(shape) * weight_scale / np.sqrt(shape[0])).astype(np.float32))

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    const("emb", (rng.standard_normal((VOCAB, EMBED))).astype(np.float32))
    const("pos_emb", (rng.standard_normal((MAX_POSITIONS, EMBED)) * 0.5).astype(np.float32))
    const("i0", np.array([0], dtype=np.int64))
    const("i1", np.array([1], dtype=np.int64))
    const("s0", np.array(0, dtype=np.int64))
    const("s1", np.array(1, dtype=np.int64))
    const("zero_f", np.array(0.0, dtype=np.float32))
    const("one_f", np.array(1.0, dtype=np.float32))
    const("neg_f", np.array(NEG, dtype=np.float32))
    const("scale", np.array(1.0 / np.sqrt(HEAD_DIM), dtype=np.float32))
    const("q_shape", np.array([0, 0, Q_HEADS, HEAD_DIM], dtype=np.int64))
    const("kv_shape", np.array([0, 0, KV_HEADS, HEAD_DIM], dtype=np.int64))
    const("rep_shape", np.array([0, Q_HEADS, -1, HEAD_DIM], dtype=np.int64))
    const("tile_reps", np.array([1, 1, GROUP, 1, 1], dtype=np.int64))
    const("merge_shape", np.array([0, 0, Q_HEADS * HEAD_DIM], dtype=np.int64))
    const("ax2", np.array([2], dtype=np.int64))
    const("q_scale", np.array(Q_SCALE, dtype=np.float32))
    const("q_zero", np.array(128, dtype=np.uint8))
    const("ax01", np.array([0, 1], dtype=np.int64))
    const("ax12", np.array([1, 2], dtype=np.int64))

    x = node("Gather", ["emb", "input_ids"], "tok_x")
    pos = node("Gather", ["pos_emb", "position_ids"], "pos_x")
    x = node("Add", [x, pos], "x0")

    # Mask [B, 1, S, T]: padding from attention_mask, causality from query position T - S + s.
    total = node(
        "Squeeze",
        [node("Slice", [node("Shape", ["attention_mask"], "mask_shape"), "i1", "ax2"], "t_1d")],
        "t_len",
    )
    new = node(
        "Squeeze", [node("Slice", [node("Shape", ["input_ids"], "ids_shape"), "i1", "ax2"], "s_1d")], "s_len"
    )
    q_pos = node("Range", [node("Sub", [total, new], "t_minus_s"), total, "s1"], "q_pos")
    k_pos = node("Range", ["s0", total, "s1"], "k_pos")
    allowed = node(
        "LessOrEqual",
        [node("Unsqueeze", [k_pos, "i0"], "k_row"), node("Unsqueeze", [q_pos, "i1"], "q_col")],
        "causal_ok",
    )
    causal = node("Where", [allowed, "zero_f", "neg_f"], "causal_add")
    keep = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    pad = node("Mul", [node("Sub", ["one_f", keep], "mask_off"), "neg_f"], "pad_add")
    mask = node("Add", [node("Unsqueeze", [pad, "ax12"], "pad_b11t"), causal], "mask_b1st")

    for layer in range(LAYERS):
        p = f"l{layer}."
        q = node(
            "Transpose",
            [
                node(
                    "Reshape",
                    [
                        node("MatMul", [x, weight(p + "wq", EMBED, Q_HEADS * HEAD_DIM)], p + "q_flat"),
                        "q_shape",
                    ],
                    p + "q_bshd",
                )
            ],
            p + "q",
            perm=[0, 2, 1, 3],
        )
        kv = {}
        tq_in = {}
        for kind in ("key", "value"):
            w = weight(p + "w" + kind[0], EMBED, KV_HEADS * HEAD_DIM)
            new_kv = node(
                "Transpose",
                [
                    node(
                        "Reshape",
                        [node("MatMul", [x, w], p + kind + "_flat"), "kv_shape"],
                        p + kind + "_bshd",
                    )
                ],
                p + kind + "_new",
                perm=[0, 2, 1, 3],
            )
            if tq is not None:
                codec = codecs[kind]
                rot, cb = const(p + kind + "_rot", codec.rotation), const(p + kind + "_cb", codec.codebook)
                window = [f"past_key_values.{layer}.{kind}_window"] if tq.window else []
                outs = [f"present.{layer}.{kind}"] + ([f"present.{layer}.{kind}_window"] if tq.window else [])
                nodes.append(
                    helper.make_node(
                        "TQQuantize",
                        [new_kv, f"past_key_values.{layer}.{kind}", rot, cb, "", *window],
                        outs,
                        name=p + kind + "_tqq",
                        domain="tqexport",
                        sink_tokens=tq.sink_tokens,
                        recent_window=tq.recent_window,
                        **codec.onnx_attributes(),
                    )
                )
                tq_in[kind] = (outs, rot, cb)
                continue
            if uint8_cache:
                new_kv = node("QuantizeLinear", [new_kv, "q_scale", "q_zero"], p + kind + "_q")
            present = node(
                "Concat", [f"past_key_values.{layer}.{kind}", new_kv], f"present.{layer}.{kind}", axis=2
            )
            if uint8_cache:
                present = node("DequantizeLinear", [present, "q_scale", "q_zero"], p + kind + "_dq")
            tiled = node(
                "Tile",
                [node("Unsqueeze", [present, "ax2"], p + kind + "_u"), "tile_reps"],
                p + kind + "_tiled",
            )
            kv[kind] = node("Reshape", [tiled, "rep_shape"], p + kind + "_rep")
        if tq is not None:
            (k_outs, k_rot, k_cb), (v_outs, v_rot, v_cb) = tq_in["key"], tq_in["value"]
            windows = [k_outs[1], v_outs[1]] if tq.window else []
            kc, vc = codecs["key"].config, codecs["value"].config
            nodes.append(
                helper.make_node(
                    "TQAttention",
                    [q, k_outs[0], v_outs[0], mask, k_rot, k_cb, v_rot, v_cb, "", *windows],
                    [p + "attn"],
                    name=p + "tqa",
                    domain="tqexport",
                    k_bits=list(kc.bits),
                    k_part_sizes=list(kc.part_sizes),
                    k_qjl=0,
                    v_bits=list(vc.bits),
                    v_part_sizes=list(vc.part_sizes),
                    scale=float(1.0 / np.sqrt(HEAD_DIM)),
                    sink_tokens=tq.sink_tokens,
                    recent_window=tq.recent_window,
                )
            )
            attn = p + "attn"
        else:
            k_t = node("Transpose", [kv["key"]], p + "k_t", perm=[0, 1, 3, 2])
            scores = node("Mul", [node("MatMul", [q, k_t], p + "qk"), "scale"], p + "scores")
            probs = node("Softmax", [node("Add", [scores, mask], p + "masked")], p + "probs", axis=-1)
            attn = node("MatMul", [probs, kv["value"]], p + "attn")
        merged = node(
            "Reshape",
            [node("Transpose", [attn], p + "attn_bshd", perm=[0, 2, 1, 3]), "merge_shape"],
            p + "attn_merged",
        )
        x = node(
            "Add",
            [x, node("MatMul", [merged, weight(p + "wo", Q_HEADS * HEAD_DIM, EMBED)], p + "o")],
            p + "x_attn",
        )
        hidden = node("Tanh", [node("MatMul", [x, weight(p + "w1", EMBED, 2 * EMBED)], p + "up")], p + "act")
        x = node(
            "Add", [x, node("MatMul", [hidden, weight(p + "w2", 2 * EMBED, EMBED)], p + "down")], p + "x_out"
        )
    node("MatMul", [x, weight("w_out", EMBED, VOCAB)], "logits")

    cache_type = TensorProto.UINT8 if (uint8_cache or tq) else TensorProto.FLOAT
    cache_in, cache_out = [], []
    for i in range(LAYERS):
        for k in ("key", "value"):
            last = codecs[k].row_bytes if tq else HEAD_DIM
            cache_in.append(
                helper.make_tensor_value_info(
                    f"past_key_values.{i}.{k}", cache_type, ["batch", KV_HEADS, "past", last]
                )
            )
            cache_out.append(
                helper.make_tensor_value_info(
                    f"present.{i}.{k}", cache_type, ["batch", KV_HEADS, "total", last]
                )
            )
            if tq and tq.window:
                window_shape = ["batch", KV_HEADS, "past_w", HEAD_DIM]
                cache_in.append(
                    helper.make_tensor_value_info(
                        f"past_key_values.{i}.{k}_window", TensorProto.FLOAT, window_shape
                    )
                )
                cache_out.append(
                    helper.make_tensor_value_info(
                        f"present.{i}.{k}_window", TensorProto.FLOAT, ["batch", KV_HEADS, "total_w", HEAD_DIM]
                    )
                )
    graph = helper.make_graph(
        nodes,
        "tiny_decoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
            *cache_in,
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB]), *cache_out],
        inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("tqexport", 1)] if tq else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if tq:
        config = {
            "format_version": 1,
            "cache_mode": "concat",
            "sink_tokens": tq.sink_tokens,
            "recent_window": tq.recent_window,
            "key_bits": tq.key_bits,
            "value_bits": tq.value_bits,
        }
        helper.set_model_props(model, {"tqexport.config": json.dumps(config)})
    else:
        onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
