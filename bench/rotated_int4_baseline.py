"""Issue 6's baseline cache: Hadamard rotation + per-vector asymmetric int4 (float16 scale and zero point).

`build_baseline(model, out)` writes a copy of an original model whose new K/V pass through that quantizer
(standard ONNX ops) before the cache Concat, so every cached token holds exactly what an int4 cache would
reproduce; storage is 4 + 32 / D bits per element (codes + scale + zero point).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tqexport.calibration.capture import analyze_model
from tqexport.codec.rotation import rotation_block
from tqexport.graph.edit import toposort
from tqexport.graph.model_io import load_model, save_model


def bits_per_element(head_dim: int) -> float:
    return 4 + 32 / head_dim


def _int4_nodes(graph: onnx.GraphProto, x: str, tag: str, head_dim: int, elem_type: int) -> str:
    rot = rotation_block(head_dim, "hadamard", 0, 0).astype(np.float32)
    t = f"int4.{tag}."
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(rot.T), t + "rot_t"),
            numpy_helper.from_array(rot, t + "rot"),
            numpy_helper.from_array(np.array([-1], np.int64), t + "axis"),
            numpy_helper.from_array(np.array(15.0, np.float32), t + "levels"),
            numpy_helper.from_array(np.array(1e-12, np.float32), t + "tiny"),
            numpy_helper.from_array(np.array(0.0, np.float32), t + "zero"),
        ]
    )
    nodes = []
    src = x
    if elem_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], [t + "x32"], to=TensorProto.FLOAT))
        src = t + "x32"

    def half(name: str) -> list[onnx.NodeProto]:  # round a float32 to float16 and back (stored scale/zero)
        return [
            helper.make_node("Cast", [name], [name + "16"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", [name + "16"], [name + "_s"], to=TensorProto.FLOAT),
        ]

    nodes += [
        helper.make_node("MatMul", [src, t + "rot_t"], [t + "y"]),
        helper.make_node("ReduceMin", [t + "y", t + "axis"], [t + "lo"], keepdims=1),
        helper.make_node("ReduceMax", [t + "y", t + "axis"], [t + "hi"], keepdims=1),
        helper.make_node("Sub", [t + "hi", t + "lo"], [t + "range"]),
        helper.make_node("Div", [t + "range", t + "levels"], [t + "scale_raw"]),
        *half(t + "scale_raw"),
        helper.make_node("Max", [t + "scale_raw_s", t + "tiny"], [t + "scale"]),
        *half(t + "lo"),
        helper.make_node("Sub", [t + "y", t + "lo_s"], [t + "shifted"]),
        helper.make_node("Div", [t + "shifted", t + "scale"], [t + "ratio"]),
        helper.make_node("Round", [t + "ratio"], [t + "rounded"]),
        helper.make_node("Clip", [t + "rounded", t + "zero", t + "levels"], [t + "codes"]),
        helper.make_node("Mul", [t + "codes", t + "scale"], [t + "scaled"]),
        helper.make_node("Add", [t + "scaled", t + "lo_s"], [t + "yhat"]),
        helper.make_node("MatMul", [t + "yhat", t + "rot"], [t + "xhat"]),
    ]
    out = t + "xhat"
    if elem_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [out], [t + "xhat_cast"], to=elem_type))
        out = t + "xhat_cast"
    graph.node.extend(nodes)
    return out


def build_baseline(model_path: str | Path, out_path: str | Path) -> Path:
    path = Path(model_path)
    model = load_model(path)
    analysis = analyze_model(model, path.parent)
    edited = copy.deepcopy(model)
    producer_of = {out: n for n in edited.graph.node for out in n.output}
    for layer in analysis.convertible_layers:
        for write in (layer.key, layer.value):
            assert write is not None
            out = _int4_nodes(
                edited.graph, write.new_BHkvSD, f"{layer.layer}.{write.kind}", write.head_dim, write.elem_type
            )
            concat = producer_of[write.concat_node.output[0]]
            for slot, name in enumerate(concat.input):
                if name == write.new_BHkvSD:
                    concat.input[slot] = out
    toposort(edited.graph)
    return save_model(edited, out_path, path.parent)
