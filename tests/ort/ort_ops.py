"""Run one TQQuantize or TQAttention node in ONNX Runtime (CPU) with the tqexport custom-op library.

`run_quantize` / `run_attention` take the same inputs and attributes as `tqexport.codec.reference_ops`
(`tq_quantize` / `tq_attention`), so tests can call both with one dict. None means an absent optional input
(an empty name in the node). Every input is a graph input, so each test feeds exactly the arrays it built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
from onnx import helper

from tqexport.runtime import register_with

QUANTIZE_INPUTS = ("x", "past_cache", "rotation", "codebook", "qjl_matrix", "past_window", "past_lengths")
ATTENTION_INPUTS = (
    "q",
    "k_cache",
    "v_cache",
    "mask",
    "k_rotation",
    "k_codebook",
    "v_rotation",
    "v_codebook",
    "k_qjl_matrix",
    "k_window",
    "v_window",
    "past_lengths",
)
FLOAT_ATTRIBUTES = ("scale", "softcap")


def _elem_type(arr: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(arr.dtype)


def one_node_model(
    op: str,
    input_names: tuple[str, ...],
    inputs: dict[str, np.ndarray | None],
    outputs: list[tuple[str, int]],
    attributes: dict[str, Any],
    constants: tuple[str, ...] = (),
) -> onnx.ModelProto:
    """A model with one `op` node; absent (None) inputs become empty names, trailing ones are dropped. Inputs
    named in `constants` are initializers instead of graph inputs."""
    names = [name if inputs.get(name) is not None else "" for name in input_names]
    while names and names[-1] == "":
        names.pop()
    attrs = {k: (float(v) if k in FLOAT_ATTRIBUTES else v) for k, v in attributes.items()}
    node = helper.make_node(op, names, [name for name, _ in outputs], domain="tqexport", **attrs)
    fed = [n for n in names if n and n not in constants]
    graph_inputs = [helper.make_tensor_value_info(n, _elem_type(inputs[n]), None) for n in fed]
    initializers = [onnx.numpy_helper.from_array(np.asarray(inputs[n]), n) for n in names if n in constants]
    graph_outputs = [helper.make_tensor_value_info(n, t, None) for n, t in outputs]
    graph = helper.make_graph([node], f"one_{op}", graph_inputs, graph_outputs, initializer=initializers)
    # IR 10 (onnx 1.16): every onnxruntime the package accepts loads it, whatever onnx writes by default.
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("tqexport", 1)]
    return helper.make_model(graph, ir_version=10, opset_imports=opsets)


CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def session(model: onnx.ModelProto, provider: str = CPU, log_severity: int = 4) -> ort.InferenceSession:
    """A session running every node on `provider` (with CUDA, falling back to the CPU is an error). By default
    it logs nothing (the tests read the errors from the exceptions); log_severity 1 logs from INFO up."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = log_severity
    register_with(options)
    providers = [provider]
    if provider == CUDA:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        providers = [(CUDA, {"use_tf32": "0"})]
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)


def _feeds(input_names: tuple[str, ...], inputs: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    return {n: np.ascontiguousarray(inputs[n]) for n in input_names if inputs.get(n) is not None}


def run_quantize(
    inputs: dict[str, np.ndarray | None],
    attributes: dict[str, Any],
    with_window_output: bool | None = None,
    provider: str = CPU,
    constants: tuple[str, ...] = (),
    log_severity: int = 4,
) -> tuple[np.ndarray, np.ndarray | None]:
    """present_cache, present_window (None without a window output) of one TQQuantize node (inputs named in
    `constants` as initializers)."""
    x = inputs["x"]
    if with_window_output is None:
        with_window_output = attributes.get("sink_tokens", 0) + attributes.get("recent_window", 0) > 0
    outputs = [("present_cache", onnx.TensorProto.UINT8)]
    if with_window_output:
        outputs.append(("present_window", _elem_type(x)))
    model = one_node_model("TQQuantize", QUANTIZE_INPUTS, inputs, outputs, attributes, constants)
    feeds = {n: v for n, v in _feeds(QUANTIZE_INPUTS, inputs).items() if n not in constants}
    results = session(model, provider, log_severity).run(None, feeds)
    return results[0], (results[1] if with_window_output else None)


def run_attention(
    inputs: dict[str, np.ndarray | None],
    attributes: dict[str, Any],
    provider: str = CPU,
    constants: tuple[str, ...] = (),
    log_severity: int = 4,
) -> np.ndarray:
    """The output of one TQAttention node (inputs named in `constants` as initializers)."""
    model = one_node_model(
        "TQAttention", ATTENTION_INPUTS, inputs, [("out", _elem_type(inputs["q"]))], attributes, constants
    )
    feeds = {n: v for n, v in _feeds(ATTENTION_INPUTS, inputs).items() if n not in constants}
    return session(model, provider, log_severity).run(None, feeds)[0]
