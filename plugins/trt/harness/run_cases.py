"""Generate plugin test cases with the NumPy reference codec, run tq_trt_harness on them, check the outputs.

    python3 plugins/trt/harness/run_cases.py --harness BIN --lib libtqexport_trt.so --work DIR [--time N]

The harness checks plugin == direct launcher == clone bit for bit; this script then checks the plugin's
outputs against tqexport.codec.reference_ops: TQQuantize caches and windows bit-exact (docs/format.md
section 5), TQAttention within a float tolerance (float32 kernels against the float64 reference).
Three decode-shaped cases run twice, without and with the constant-Hadamard promise fields (docs/format.md
8.3); with --time N the harness also times each case's enqueue (20 warm-up calls, then the median of 5 rounds
of N) and a last table prints the two times of each pair and their ratio, on the GPU it ran on.

case.txt, one directive a line:
    op TQQuantize|TQAttention
    steps N        (input 0's file holds N slices; buffer mode adds S to past_lengths)
    field NAME i32 V [V...] | field NAME f32 V
    input NAME f32|f16|i8|u8|i64|bool RANK D0 .. [FILE]   (no FILE: a zero-element tensor = absent input)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tqexport.codec import Codec, CodecConfig, reference_ops  # noqa: E402

DTYPES = {
    np.float32: "f32",
    np.float16: "f16",
    np.int8: "i8",
    np.uint8: "u8",
    np.int64: "i64",
    np.bool_: "bool",
}


@dataclass
class Case:
    name: str
    op: str
    fields: dict[str, object]
    inputs: list[tuple[str, np.ndarray]]  # zero-element arrays mean "absent"
    expected: list[np.ndarray]
    steps: int = 1
    atol: float = 0.0  # 0: bit-exact
    rtol: float = 0.0  # > 0: max |plugin - reference| <= rtol * max |reference| instead of atol
    notes: list[str] = field(default_factory=list)

    def write(self, root: Path) -> Path:
        d = root / self.name
        d.mkdir(parents=True, exist_ok=True)
        lines = [f"op {self.op}", f"steps {self.steps}"]
        for key, value in self.fields.items():
            if isinstance(value, float):
                lines.append(f"field {key} f32 {value!r}")
            else:
                vals = value if isinstance(value, list | tuple) else [value]
                lines.append(f"field {key} i32 {' '.join(str(int(v)) for v in vals)}")
        for i, (name, arr) in enumerate(self.inputs):
            arr = np.ascontiguousarray(arr)
            tag = DTYPES[arr.dtype.type]
            shape = arr.shape[1:] if (i == 0 and self.steps > 1) else arr.shape
            spec = f"input {name} {tag} {len(shape)} {' '.join(str(s) for s in shape)}".rstrip()
            if arr.size:
                (d / f"{name}.bin").write_bytes(arr.tobytes())
                spec += f" {name}.bin"
            lines.append(spec)
        (d / "case.txt").write_text("\n".join(lines) + "\n")
        return d


def empty(dtype) -> np.ndarray:
    return np.zeros((0,), dtype=dtype)


def codec(d: int, bits, parts, qjl=False, nc=False, seed=0) -> Codec:
    return Codec.build(
        CodecConfig(
            head_dim=d, part_sizes=tuple(parts), bits=tuple(bits), qjl=qjl, norm_correction=nc, seed=seed
        )
    )


def quantize_fields(c: Codec, mode=0, ns=0, rw=0) -> dict[str, object]:
    f = dict(c.onnx_attributes())
    f.update(cache_mode=mode, sink_tokens=ns, recent_window=rw, format_version=1)
    return f


def quantize_inputs(x, past, c: Codec, *extra) -> list[tuple[str, np.ndarray]]:
    """TQQuantize's inputs 0..3 (the past cache as int8, the plugin's cache type), then the `extra` pairs."""
    return [
        ("x", x),
        ("past_cache", past.view(np.int8)),
        ("rotation", c.rotation),
        ("codebook", c.codebook),
        *extra,
    ]


def case_quantize_concat_f32(rng) -> Case:
    """Concat, float32, no window, 4 inputs only (trailing optional inputs left out)."""
    c = codec(128, [4], [128])
    past = c.quantize(rng.standard_normal((2, 2, 5, 128)).astype(np.float32))
    x = rng.standard_normal((2, 2, 3, 128)).astype(np.float32)
    ref, _ = reference_ops.tq_quantize(x, past, c.rotation, c.codebook, **quantize_fields(c))
    inputs = quantize_inputs(x, past, c)
    return Case("q_concat_f32", "TQQuantize", quantize_fields(c), inputs, [ref])


def case_quantize_concat_window_qjl_f16(rng) -> Case:
    """Concat, float16, two parts, QJL + norm correction, sinks 2 + recent 4, chunk S=5 on 9 tokens."""
    c = codec(128, [4, 3], [32, 96], qjl=True, nc=True, seed=3)
    ns, rw = 2, 4
    attrs = quantize_fields(c, 0, ns, rw)
    x0 = (rng.standard_normal((1, 2, 9, 128)) * 2).astype(np.float16)
    cache0 = np.zeros((1, 2, 0, c.row_bytes), np.uint8)
    win0 = np.zeros((1, 2, 0, 128), np.float16)
    past, past_win = reference_ops.tq_quantize(
        x0, cache0, c.rotation, c.codebook, c.qjl_matrix, win0, **attrs
    )
    x = (rng.standard_normal((1, 2, 5, 128)) * 2).astype(np.float16)
    ref, ref_win = reference_ops.tq_quantize(x, past, c.rotation, c.codebook, c.qjl_matrix, past_win, **attrs)
    extra = [("qjl_matrix", c.qjl_matrix), ("past_window", past_win), ("past_lengths", empty(np.int64))]
    inputs = quantize_inputs(x, past, c, *extra)
    return Case("q_concat_window_qjl_f16", "TQQuantize", attrs, inputs, [ref, ref_win])


def case_quantize_buffer_decode64_f16(rng) -> Case:
    """Buffer mode, float16, sinks 2 + recent 4, 64 in-place decode steps from lengths [0, 7], capacity 80."""
    c = codec(128, [4], [128], seed=1)
    ns, rw, cap, steps = 2, 4, 80, 64
    attrs = quantize_fields(c, 1, ns, rw)
    caches, windows = [], []
    for length in (0, 7):  # per-sequence prefill so the two sequences start at different lengths
        cache = np.zeros((1, 2, cap, c.row_bytes), np.uint8)
        win = np.zeros((1, 2, ns + rw, 128), np.float16)
        if length:
            xp = rng.standard_normal((1, 2, length, 128)).astype(np.float16)
            cache, win = reference_ops.tq_quantize(
                xp, cache, c.rotation, c.codebook, None, win, np.array([0], np.int64), **attrs
            )
        caches.append(cache)
        windows.append(win)
    cache0, win0 = np.concatenate(caches), np.concatenate(windows)
    lengths0 = np.array([0, 7], np.int64)
    xs = rng.standard_normal((steps, 2, 2, 1, 128)).astype(np.float16)
    cache, win, lengths = cache0, win0, lengths0.copy()
    for s in range(steps):
        cache, win = reference_ops.tq_quantize(
            xs[s], cache, c.rotation, c.codebook, None, win, lengths, **attrs
        )
        lengths = lengths + 1
    extra = [("qjl_matrix", empty(np.float32)), ("past_window", win0), ("past_lengths", lengths0)]
    inputs = quantize_inputs(xs, cache0, c, *extra)
    return Case("q_buffer_decode64_f16", "TQQuantize", attrs, inputs, [cache, win], steps=steps)


def attention_fields(
    kc: Codec, vc: Codec, scale: float, mode=0, ns=0, rw=0, softcap=0.0
) -> dict[str, object]:
    f: dict[str, object] = {}
    f.update(kc.onnx_attributes("k_"))
    f.update(vc.onnx_attributes("v_"))
    f.update(
        scale=float(scale),
        softcap=float(softcap),
        cache_mode=mode,
        sink_tokens=ns,
        recent_window=rw,
        format_version=1,
    )
    return f


def attention_inputs(q, k_cache, v_cache, mask, kc: Codec, vc: Codec, *extra) -> list[tuple[str, np.ndarray]]:
    """TQAttention's inputs 0..7 (caches as int8, the plugin's cache type), then the `extra` pairs."""
    return [
        ("q", q),
        ("k_cache", k_cache.view(np.int8)),
        ("v_cache", v_cache.view(np.int8)),
        ("mask", mask),
        ("k_rotation", kc.rotation),
        ("k_codebook", kc.codebook),
        ("v_rotation", vc.rotation),
        ("v_codebook", vc.codebook),
        *extra,
    ]


def case_attention_concat_f32(rng) -> Case:
    """Concat, float32, GQA 4/2, K with QJL, sinks 2 + recent 4, T = 20, additive mask with -inf padding."""
    d, b, hq, hkv, t, ns, rw = 128, 2, 4, 2, 20, 2, 4
    kc, vc = codec(d, [4], [d], qjl=True, seed=5), codec(d, [4], [d], seed=6)
    k = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    v = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    kq = quantize_fields(kc, 0, ns, rw)
    vq = quantize_fields(vc, 0, ns, rw)
    z = np.zeros((b, hkv, 0, d), np.float32)
    k_cache, k_win = reference_ops.tq_quantize(
        k, np.zeros((b, hkv, 0, kc.row_bytes), np.uint8), kc.rotation, kc.codebook, kc.qjl_matrix, z, **kq
    )
    v_cache, v_win = reference_ops.tq_quantize(
        v, np.zeros((b, hkv, 0, vc.row_bytes), np.uint8), vc.rotation, vc.codebook, None, z, **vq
    )
    q = rng.standard_normal((b, hq, 1, d)).astype(np.float32)
    mask = np.zeros((b, 1, 1, t), np.float32)
    mask[1, :, :, :3] = -np.inf  # left padding of sequence 1
    attrs = attention_fields(kc, vc, 1.0 / np.sqrt(d), 0, ns, rw)
    ref = reference_ops.tq_attention(
        q,
        k_cache,
        v_cache,
        mask,
        kc.rotation,
        kc.codebook,
        vc.rotation,
        vc.codebook,
        kc.qjl_matrix,
        k_win,
        v_win,
        None,
        **{k: attrs[k] for k in attrs if k != "format_version"},
    )
    extra = [("k_qjl_matrix", kc.qjl_matrix), ("k_window", k_win), ("v_window", v_win)]
    inputs = attention_inputs(q, k_cache, v_cache, mask, kc, vc, *extra)
    # float32 kernel vs the float64 reference; 4.7e-4 measured on H100 (2026-11-25). Kernel accuracy itself is
    # plugins/kernels tests' business: here plugin == direct launcher bit for bit is the plugin check.
    return Case("a_concat_f32", "TQAttention", attrs, inputs, [ref], atol=1e-3)


def case_attention_buffer_f16(rng) -> Case:
    """Buffer mode, float16, GQA 8/2, recent window 8, lengths [5, 30], capacity 32; unused rows and window
    slots are NaN-poisoned (0xFF bytes / float16 NaN) to prove they are never read."""
    d, b, hq, hkv, ns, rw, cap, tm = 128, 2, 8, 2, 0, 8, 32, 40
    kc, vc = codec(d, [4], [d], seed=7), codec(d, [2], [d], seed=8)
    totals = (6, 31)
    k_caches, v_caches, k_wins, v_wins = [], [], [], []
    for tot in totals:
        kq, vq = quantize_fields(kc, 1, ns, rw), quantize_fields(vc, 1, ns, rw)
        k = rng.standard_normal((1, hkv, tot, d)).astype(np.float16)
        v = rng.standard_normal((1, hkv, tot, d)).astype(np.float16)
        nan_win = np.full((1, hkv, ns + rw, d), np.nan, np.float16)
        kc0 = np.full((1, hkv, cap, kc.row_bytes), 0xFF, np.uint8)
        vc0 = np.full((1, hkv, cap, vc.row_bytes), 0xFF, np.uint8)
        zero = np.array([0], np.int64)
        kcache, kwin = reference_ops.tq_quantize(k, kc0, kc.rotation, kc.codebook, None, nan_win, zero, **kq)
        vcache, vwin = reference_ops.tq_quantize(v, vc0, vc.rotation, vc.codebook, None, nan_win, zero, **vq)
        k_caches.append(kcache)
        v_caches.append(vcache)
        k_wins.append(kwin)
        v_wins.append(vwin)
    k_cache, v_cache = np.concatenate(k_caches), np.concatenate(v_caches)
    k_win, v_win = np.concatenate(k_wins), np.concatenate(v_wins)
    past_lengths = np.array([t - 1 for t in totals], np.int64)
    q = rng.standard_normal((b, hq, 1, d)).astype(np.float16)
    mask = np.zeros((b, 1, 1, tm), np.float16)
    attrs = attention_fields(kc, vc, 1.0 / np.sqrt(d), 1, ns, rw, softcap=30.0)
    ref_attrs = {k: attrs[k] for k in attrs if k != "format_version"}
    ref = reference_ops.tq_attention(
        q,
        k_cache,
        v_cache,
        mask,
        kc.rotation,
        kc.codebook,
        vc.rotation,
        vc.codebook,
        None,
        k_win,
        v_win,
        past_lengths,
        **ref_attrs,
    )
    inputs = attention_inputs(
        q,
        k_cache,
        v_cache,
        mask,
        kc,
        vc,
        ("k_qjl_matrix", empty(np.float32)),
        ("k_window", k_win),
        ("v_window", v_win),
        ("past_lengths", past_lengths),
    )
    return Case("a_buffer_f16", "TQAttention", attrs, inputs, [ref], atol=4e-3)


def _promised(case: Case, fields: dict[str, int]) -> Case:
    """The same case with the constant-Hadamard promise fields of docs/format.md 8.3 set."""
    return Case(
        f"{case.name}_promised",
        case.op,
        {**case.fields, **fields},
        case.inputs,
        case.expected,
        case.steps,
        case.atol,
        case.rtol,
    )


def case_quantize_step_buffer_f16(rng) -> Case:
    """A decode step as a converted graph runs it: buffer mode, float16, B=1, Hkv=8, one new token per kv head
    after 1024 stored ones (capacity 1088), D=128, 4-bit, Hadamard R (the step-kernel shape of NOTES.md)."""
    c = codec(128, [4], [128], seed=11)
    attrs = quantize_fields(c, 1)
    cache0 = np.zeros((1, 8, 1088, c.row_bytes), np.uint8)
    lengths = np.array([1024], np.int64)
    x = rng.standard_normal((1, 8, 1, 128)).astype(np.float16)
    ref, _ = reference_ops.tq_quantize(x, cache0, c.rotation, c.codebook, None, None, lengths, **attrs)
    extra = [("qjl_matrix", empty(np.float32)), ("past_window", empty(np.float16)), ("past_lengths", lengths)]
    inputs = quantize_inputs(x, cache0, c, *extra)
    return Case("q_step_buffer_f16", "TQQuantize", attrs, inputs, [ref])


def case_quantize_prefill_f16(rng) -> Case:
    """A prefill chunk: concat, float16, B=2, Hkv=8, S=512 new tokens after 16 cached ones, D=128, 4-bit."""
    c = codec(128, [4], [128], seed=12)
    attrs = quantize_fields(c)
    past = c.quantize(rng.standard_normal((2, 8, 16, 128)).astype(np.float16))
    x = rng.standard_normal((2, 8, 512, 128)).astype(np.float16)
    ref, _ = reference_ops.tq_quantize(x, past, c.rotation, c.codebook, **attrs)
    inputs = quantize_inputs(x, past, c)
    return Case("q_prefill_f16", "TQQuantize", attrs, inputs, [ref])


def case_attention_decode_1k_f16(rng) -> Case:
    """A decode step's attention: concat, float16, B=1, Hq=32, Hkv=8, T=1024, D=128, 4-bit K and V."""
    d, b, hq, hkv, t = 128, 1, 32, 8, 1024
    kc, vc = codec(d, [4], [d], seed=13), codec(d, [4], [d], seed=14)
    k = rng.standard_normal((b, hkv, t, d)).astype(np.float16)
    v = rng.standard_normal((b, hkv, t, d)).astype(np.float16)
    empty_past = np.zeros((b, hkv, 0, kc.row_bytes), np.uint8)
    k_cache, _ = reference_ops.tq_quantize(k, empty_past, kc.rotation, kc.codebook, **quantize_fields(kc))
    v_cache, _ = reference_ops.tq_quantize(v, empty_past, vc.rotation, vc.codebook, **quantize_fields(vc))
    q = (rng.standard_normal((b, hq, 1, d)) * 2).astype(np.float16)
    mask = np.zeros((b, 1, 1, t), np.float16)
    attrs = attention_fields(kc, vc, 1.0 / np.sqrt(d))
    ref_attrs = {k: attrs[k] for k in attrs if k != "format_version"}
    ref = reference_ops.tq_attention(
        q, k_cache, v_cache, mask, kc.rotation, kc.codebook, vc.rotation, vc.codebook, **ref_attrs
    )
    inputs = attention_inputs(q, k_cache, v_cache, mask, kc, vc)
    # float16 output against the float64 reference over the decoded cache (the kernels' contract is 2e-3 of
    # the largest output; float16 rounding of the output adds up to 2^-11 of it).
    return Case("a_decode_1k_f16", "TQAttention", attrs, inputs, [ref], rtol=3e-3)


def case_quantize_step_overflow_f16(rng) -> Case:
    """Buffer mode, float16, B=2, a decode step whose row for sequence 0 would land at the capacity (1088
    stored) and for sequence 1 at row 1000. Sequence 0's row is skipped, never written out of bounds: the
    output is the input cache plus sequence 1's row. With TQEXPORT_TRT_CHECK_OVERFLOW=1 the same enqueue must
    fail instead (run_overflow_check)."""
    c = codec(128, [4], [128], seed=15)
    attrs = quantize_fields(c, 1)
    cache0 = rng.integers(0, 256, (2, 8, 1088, c.row_bytes), dtype=np.uint8)  # arbitrary stored rows
    lengths = np.array([1088, 1000], np.int64)
    x = rng.standard_normal((2, 8, 1, 128)).astype(np.float16)
    ref = cache0.copy()
    ref[1:], _ = reference_ops.tq_quantize(
        x[1:], cache0[1:], c.rotation, c.codebook, None, None, lengths[1:], **attrs
    )
    extra = [("qjl_matrix", empty(np.float32)), ("past_window", empty(np.float16)), ("past_lengths", lengths)]
    inputs = quantize_inputs(x, cache0, c, *extra)
    return Case("q_step_overflow_f16", "TQQuantize", attrs, inputs, [ref])


QUANTIZE_PROMISE = {"constant_hadamard": 1}
ATTENTION_PROMISE = {"k_constant_hadamard": 1, "v_constant_hadamard": 1}
# Decode-shaped cases run twice, without and with the promises, so --time compares the two in one run.
PAIRED_CASES = [
    (case_quantize_step_buffer_f16, QUANTIZE_PROMISE),
    (case_quantize_prefill_f16, QUANTIZE_PROMISE),
    (case_attention_decode_1k_f16, ATTENTION_PROMISE),
]

CASES = [
    case_quantize_concat_f32,
    case_quantize_concat_window_qjl_f16,
    case_quantize_buffer_decode64_f16,
    case_attention_concat_f32,
    case_attention_buffer_f16,
]


def check(case: Case, d: Path) -> bool:
    ok = True
    for i, exp in enumerate(case.expected):
        got_bytes = (d / f"plugin_out{i}.bin").read_bytes()
        exp = np.ascontiguousarray(exp)
        if exp.dtype == np.uint8:
            got = np.frombuffer(got_bytes, np.uint8).reshape(exp.shape)
            bad_rows = int(np.any(got != exp, axis=-1).sum())
            rows = int(np.prod(exp.shape[:-1]))
            print(
                f"  {case.name} out{i}: {rows} rows, {bad_rows} differ from the reference (bit-exact check)"
            )
            ok = ok and bad_rows == 0
            continue
        got = np.frombuffer(got_bytes, exp.dtype).reshape(exp.shape)
        if case.rtol > 0.0:
            diff = np.abs(got.astype(np.float64) - exp.astype(np.float64)).max()
            scale = np.abs(exp.astype(np.float64)).max()
            finite = bool(np.isfinite(got).all())
            print(
                f"  {case.name} out{i}: max |plugin - reference| / max |reference| = {diff / scale:.3g} "
                f"(rtol {case.rtol}), all finite: {finite}"
            )
            ok = ok and finite and diff <= case.rtol * scale
            continue
        if case.atol == 0.0:
            same = np.array_equal(got.view(np.uint8), exp.view(np.uint8))
            print(f"  {case.name} out{i}: {exp.size} values, bit-identical to the reference: {same}")
            ok = ok and same
        else:
            diff = np.abs(got.astype(np.float64) - exp.astype(np.float64))
            finite = bool(np.isfinite(got).all())
            print(
                f"  {case.name} out{i}: max |plugin - reference| = {diff.max():.3g} (atol {case.atol}), "
                f"all finite: {finite}"
            )
            ok = ok and finite and diff.max() <= case.atol
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument(
        "--time", type=int, default=0, metavar="N", help="time N enqueues per round (TQ_HARNESS_TIME_ITERS)"
    )
    args = ap.parse_args()
    rng = np.random.default_rng(20261125)
    cases = [make(rng) for make in CASES]
    for make, fields in PAIRED_CASES:
        plain = make(rng)
        cases += [plain, _promised(plain, fields)]
    overflow = case_quantize_step_overflow_f16(np.random.default_rng(20261129))
    cases.append(overflow)
    dirs = [case.write(args.work) for case in cases]
    print(f"generated {len(cases)} cases in {args.work}")
    if args.generate_only:
        return 0
    env = dict(os.environ)
    if args.time:
        env["TQ_HARNESS_TIME_ITERS"] = str(args.time)
    run = subprocess.run([args.harness, args.lib, *map(str, dirs)], capture_output=True, text=True, env=env)
    print(run.stdout, end="")
    print(run.stderr, end="", file=sys.stderr)
    ok = run.returncode == 0
    for case, d in zip(cases, dirs, strict=True):
        if (d / "plugin_out0.bin").exists():
            ok = check(case, d) and ok
        else:
            print(f"  {case.name}: no plugin output")
            ok = False
    ok = run_overflow_check(args.harness, args.lib, dirs[-1]) and ok
    if args.time:
        print_timing_table(run.stdout)
    print("run_cases:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def run_overflow_check(harness: str, lib: str, case_dir: Path) -> bool:
    """The overflow case again with TQEXPORT_TRT_CHECK_OVERFLOW=1: its enqueue must fail, with the plugin's
    "buffer overflow" message, instead of skipping the row silently."""
    env = {k: v for k, v in os.environ.items() if k != "TQ_HARNESS_TIME_ITERS"}
    env["TQEXPORT_TRT_CHECK_OVERFLOW"] = "1"
    run = subprocess.run([harness, lib, str(case_dir)], capture_output=True, text=True, env=env)
    text = run.stdout + run.stderr
    refused = run.returncode != 0 and "FAILED: enqueue step 0" in text and "buffer overflow" in text
    outcome = "refused (expected)" if refused else f"NOT refused (rc {run.returncode}): {text.strip()[-300:]}"
    print(f"  {case_dir.name} with TQEXPORT_TRT_CHECK_OVERFLOW=1: enqueue {outcome}")
    return refused


def print_timing_table(stdout: str) -> None:
    """Per paired case: microseconds per enqueue without and with the promises, from the harness's lines."""
    times: dict[str, tuple[float, float]] = {}  # case -> (stream us, CUDA graph us; -1 when capture failed)
    current = None
    for line in stdout.splitlines():
        if line.startswith("case "):
            current = Path(line.split()[1].rstrip(":")).name
        elif line.strip().startswith("time:") and current is not None:
            numbers = re.findall(r"(-?[0-9.]+) us", line)
            times[current] = (float(numbers[0]), float(numbers[1]))
    gpu = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip()
    print(f"plugin enqueue time in us, {gpu or 'unknown GPU'} (medians of 5 rounds; graph = CUDA graph)")
    head = f"{'stream':>8} {'promised':>9} {'ratio':>6} {'graph':>8} {'promised':>9} {'ratio':>6}"
    print(f"{'case':<22} {head}")
    for make, _ in PAIRED_CASES:
        name = make.__name__.removeprefix("case_").replace("quantize_", "q_").replace("attention_", "a_")
        plain, promised = times.get(name), times.get(f"{name}_promised")
        if plain is None or promised is None:
            print(f"{name:<22} (no timing)")
            continue
        cells = []
        for a, b in zip(plain, promised, strict=True):
            ratio = f"{a / b:6.2f}" if a > 0 and b > 0 else f"{'-':>6}"
            cells.append(f"{a:8.2f} {b:9.2f} {ratio}")
        print(f"{name:<22} {' '.join(cells)}")


if __name__ == "__main__":
    sys.exit(main())
