"""Write vision.onnx (no cache) and wrong_softmax_axis.onnx (layer 1 cannot convert)."""

import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.passes.builders import TinySpec, build_tiny_llm, build_vision_model  # noqa: E402

onnx.save(build_vision_model(), "vision.onnx")
model = build_tiny_llm(TinySpec())
softmax_nodes = [node for node in model.graph.node if node.op_type == "Softmax"]
softmax_nodes[1].attribute[0].i = 1
onnx.save(model, "wrong_softmax_axis.onnx")
print("wrote vision.onnx and wrong_softmax_axis.onnx")
