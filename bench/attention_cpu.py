"""Decode-step attention on ORT CPU: tqexport TQQuantize + TQAttention vs the float32 graph exporters emit.

Shapes: S=1, B=1, Hq=32, Hkv=8, D=128; K 4-bit, V 3-bit (hadamard rotation, no QJL). For each T the same ORT
process runs
  fp32 step : Concat(past, new) on the token axis, GQA repeat (Unsqueeze/Expand/Reshape),
              MatMul(q, K^T) * scale,
              Add mask, Softmax, MatMul -- what exported decoder graphs do;
  tq step   : TQQuantize(new K), TQQuantize(new V), TQAttention over the compressed caches;
  fp32 attn / tq attn : the same without the cache append (caches of T tokens as inputs).
Outputs stay bound to ORT (IOBinding) so neither side pays Python copies. Prints median ms, the speed ratio
and
the cache bytes per token (per layer) of both.

Run: .venv/bin/python bench/attention_cpu.py [--tokens 4096 16384] [--threads N] [--iters 30]
The library comes from TQEXPORT_ORT_LIBRARY or tqexport.runtime.ort_library_path(); threads default to
TQEXPORT_CPU_THREADS or the core count (both ORT intra-op threads and the tqexport kernels use it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tqexport.codec import Codec, CodecConfig
from tqexport.runtime import ort_library_path

B, HQ, HKV, D = 1, 32, 8, 128
OPSET = [helper.make_opsetid("", 17), helper.make_opsetid("tqexport", 1)]


def fp32_graph(t_past: int, with_concat: bool) -> onnx.ModelProto:
    t = t_past + 1
    scale = numpy_helper.from_array(np.array(D**-0.5, np.float32), "scale")
    shape5 = numpy_helper.from_array(np.array([B, HKV, HQ // HKV, t, D], np.int64), "shape5")
    shape4 = numpy_helper.from_array(np.array([B, HQ, t, D], np.int64), "shape4")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    inputs = [
        helper.make_tensor_value_info("q", TensorProto.FLOAT, [B, HQ, 1, D]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 1, t]),
    ]
    nodes, outputs = [], []
    if with_concat:
        for n in ("k", "v"):
            inputs += [
                helper.make_tensor_value_info(f"{n}_new", TensorProto.FLOAT, [B, HKV, 1, D]),
                helper.make_tensor_value_info(f"past_{n}", TensorProto.FLOAT, [B, HKV, t_past, D]),
            ]
            nodes.append(helper.make_node("Concat", [f"past_{n}", f"{n}_new"], [f"present_{n}"], axis=2))
            outputs.append(helper.make_tensor_value_info(f"present_{n}", TensorProto.FLOAT, [B, HKV, t, D]))
    else:
        for n in ("k", "v"):
            inputs.append(helper.make_tensor_value_info(f"present_{n}", TensorProto.FLOAT, [B, HKV, t, D]))
    for n in ("k", "v"):
        nodes += [
            helper.make_node("Unsqueeze", [f"present_{n}", "axes"], [f"{n}5"]),
            helper.make_node("Expand", [f"{n}5", "shape5"], [f"{n}5e"]),
            helper.make_node("Reshape", [f"{n}5e", "shape4"], [f"{n}_rep"]),
        ]
    nodes += [
        helper.make_node("Transpose", ["k_rep"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "scale"], ["qks"]),
        helper.make_node("Add", ["qks", "mask"], ["qkm"]),
        helper.make_node("Softmax", ["qkm"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v_rep"], ["out"]),
    ]
    outputs.insert(0, helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, HQ, 1, D]))
    graph = helper.make_graph(nodes, "fp32_attention", inputs, outputs, [scale, shape5, shape4, axes])
    return helper.make_model(graph, opset_imports=OPSET[:1])


def tq_graph(t_past: int, kc: Codec, vc: Codec, with_quantize: bool) -> onnx.ModelProto:
    t = t_past + 1
    inits = [
        numpy_helper.from_array(kc.rotation, "k_rot"),
        numpy_helper.from_array(kc.codebook, "k_cb"),
        numpy_helper.from_array(vc.rotation, "v_rot"),
        numpy_helper.from_array(vc.codebook, "v_cb"),
    ]
    inputs = [
        helper.make_tensor_value_info("q", TensorProto.FLOAT, [B, HQ, 1, D]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 1, t]),
    ]
    nodes, outputs = [], []
    for n, codec in (("k", kc), ("v", vc)):
        if with_quantize:
            inputs += [
                helper.make_tensor_value_info(f"{n}_new", TensorProto.FLOAT, [B, HKV, 1, D]),
                helper.make_tensor_value_info(
                    f"past_{n}", TensorProto.UINT8, [B, HKV, t_past, codec.row_bytes]
                ),
            ]
            nodes.append(
                helper.make_node(
                    "TQQuantize",
                    [f"{n}_new", f"past_{n}", f"{n}_rot", f"{n}_cb"],
                    [f"present_{n}"],
                    domain="tqexport",
                    **codec.onnx_attributes(),
                )
            )
            outputs.append(
                helper.make_tensor_value_info(f"present_{n}", TensorProto.UINT8, [B, HKV, t, codec.row_bytes])
            )
        else:
            inputs.append(
                helper.make_tensor_value_info(f"present_{n}", TensorProto.UINT8, [B, HKV, t, codec.row_bytes])
            )
    attrs = {**kc.onnx_attributes("k_"), **vc.onnx_attributes("v_")}
    attrs = {
        k: v for k, v in attrs.items() if k in ("k_bits", "k_part_sizes", "k_qjl", "v_bits", "v_part_sizes")
    }
    nodes.append(
        helper.make_node(
            "TQAttention",
            ["q", "present_k", "present_v", "mask", "k_rot", "k_cb", "v_rot", "v_cb"],
            ["out"],
            domain="tqexport",
            scale=D**-0.5,
            **attrs,
        )
    )
    outputs.insert(0, helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, HQ, 1, D]))
    graph = helper.make_graph(nodes, "tq_attention", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=OPSET)


def time_session(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, iters: int, library: str | None
) -> tuple[float, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if library:
        so.register_custom_ops_library(library)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    for name, arr in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cpu")
    times = []
    for i in range(iters + 3):
        t0 = time.perf_counter()
        sess.run_with_iobinding(binding)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    out = binding.get_outputs()[0].numpy()
    return statistics.median(times) * 1e3, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument(
        "--threads", type=int, default=int(os.environ.get("TQEXPORT_CPU_THREADS", os.cpu_count()))
    )
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    os.environ["TQEXPORT_CPU_THREADS"] = str(args.threads)
    library = os.environ.get("TQEXPORT_ORT_LIBRARY") or str(ort_library_path())
    kc = Codec.build(CodecConfig(head_dim=D, part_sizes=(D,), bits=(4,), seed=1))
    vc = Codec.build(CodecConfig(head_dim=D, part_sizes=(D,), bits=(3,), seed=2))
    fp32_bpt = 2 * HKV * D * 4
    tq_bpt = HKV * (kc.row_bytes + vc.row_bytes)
    print(f"ORT {ort.__version__}, threads={args.threads}, library={library}")
    print(
        f"cache bytes/token/layer: fp32 {fp32_bpt}, tq {tq_bpt} (K 4-bit {kc.row_bytes} B/head, "
        f"V 3-bit {vc.row_bytes} B/head): {fp32_bpt / tq_bpt:.2f}x smaller"
    )
    rng = np.random.default_rng(0)
    for t in args.tokens:
        t_past = t - 1
        k = rng.standard_normal((B, HKV, t, D)).astype(np.float32)
        v = rng.standard_normal((B, HKV, t, D)).astype(np.float32)
        q = rng.standard_normal((B, HQ, 1, D)).astype(np.float32)
        mask = np.zeros((1, 1, 1, t), np.float32)
        kq, vq = kc.quantize(k), vc.quantize(v)
        common = {"q": q, "mask": mask}
        fp_step, out_fp = time_session(
            fp32_graph(t_past, True),
            {
                **common,
                "k_new": k[:, :, -1:],
                "v_new": v[:, :, -1:],
                "past_k": k[:, :, :-1].copy(),
                "past_v": v[:, :, :-1].copy(),
            },
            args.threads,
            args.iters,
            None,
        )
        tq_step, out_tq = time_session(
            tq_graph(t_past, kc, vc, True),
            {
                **common,
                "k_new": k[:, :, -1:].copy(),
                "v_new": v[:, :, -1:].copy(),
                "past_k": kq[:, :, :-1].copy(),
                "past_v": vq[:, :, :-1].copy(),
            },
            args.threads,
            args.iters,
            library,
        )
        fp_attn, _ = time_session(
            fp32_graph(t_past, False),
            {**common, "present_k": k, "present_v": v},
            args.threads,
            args.iters,
            None,
        )
        tq_attn, _ = time_session(
            tq_graph(t_past, kc, vc, False),
            {**common, "present_k": kq, "present_v": vq},
            args.threads,
            args.iters,
            library,
        )
        # sanity: TQ output against the exact fp32 output (quantization error, not a kernel error)
        rel = np.linalg.norm(out_tq - out_fp) / np.linalg.norm(out_fp)
        print(
            f"T={t:6d}  step: fp32 {fp_step:8.2f} ms  tq {tq_step:7.2f} ms  ratio {fp_step / tq_step:5.2f}x  "
            f"attention only: fp32 {fp_attn:8.2f} ms  tq {tq_attn:7.2f} ms  ratio {fp_attn / tq_attn:5.2f}x  "
            f"(tq vs fp32 output rel. L2 {rel:.3f})"
        )


if __name__ == "__main__":
    main()
