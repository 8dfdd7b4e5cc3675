"""Check that the TensorRT plugins and the ONNX Runtime CUDA ops give the same bytes on the same inputs.

    python3 plugins/trt/harness/compare_with_ort.py --ort-lib libtqexport_ort.so DIR [DIR ...]
    python3 plugins/trt/harness/compare_with_ort.py --work WORK   (every case directory under WORK)

Each DIR is a case directory written by run_cases.py and already run by tq_trt_harness (case.txt, the input
files, plugin_out<i>.bin). The case becomes a one-node ONNX model (domain `tqexport`, docs/format.md
section 8; int8 caches become uint8, the same bytes; zero-element inputs become absent inputs), run with the
CUDAExecutionProvider (use_tf32=0, no CPU fallback) and the custom-op library. Multi-step buffer-mode cases
run one session step by step: input 0 holds every step's slice, the outputs feed the next step's past
tensors and past_lengths grows by S, as the harness does. Every output must equal plugin_out<i>.bin
byte for byte.
The library path: --ort-lib, else $TQEXPORT_ORT_LIBRARY.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

DTYPES = {
    "f32": np.float32,
    "f16": np.float16,
    "i8": np.uint8,  # caches: ORT takes uint8, the plugin int8 (the same bytes)
    "u8": np.uint8,
    "i64": np.int64,
    "bool": np.bool_,
}
LIST_FIELDS = ("bits", "part_sizes")  # ints attributes, with or without a k_/v_ prefix
CUDA = "CUDAExecutionProvider"
PROVIDER = CUDA


@dataclass
class CaseFiles:
    directory: Path
    op: str = ""
    steps: int = 1
    attributes: dict[str, object] = field(default_factory=dict)
    inputs: list[tuple[str, np.ndarray | None]] = field(default_factory=list)  # None: absent


def read_case(directory: Path) -> CaseFiles:
    case = CaseFiles(directory)
    for line in (directory / "case.txt").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "op":
            case.op = words[1]
        elif words[0] == "steps":
            case.steps = int(words[1])
        elif words[0] == "field":
            name, kind, values = words[1], words[2], words[3:]
            if kind == "f32":
                case.attributes[name] = float(values[0])
            elif name.endswith(LIST_FIELDS):
                case.attributes[name] = [int(v) for v in values]
            else:
                case.attributes[name] = int(values[0])
        elif words[0] == "input":
            name, tag, rank = words[1], words[2], int(words[3])
            shape = tuple(int(s) for s in words[4 : 4 + rank])
            files = words[4 + rank :]
            if not files:
                case.inputs.append((name, None))
                continue
            if not case.inputs and case.steps > 1:
                shape = (case.steps, *shape)
            data = np.fromfile(directory / files[0], dtype=DTYPES[tag]).reshape(shape)
            case.inputs.append((name, data))
        else:
            raise ValueError(f"{directory}/case.txt: unknown keyword {words[0]}")
    return case


def output_specs(case: CaseFiles, first: np.ndarray) -> list[tuple[str, int]]:
    float_type = helper.np_dtype_to_tensor_dtype(first.dtype)
    if case.op == "TQAttention":
        return [("out", float_type)]
    outputs = [("present_cache", onnx.TensorProto.UINT8)]
    if int(case.attributes.get("sink_tokens", 0)) + int(case.attributes.get("recent_window", 0)) > 0:
        outputs.append(("present_window", float_type))
    return outputs


PROMISE_FIELDS = ("constant_hadamard", "k_constant_hadamard", "v_constant_hadamard")
TABLE_INPUTS = ("rotation", "codebook", "k_rotation", "k_codebook", "v_rotation", "v_codebook")


def constant_inputs(case: CaseFiles) -> set[str]:
    """With a constant-Hadamard promise (docs/format.md 8.3) the rotations and codebooks are initializers, as
    in a converted graph: the ORT ops then check the promise and take the same promised kernels as the
    plugin. Without one they are fed at run time, so neither side makes a promise."""
    promised = any(int(case.attributes.get(name, 0)) for name in PROMISE_FIELDS)
    return set(TABLE_INPUTS) if promised else set()


def one_node_model(case: CaseFiles, step_inputs: list[tuple[str, np.ndarray | None]]) -> onnx.ModelProto:
    names = [name if arr is not None else "" for name, arr in step_inputs]
    while names and names[-1] == "":
        names.pop()
    outputs = output_specs(case, step_inputs[0][1])
    node = helper.make_node(case.op, names, [n for n, _ in outputs], domain="tqexport", **case.attributes)
    constants = constant_inputs(case)
    graph_inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), None)
        for name, arr in step_inputs
        if arr is not None and name not in constants
    ]
    initializers = [
        onnx.numpy_helper.from_array(arr, name)
        for name, arr in step_inputs
        if arr is not None and name in constants
    ]
    graph_outputs = [helper.make_tensor_value_info(n, t, None) for n, t in outputs]
    graph = helper.make_graph([node], f"one_{case.op}", graph_inputs, graph_outputs, initializer=initializers)
    # ORT 1.31 rejects the IR version recent onnx writes by default; IR 10 loads everywhere.
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("tqexport", 1)]
    return helper.make_model(graph, ir_version=10, opset_imports=opsets)


def make_session(model: onnx.ModelProto, library: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.register_custom_ops_library(library)
    if PROVIDER != CUDA:  # --cpu: a smoke test of this script where no GPU is
        return ort.InferenceSession(model.SerializeToString(), options, providers=[PROVIDER])
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return ort.InferenceSession(model.SerializeToString(), options, providers=[(CUDA, {"use_tf32": "0"})])


def run_ort(case: CaseFiles, library: str) -> list[np.ndarray]:
    """Runs the case's steps in ORT; returns the last step's outputs."""
    inputs = list(case.inputs)
    first = inputs[0][1]
    assert first is not None
    step_x = first if case.steps == 1 else first[0]
    step_inputs = [(inputs[0][0], step_x), *inputs[1:]]
    session = make_session(one_node_model(case, step_inputs), library)
    buffer_mode = int(case.attributes.get("cache_mode", 0)) == 1
    if case.steps > 1 and not (case.op == "TQQuantize" and buffer_mode):
        raise ValueError("more than one step is defined for buffer-mode TQQuantize only")
    constants = constant_inputs(case)
    outputs: list[np.ndarray] = []
    for step in range(case.steps):
        x = first if case.steps == 1 else first[step]
        step_inputs[0] = (step_inputs[0][0], x)
        feeds = {
            name: np.ascontiguousarray(arr)
            for name, arr in step_inputs
            if arr is not None and name not in constants
        }
        outputs = session.run(None, feeds)
        if step + 1 < case.steps:  # the outputs are next step's past tensors (cache 1, window 5)
            step_inputs[1] = (step_inputs[1][0], outputs[0])
            if len(outputs) > 1:
                step_inputs[5] = (step_inputs[5][0], outputs[1])
            name, lengths = step_inputs[6]
            assert lengths is not None
            step_inputs[6] = (name, lengths + x.shape[2])
    return outputs


def compare(directory: Path, library: str) -> bool:
    case = read_case(directory)
    label = f"{directory.name} ({case.op}, {case.steps} step(s))"
    try:
        outputs = run_ort(case, library)
    except Exception as error:  # noqa: BLE001 - every failure is reported, then the next case runs
        first_line = str(error).splitlines()[0][:200]
        if "overflow" in directory.name and "buffer overflow" in first_line:
            # run_cases' overflow case: the plugin skips the row (or, with TQEXPORT_TRT_CHECK_OVERFLOW=1,
            # fails); the ORT ops read past_lengths on the host and refuse the node before any launch.
            print(f"{label}: ORT refused it, as the ORT ops do for every buffer overflow: {first_line[:120]}")
            return True
        print(f"{label}: ORT failed: {type(error).__name__}: {first_line}")
        return False
    ok = True
    for i, out in enumerate(outputs):
        plugin_file = directory / f"plugin_out{i}.bin"
        if not plugin_file.exists():
            print(f"{label} out{i}: no {plugin_file.name}")
            ok = False
            continue
        plugin = plugin_file.read_bytes()
        mine = np.ascontiguousarray(out).tobytes()
        if plugin == mine:
            print(f"{label} out{i}: {out.dtype}{list(out.shape)} {len(mine)} bytes IDENTICAL")
            continue
        ok = False
        if len(plugin) != len(mine):
            print(f"{label} out{i}: DIFFERENT sizes: plugin {len(plugin)} bytes, ORT {len(mine)} bytes")
            continue
        got = np.frombuffer(plugin, out.dtype).reshape(out.shape)
        if out.dtype == np.uint8:
            bad = int(np.any(got != out, axis=-1).sum())
            print(f"{label} out{i}: DIFFERENT: {bad} of {int(np.prod(out.shape[:-1]))} rows differ")
        else:
            bad = int((got.view(np.uint8) != out.view(np.uint8)).reshape(out.size, -1).any(axis=1).sum())
            diff = np.nanmax(np.abs(got.astype(np.float64) - out.astype(np.float64)))
            print(f"{label} out{i}: DIFFERENT: {bad} of {out.size} values, max |plugin - ORT| {diff:.3g}")
    extra = directory / f"plugin_out{len(outputs)}.bin"
    if extra.exists():
        print(f"{label}: the plugin wrote {extra.name}, ORT has no such output")
        ok = False
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="*", type=Path)
    ap.add_argument("--work", type=Path, help="compare every case directory (with a case.txt) under WORK")
    ap.add_argument("--ort-lib", default=os.environ.get("TQEXPORT_ORT_LIBRARY", ""))
    ap.add_argument("--cpu", action="store_true", help="run ORT's CPU ops instead (a smoke test, no GPU)")
    args = ap.parse_args()
    global PROVIDER
    if args.cpu:
        PROVIDER = "CPUExecutionProvider"
    if not args.ort_lib:
        ap.error("give --ort-lib or set TQEXPORT_ORT_LIBRARY")
    if PROVIDER not in ort.get_available_providers():
        print(f"onnxruntime {ort.__version__} has no {PROVIDER}: FAIL")
        return 1
    dirs = list(args.dirs)
    if args.work:
        dirs += sorted(p.parent for p in args.work.glob("*/case.txt"))
    if not dirs:
        ap.error("no case directories")
    print(f"onnxruntime {ort.__version__} {PROVIDER}, library {args.ort_lib}, {len(dirs)} case(s)")
    ok = True
    for directory in dirs:
        ok = compare(directory, args.ort_lib) and ok
    print("compare_with_ort:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
