"""Per-token decode latency under ORT's CUDA provider: converted (TurboQuant caches) vs original model.

The models are random-weight Llamas with Llama-3-8B's layer shapes (hidden 4096, Hq 32, Hkv 8, D 128,
intermediate 14336), a few layers, float16, exported by bench/gpu_e2e/export_models.py (optimum,
TorchScript; ORT runs the original's decomposed attention: Concat + GQA repeat + MatMul + Softmax + MatMul)
and converted with `tqexport convert --preset 4` / `--preset 3`. Weights are written by
bench/gpu_e2e/fill_weights.py when missing.

Method: IO binding, so caches stay on the GPU between steps (each step's present caches are bound as the
next step's past). The past at context T is synthetic: the original gets random float16 caches
[B, Hkv, T, D]; a converted model gets caches made by its own TQQuantize op (a one-node graph with the
layer's rotation, codebook and attributes, run on the CUDA provider) from random float16 K/V, i.e. valid
compressed rows [B, Hkv, T, row_bytes]. Then `--warmup` steps, then `--steps` timed steps (the context grows
by one per step); ms/token is the median wall time of a step (host clock around run_with_iobinding and the
output synchronisation).

    python bench/decode_ort_gpu.py --models build/e2e/models [--contexts 4096 32768] [--batch 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gpu_e2e.fill_weights import external_tensors, fill, share  # noqa: E402
from bench.gpu_e2e.ort_cuda import CUDA, card_name, make_session  # noqa: E402
from tqexport.eval.cache_io import CacheLayout  # noqa: E402

VARIANTS = (("original", "llama8b"), ("tq4", "llama8b-tq4"), ("tq3", "llama8b-tq3"))


def ensure_weights(models: Path) -> None:
    original = models / "llama8b" / "model.onnx"
    if not all((original.parent / t[3]).is_file() for t in external_tensors(original)):
        fill(original, seed=0)
    for _, folder in VARIANTS[1:]:
        converted = models / folder / "model.onnx"
        if converted.is_file() and not (converted.parent / "model.onnx.data").is_file():
            share(original, converted)


def quantize_graph(node: Any, inits: dict[str, Any], x_dtype: int) -> bytes:
    """A one-node TQQuantize model: `node`'s attributes and constant inputs; x and past_cache as inputs."""
    from onnx import TensorProto, helper

    names = list(node.input)
    x_name, cache_name = "x", "past_cache"
    inputs = [x_name, cache_name] + names[2:5]
    if len(names) > 5 and names[5]:
        raise ValueError("quantize_graph: windows (sink/recent) are not benchmarked here")
    constants = [inits[n] for n in names[2:5] if n]
    quantize = helper.make_node(
        "TQQuantize", inputs, ["present_cache"], domain="tqexport", attribute=list(node.attribute)
    )
    graph = helper.make_graph(
        [quantize],
        "quantize_only",
        [
            helper.make_tensor_value_info(x_name, x_dtype, ["B", "H", "S", "D"]),
            helper.make_tensor_value_info(cache_name, TensorProto.UINT8, ["B", "H", 0, "R"]),
        ],
        [helper.make_tensor_value_info("present_cache", TensorProto.UINT8, ["B", "H", "T", "R"])],
        initializer=constants,
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("tqexport", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def compressed_pasts(
    model_path: Path, layout: CacheLayout, batch: int, context: int
) -> dict[str, np.ndarray]:
    """Past caches for a converted model: random float16 K/V through the model's own TQQuantize nodes."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    by_present = {node.output[0]: node for node in model.graph.node if node.op_type == "TQQuantize"}
    rng = np.random.default_rng(0)
    pasts: dict[str, np.ndarray] = {}
    for slot in layout.cache_slots:
        node = by_present[slot.present_name]
        heads, row_bytes = slot.static_dim(1), slot.static_dim(3)
        options = ort.SessionOptions()
        from tqexport import runtime

        runtime.register_with(options)
        session = ort.InferenceSession(quantize_graph(node, inits, onnx.TensorProto.FLOAT16), options, [CUDA])
        head_dim = int(inits[node.input[2]].dims[-1])
        x = rng.standard_normal((batch, heads, context, head_dim), dtype=np.float32).astype(np.float16)
        empty = np.zeros((batch, heads, 0, row_bytes), dtype=np.uint8)
        pasts[slot.past_name] = session.run(None, {"x": x, "past_cache": empty})[0]
    return pasts


def float_pasts(layout: CacheLayout, batch: int, context: int, head_dim: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        slot.past_name: rng.standard_normal(
            (batch, slot.static_dim(1), context, head_dim), dtype=np.float32
        ).astype(slot.dtype)
        for slot in layout.slots
    }


def time_decode(
    session: Any, pasts: dict[str, np.ndarray], batch: int, context: int, warmup: int, steps: int
) -> float:
    """Median ms per decode step, caches kept on the GPU through IO binding."""
    import onnxruntime as ort

    layout = CacheLayout.from_io(session.get_inputs(), session.get_outputs())
    past_values = {name: ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for name, a in pasts.items()}
    inputs = {i.name for i in session.get_inputs()}
    rng = np.random.default_rng(1)
    times = []
    for step in range(warmup + steps):
        length = context + step
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", rng.integers(3, 500, size=(batch, 1), dtype=np.int64))
        if "attention_mask" in inputs:
            binding.bind_cpu_input("attention_mask", np.ones((batch, length + 1), dtype=np.int64))
        if "position_ids" in inputs:
            binding.bind_cpu_input("position_ids", np.full((batch, 1), length, dtype=np.int64))
        for name, value in past_values.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(layout.logits_name, "cuda")
        for slot in layout.slots:
            binding.bind_output(slot.present_name, "cuda")
        binding.synchronize_inputs()
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        elapsed = time.perf_counter() - start
        outputs = binding.get_outputs()
        names = [layout.logits_name] + [slot.present_name for slot in layout.slots]
        by_name = dict(zip(names, outputs, strict=True))
        past_values = {slot.past_name: by_name[slot.present_name] for slot in layout.slots}
        if step >= warmup:
            times.append(elapsed)
    logits = by_name[layout.logits_name].numpy()
    if not np.isfinite(logits).all():
        raise RuntimeError("decode produced non-finite logits")
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", type=Path, required=True, help="folder with llama8b, llama8b-tq4, llama8b-tq3"
    )
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    ensure_weights(args.models)
    card = card_name()
    results: dict[tuple[str, int], float] = {}
    for variant, folder in VARIANTS:
        path = args.models / folder / "model.onnx"
        if not path.is_file():
            print(f"skip {variant}: {path} missing")
            continue
        session = make_session(path, CUDA, exact_fp32=False)
        layout = CacheLayout.from_io(session.get_inputs(), session.get_outputs())
        for context in args.contexts:
            if layout.is_converted:
                pasts = compressed_pasts(path, layout, args.batch, context)
            else:
                pasts = float_pasts(layout, args.batch, context, layout.slots[0].static_dim(3))
            cache_mb = sum(a.nbytes for a in pasts.values()) / 2**20
            ms = time_decode(session, pasts, args.batch, context, args.warmup, args.steps)
            results[(variant, context)] = ms
            print(
                f"{variant:9s} T={context:6d} B={args.batch}: {ms:8.3f} ms/token (caches {cache_mb:.0f} MiB)"
            )
        del session
    print(f"\ncard: {card}; B={args.batch}; median of {args.steps} steps after {args.warmup} warm-up")
    print("| model | T | ms/token | vs original |")
    print("|---|---|---|---|")
    for (variant, context), ms in results.items():
        base = results.get(("original", context))
        ratio = f"{base / ms:.2f}x faster" if base and variant != "original" else "-"
        print(f"| {variant} | {context} | {ms:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
