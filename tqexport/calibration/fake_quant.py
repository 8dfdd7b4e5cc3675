"""Quantize-dequantize of a new K or V tensor in plain ONNX ops, set per cache and per position at run time.

For x [B, Hkv, S, D], any codec of format.md section 2 without QJL (P parts, one rotation per kv head or
shared, optional norm correction), in float32:
  y = x @ R^T; n_p = ||y_p|| per part; u = y / n; c = base + sum_j step_j * [u > beta_j];
  gamma_p = n_p (or n_p / ||c_p|| with norm correction); yhat = fp16(gamma) * c; xhat = yhat @ R;
  out = Where(enable, xhat, x).
Every codec parameter is a graph input: the rotation [Hr, D, D] (Hr = 1 or Hkv), the part membership
`parts` [D, P] (one-hot: rotated coordinate i belongs to part p), per-coordinate boundaries and steps
[D, cells] (parts with fewer cells padded with boundaries no u exceeds), the base centroid [D], and the
norm-correction switch. `enable` is bool [S, 1]: per position, so a prefill can leave some tokens exact
(sinks, a recent window) the way the converted cache does. One session thus evaluates any codec at any
layer; a disabled cache costs its arithmetic but changes nothing. The result matches the reference codec
up to float32 rounding (codes can differ only for coordinates within float32 rounding of a boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tqexport.codec import Codec, CodecConfig
from tqexport.codec.codebook import boundaries

PREFIX = "tqcal"
NEVER = 1e30  # padding boundary: |u| <= 1, so no coordinate is ever above it


@dataclass(frozen=True)
class FakeQuantInputs:
    """Names of the run-time inputs that drive one fake-quantized tensor."""

    enable: str
    rotation: str
    parts: str
    bounds: str
    steps: str
    base: str
    norm_correction: str


def input_names(layer: int, kind: str) -> FakeQuantInputs:
    stem = f"{PREFIX}.{layer}.{kind}"
    return FakeQuantInputs(
        f"{stem}.enable",
        f"{stem}.rotation",
        f"{stem}.parts",
        f"{stem}.bounds",
        f"{stem}.steps",
        f"{stem}.base",
        f"{stem}.norm_correction",
    )


def codec_feeds(layer: int, kind: str, codec: Codec, enable_S1: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds that make cache (layer, kind) behave like `codec` at the positions where `enable_S1` is true."""
    config = codec.config
    if config.qjl:
        raise ValueError("the fake-quant models MSE codecs only (qjl=0)")
    names = input_names(layer, kind)
    d = config.head_dim
    cells = max(2**m - 1 for m in config.mse_bits)
    bounds = np.full((d, cells), NEVER, np.float32)
    steps = np.zeros((d, cells), np.float32)
    base = np.zeros(d, np.float32)
    parts = np.zeros((d, config.num_parts), np.float32)
    for p, (o, size, m) in enumerate(
        zip(config.part_offsets, config.part_sizes, config.mse_bits, strict=True)
    ):
        row = codec.codebook[p]
        cents = row[: 2**m].astype(np.float32)
        bounds[o : o + size, : 2**m - 1] = boundaries(row, m).astype(np.float32)
        steps[o : o + size, : 2**m - 1] = np.diff(cents)
        base[o : o + size] = cents[0]
        parts[o : o + size, p] = 1.0
    return {
        names.enable: np.asarray(enable_S1, dtype=bool).reshape(-1, 1),
        names.rotation: np.ascontiguousarray(codec.rotation, dtype=np.float32),
        names.parts: parts,
        names.bounds: bounds,
        names.steps: steps,
        names.base: base,
        names.norm_correction: np.array(bool(config.norm_correction)),
    }


def disabled_feeds(layer: int, kind: str, head_dim: int) -> dict[str, np.ndarray]:
    codec = Codec.build(CodecConfig(head_dim=head_dim, bits=(1,)))
    return codec_feeds(layer, kind, codec, np.zeros((1, 1), bool))


def enabled_feeds(layer: int, kind: str, head_dim: int, bits: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A one-part `bits`-bit codec with a shared rotation of `seed`, on every position."""
    codec = Codec.build(CodecConfig(head_dim=head_dim, bits=(bits,), seed=seed))
    return codec_feeds(layer, kind, codec, np.ones((1, 1), bool))


def fake_quant_nodes(graph: onnx.GraphProto, x_BHkvSD: str, layer: int, kind: str, elem_type: int) -> str:
    """Append the fake-quant subgraph for `x_BHkvSD` to `graph`; returns the name of its output."""
    names = input_names(layer, kind)
    stem = f"{PREFIX}.{layer}.{kind}"
    graph.input.extend(
        [
            helper.make_tensor_value_info(names.enable, TensorProto.BOOL, [f"{stem}.S", 1]),
            helper.make_tensor_value_info(
                names.rotation, TensorProto.FLOAT, [f"{stem}.Hr", f"{stem}.D", f"{stem}.D"]
            ),
            helper.make_tensor_value_info(names.parts, TensorProto.FLOAT, [f"{stem}.D", f"{stem}.P"]),
            helper.make_tensor_value_info(names.bounds, TensorProto.FLOAT, [f"{stem}.D", f"{stem}.cells"]),
            helper.make_tensor_value_info(names.steps, TensorProto.FLOAT, [f"{stem}.D", f"{stem}.cells"]),
            helper.make_tensor_value_info(names.base, TensorProto.FLOAT, [f"{stem}.D"]),
            helper.make_tensor_value_info(names.norm_correction, TensorProto.BOOL, []),
        ]
    )
    t = f"{stem}."
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1], np.int64), t + "axis_last"),
            numpy_helper.from_array(np.array(1e-30, np.float32), t + "tiny"),
            numpy_helper.from_array(np.array(1.0, np.float32), t + "one"),
            numpy_helper.from_array(np.array(65504.0, np.float32), t + "fp16_max"),
        ]
    )
    x = x_BHkvSD
    nodes = []
    if elem_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], [t + "x32"], to=TensorProto.FLOAT))
        x = t + "x32"
    nodes += [
        helper.make_node("Transpose", [names.rotation], [t + "rot_t"], perm=[0, 2, 1]),
        helper.make_node("Transpose", [names.parts], [t + "parts_t"], perm=[1, 0]),
        helper.make_node("MatMul", [x, t + "rot_t"], [t + "y"]),
        # per-part norms n_p [B, H, S, P], spread back to coordinates [B, H, S, D]
        helper.make_node("Mul", [t + "y", t + "y"], [t + "y2"]),
        helper.make_node("MatMul", [t + "y2", names.parts], [t + "n2"]),
        helper.make_node("Sqrt", [t + "n2"], [t + "n"]),
        helper.make_node("MatMul", [t + "n", t + "parts_t"], [t + "n_coord"]),
        helper.make_node("Max", [t + "n_coord", t + "tiny"], [t + "n_safe"]),
        helper.make_node("Div", [t + "y", t + "n_safe"], [t + "u"]),
        # centroid index by counting the boundaries below u, as a sum of steps
        helper.make_node("Unsqueeze", [t + "u", t + "axis_last"], [t + "u5"]),
        helper.make_node("Greater", [t + "u5", names.bounds], [t + "above"]),
        helper.make_node("Cast", [t + "above"], [t + "above_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [t + "above_f", names.steps], [t + "weighted"]),
        helper.make_node("ReduceSum", [t + "weighted", t + "axis_last"], [t + "offset"], keepdims=0),
        helper.make_node("Add", [t + "offset", names.base], [t + "c"]),
        # stored gamma_p: n_p, or n_p / ||c_p|| with norm correction; float16 on the way to the cache
        helper.make_node("Mul", [t + "c", t + "c"], [t + "c2"]),
        helper.make_node("MatMul", [t + "c2", names.parts], [t + "cn2"]),
        helper.make_node("Sqrt", [t + "cn2"], [t + "cn"]),
        helper.make_node("Where", [names.norm_correction, t + "cn", t + "one"], [t + "denom"]),
        helper.make_node("Max", [t + "denom", t + "tiny"], [t + "denom_safe"]),
        helper.make_node("Div", [t + "n", t + "denom_safe"], [t + "gamma"]),
        helper.make_node("Min", [t + "gamma", t + "fp16_max"], [t + "gamma_clip"]),
        helper.make_node("Cast", [t + "gamma_clip"], [t + "gamma16"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", [t + "gamma16"], [t + "gamma_stored"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", [t + "gamma_stored", t + "parts_t"], [t + "gamma_coord"]),
        helper.make_node("Mul", [t + "c", t + "gamma_coord"], [t + "yhat"]),
        helper.make_node("MatMul", [t + "yhat", names.rotation], [t + "xhat32"]),
    ]
    xhat = t + "xhat32"
    if elem_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [xhat], [t + "xhat"], to=elem_type))
        xhat = t + "xhat"
    nodes.append(helper.make_node("Where", [names.enable, xhat, x_BHkvSD], [t + "out"]))
    graph.node.extend(nodes)
    return t + "out"
