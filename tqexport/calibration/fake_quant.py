"""Quantize-dequantize of a new K or V tensor in plain ONNX ops, enabled per layer at run time.

For x [B, Hkv, S, D] (one part, codebook of 2**m centroids, format.md section 5 in float32):
  y = x @ R^T; n = ||y||; u = y / n; c = c_0 + sum_j (c_j - c_{j-1}) * [u > beta_j]; yhat = fp16(n) * c;
  xhat = yhat @ R; out = Where(enable, xhat, x).
Boundaries and steps are graph inputs [D, 2**m - 1] (their second dim is symbolic), so one session evaluates
any bit width at any layer, and a disabled cache costs one comparison per element; `enable` is a bool
scalar. The result matches the reference codec up to float32 rounding (codes can differ only for coordinates
within float32 rounding of a boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tqexport.codec import Codec, CodecConfig
from tqexport.codec.codebook import boundaries

PREFIX = "tqcal"


@dataclass(frozen=True)
class FakeQuantInputs:
    """Names of the run-time inputs that drive one fake-quantized tensor."""

    enable: str
    bounds: str
    steps: str
    base: str


def input_names(layer: int, kind: str) -> FakeQuantInputs:
    stem = f"{PREFIX}.{layer}.{kind}"
    return FakeQuantInputs(f"{stem}.enable", f"{stem}.bounds", f"{stem}.steps", f"{stem}.base")


def codebook_feeds(head_dim: int, bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bounds [D, 2**m - 1], steps [D, 2**m - 1], base [D]) float32 for a one-part `bits`-bit codebook."""
    codec = Codec.build(CodecConfig(head_dim=head_dim, bits=(bits,), seed=seed))
    row = codec.codebook[0]
    beta = boundaries(row, bits).astype(np.float32)
    cents = row[: 2**bits].astype(np.float32)
    bounds = np.ascontiguousarray(np.broadcast_to(beta, (head_dim, beta.size)))
    steps = np.ascontiguousarray(np.broadcast_to(np.diff(cents), (head_dim, beta.size)))
    base = np.full(head_dim, cents[0], np.float32)
    return bounds, steps, base


def disabled_feeds(layer: int, kind: str, head_dim: int) -> dict[str, np.ndarray]:
    names = input_names(layer, kind)
    bounds, steps, base = codebook_feeds(head_dim, 1)
    return {names.enable: np.array(False), names.bounds: bounds, names.steps: steps, names.base: base}


def enabled_feeds(layer: int, kind: str, head_dim: int, bits: int) -> dict[str, np.ndarray]:
    names = input_names(layer, kind)
    bounds, steps, base = codebook_feeds(head_dim, bits)
    return {names.enable: np.array(True), names.bounds: bounds, names.steps: steps, names.base: base}


def fake_quant_nodes(
    graph: onnx.GraphProto,
    x_BHkvSD: str,
    layer: int,
    kind: str,
    rotation: np.ndarray,
    elem_type: int,
) -> str:
    """Append the fake-quant subgraph for `x_BHkvSD` to `graph`; returns the name of its output."""
    names = input_names(layer, kind)
    stem = f"{PREFIX}.{layer}.{kind}"
    head_dim = rotation.shape[-1]
    graph.input.extend(
        [
            helper.make_tensor_value_info(names.enable, TensorProto.BOOL, []),
            helper.make_tensor_value_info(names.bounds, TensorProto.FLOAT, [head_dim, f"{stem}.cells"]),
            helper.make_tensor_value_info(names.steps, TensorProto.FLOAT, [head_dim, f"{stem}.cells"]),
            helper.make_tensor_value_info(names.base, TensorProto.FLOAT, [head_dim]),
        ]
    )
    rot = rotation.astype(np.float32)[None]  # [1, Hr, D, D]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(np.swapaxes(rot, -1, -2)), f"{stem}.rot_t"),
            numpy_helper.from_array(rot, f"{stem}.rot"),
            numpy_helper.from_array(np.array([-1], np.int64), f"{stem}.axis_last"),
            numpy_helper.from_array(np.array(1e-30, np.float32), f"{stem}.tiny"),
            numpy_helper.from_array(np.array(65504.0, np.float32), f"{stem}.fp16_max"),
        ]
    )
    x = x_BHkvSD
    nodes = []
    if elem_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], [f"{stem}.x32"], to=TensorProto.FLOAT))
        x = f"{stem}.x32"
    t = f"{stem}."
    nodes += [
        helper.make_node("MatMul", [x, t + "rot_t"], [t + "y"]),
        helper.make_node("ReduceL2", [t + "y", t + "axis_last"], [t + "n"], keepdims=1),
        helper.make_node("Max", [t + "n", t + "tiny"], [t + "n_safe"]),
        helper.make_node("Div", [t + "y", t + "n_safe"], [t + "u"]),
        helper.make_node("Unsqueeze", [t + "u", t + "axis_last"], [t + "u5"]),
        helper.make_node("Greater", [t + "u5", names.bounds], [t + "above"]),
        helper.make_node("Cast", [t + "above"], [t + "above_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [t + "above_f", names.steps], [t + "weighted"]),
        helper.make_node("ReduceSum", [t + "weighted", t + "axis_last"], [t + "offset"], keepdims=0),
        helper.make_node("Add", [t + "offset", names.base], [t + "c"]),
        helper.make_node("Min", [t + "n", t + "fp16_max"], [t + "n_clip"]),
        helper.make_node("Cast", [t + "n_clip"], [t + "n16"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", [t + "n16"], [t + "n_stored"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [t + "c", t + "n_stored"], [t + "yhat"]),
        helper.make_node("MatMul", [t + "yhat", t + "rot"], [t + "xhat32"]),
    ]
    xhat = t + "xhat32"
    if elem_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [xhat], [t + "xhat"], to=elem_type))
        xhat = t + "xhat"
    nodes.append(helper.make_node("Where", [names.enable, xhat, x_BHkvSD], [t + "out"]))
    graph.node.extend(nodes)
    return t + "out"
