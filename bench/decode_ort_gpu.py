"""Per-token decode latency under ORT's CUDA provider: converted (TurboQuant caches) vs original model.

The models are random-weight Llamas with Llama-3-8B's layer shapes (hidden 4096, Hq 32, Hkv 8, D 128,
intermediate 14336), a few layers, float16, exported by bench/gpu_e2e/export_models.py (optimum,
TorchScript; ORT runs the original's decomposed attention: Concat + GQA repeat + MatMul + Softmax + MatMul)
and converted with `tqexport convert --preset 4` / `--preset 3`. Weights are written by
bench/gpu_e2e/fill_weights.py when missing.

Method: IO binding, so caches stay on the GPU between steps (each step's present caches are bound as the
next step's past). The past at context T is synthetic: the original gets random float caches [B, Hkv, T, D];
a converted model gets caches made by its own TQQuantize op (a one-node graph with the layer's rotation,
codebook and attributes, run on the same provider) from random K/V, i.e. valid compressed rows
[B, Hkv, T, row_bytes]. Then `--warmup` steps, then `--rounds` rounds of `--steps` timed steps per (model,
context), the rounds interleaved over the models (each loop keeps its caches between rounds; the context
grows by one per step); ms/token is the median wall time of a step over all rounds (host clock around
run_with_iobinding and the output synchronisation), printed with each round's median. `--device cpu`
dry-runs the same logic on a small model; its times mean nothing.

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
from bench.gpu_e2e.ort_cuda import CPU, CUDA, card_name, make_session  # noqa: E402
from tqexport.eval.cache_io import ORT_DTYPES, CacheLayout  # noqa: E402

VARIANTS = (("original", "llama8b"), ("tq4", "llama8b-tq4"), ("tq3", "llama8b-tq3"))
PROVIDERS = {"cuda": CUDA, "cpu": CPU}


def ensure_weights(models: Path, variants: tuple[tuple[str, str], ...]) -> None:
    original = models / variants[0][1] / "model.onnx"
    if not all((original.parent / t[3]).is_file() for t in external_tensors(original)):
        fill(original, seed=0)
    for _, folder in variants[1:]:
        converted = models / folder / "model.onnx"
        if converted.is_file() and not (converted.parent / "model.onnx.data").is_file():
            share(original, converted)


def float_dtype(session: Any) -> np.dtype:
    """The model's activation dtype, read off its logits output."""
    logits = [o for o in session.get_outputs() if "logits" in o.name][0]
    return ORT_DTYPES[logits.type]


def quantize_graph(node: Any, inits: dict[str, Any], x_type: int) -> bytes:
    """A one-node TQQuantize model: `node`'s attributes and constant inputs; x and past_cache as inputs."""
    from onnx import TensorProto, helper

    names = list(node.input)
    if len(names) > 5 and names[5]:
        raise ValueError("quantize_graph: windows (sink/recent) are not benchmarked here")
    quantize = helper.make_node(
        "TQQuantize", ["x", "past_cache", *names[2:5]], ["present_cache"], domain="tqexport"
    )
    quantize.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [quantize],
        "quantize_only",
        [
            helper.make_tensor_value_info("x", x_type, ["B", "H", "S", "D"]),
            helper.make_tensor_value_info("past_cache", TensorProto.UINT8, ["B", "H", 0, "R"]),
        ],
        [helper.make_tensor_value_info("present_cache", TensorProto.UINT8, ["B", "H", "T", "R"])],
        initializer=[inits[n] for n in names[2:5] if n],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("tqexport", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10  # onnx 1.23 writes IR 14; onnxruntime 1.31 reads up to 13
    return model.SerializeToString()


def compressed_pasts(
    model_path: Path, session: Any, batch: int, context: int, provider: str
) -> dict[str, np.ndarray]:
    """Past caches for a converted model: random K/V through the model's own TQQuantize nodes."""
    import onnx
    import onnxruntime as ort

    from tqexport import runtime

    layout = CacheLayout.from_io(session.get_inputs(), session.get_outputs())
    dtype = float_dtype(session)
    x_type = onnx.TensorProto.FLOAT16 if dtype == np.float16 else onnx.TensorProto.FLOAT
    model = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    by_present = {node.output[0]: node for node in model.graph.node if node.op_type == "TQQuantize"}
    rng = np.random.default_rng(0)
    pasts: dict[str, np.ndarray] = {}
    for slot in layout.cache_slots:
        node = by_present[slot.present_name]
        heads, row_bytes = slot.static_dim(1), slot.static_dim(3)
        head_dim = int(inits[node.input[2]].dims[-1])
        options = ort.SessionOptions()
        runtime.register_with(options)
        quantize = ort.InferenceSession(quantize_graph(node, inits, x_type), options, providers=[provider])
        x = rng.standard_normal((batch, heads, context, head_dim), dtype=np.float32).astype(dtype)
        empty = np.zeros((batch, heads, 0, row_bytes), dtype=np.uint8)
        pasts[slot.past_name] = quantize.run(None, {"x": x, "past_cache": empty})[0]
    return pasts


def float_pasts(session: Any, batch: int, context: int) -> dict[str, np.ndarray]:
    layout = CacheLayout.from_io(session.get_inputs(), session.get_outputs())
    rng = np.random.default_rng(0)
    shape = (batch, layout.slots[0].static_dim(1), context, layout.slots[0].static_dim(3))
    return {
        slot.past_name: rng.standard_normal(shape, dtype=np.float32).astype(slot.dtype)
        for slot in layout.slots
    }


class DecodeRun:
    """One (model, context) decode loop whose caches stay on the device between calls (IO binding): each call
    of `steps` runs n more decode steps from where the last call stopped and returns their wall times (s)."""

    def __init__(self, session: Any, pasts: dict[str, np.ndarray], context: int, args: argparse.Namespace):
        import onnxruntime as ort

        self.session, self.device, self.batch = session, args.device, args.batch
        self.layout = CacheLayout.from_io(session.get_inputs(), session.get_outputs())
        self.names = [self.layout.logits_name] + [slot.present_name for slot in self.layout.slots]
        self.past_values = {
            name: ort.OrtValue.ortvalue_from_numpy(a, self.device, 0) for name, a in pasts.items()
        }
        self.inputs = {i.name for i in session.get_inputs()}
        self.rng = np.random.default_rng(1)
        self.length = context  # tokens in the caches; grows by one per step
        self.by_name: dict[str, Any] = {}

    def steps(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            binding = self.session.io_binding()
            ids = self.rng.integers(3, 500, size=(self.batch, 1), dtype=np.int64)
            binding.bind_cpu_input("input_ids", ids)
            if "attention_mask" in self.inputs:
                mask = np.ones((self.batch, self.length + 1), dtype=np.int64)
                binding.bind_cpu_input("attention_mask", mask)
            if "position_ids" in self.inputs:
                binding.bind_cpu_input("position_ids", np.full((self.batch, 1), self.length, dtype=np.int64))
            for name, value in self.past_values.items():
                binding.bind_ortvalue_input(name, value)
            for name in self.names:
                binding.bind_output(name, self.device)
            binding.synchronize_inputs()
            start = time.perf_counter()
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            times.append(time.perf_counter() - start)
            self.by_name = dict(zip(self.names, binding.get_outputs(), strict=True))
            self.past_values = {slot.past_name: self.by_name[slot.present_name] for slot in self.layout.slots}
            self.length += 1
        return times

    def check(self) -> None:
        """The caches grew by one token per step; the last logits are finite."""
        key = self.layout.cache_slots[0]
        got = self.by_name[key.present_name].shape()[2]
        if not self.layout.window_slots and got != self.length:
            raise RuntimeError(f"{key.present_name} holds {got} tokens after the run, expected {self.length}")
        if not np.isfinite(self.by_name[self.layout.logits_name].numpy()).all():
            raise RuntimeError("decode produced non-finite logits")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, required=True, help="folder holding the variants' folders")
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over every (model, context), interleaved, so that drift of the host's per-step cost "
        "between minutes reaches every model alike",
    )
    parser.add_argument("--device", choices=sorted(PROVIDERS), default="cuda")
    parser.add_argument(
        "--variants", nargs="+", help="name=folder pairs, the original first (default: llama8b)"
    )
    args = parser.parse_args()
    variants = tuple(tuple(v.split("=", 1)) for v in args.variants) if args.variants else VARIANTS
    ensure_weights(args.models, variants)
    provider = PROVIDERS[args.device]
    runs: dict[tuple[str, int], DecodeRun] = {}
    sessions = []
    for variant, folder in variants:
        path = args.models / folder / "model.onnx"
        if not path.is_file():
            print(f"skip {variant}: {path} missing")
            continue
        session = make_session(path, provider, exact_fp32=False)
        sessions.append(session)
        converted = CacheLayout.from_io(session.get_inputs(), session.get_outputs()).is_converted
        for context in args.contexts:
            if converted:
                pasts = compressed_pasts(path, session, args.batch, context, provider)
            else:
                pasts = float_pasts(session, args.batch, context)
            cache_mib = sum(a.nbytes for a in pasts.values()) / 2**20
            run = DecodeRun(session, pasts, context, args)
            run.steps(args.warmup)
            runs[(variant, context)] = run
            print(f"{variant:9s} T={context:6d} B={args.batch}: caches {cache_mib:.0f} MiB, warmed up")
    times: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    round_medians: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    for r in range(args.rounds):
        for key, run in runs.items():
            step_times = run.steps(args.steps)
            times[key] += step_times
            round_medians[key].append(1e3 * statistics.median(step_times))
            print(
                f"round {r + 1}: {key[0]:9s} T={key[1]:6d}: {round_medians[key][-1]:8.3f} ms/token",
                flush=True,
            )
    for run in runs.values():
        run.check()
    results = {key: 1e3 * statistics.median(t) for key, t in times.items()}
    print(
        f"\ncard: {card_name()}; B={args.batch}; median of {args.rounds} x {args.steps} steps (rounds "
        f"interleaved over the models), after {args.warmup} warm-up steps"
    )
    print("| model | T | ms/token | per round | original / this |")
    print("|---|---|---|---|---|")
    for (variant, context), ms in results.items():
        base = results.get((variants[0][0], context))
        ratio = f"{base / ms:.2f}" if base and variant != variants[0][0] else "-"
        spread = " / ".join(f"{m:.3f}" for m in round_medians[(variant, context)])
        print(f"| {variant} | {context} | {ms:.3f} | {spread} | {ratio} |")


if __name__ == "__main__":
    main()
