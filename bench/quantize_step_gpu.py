"""TQQuantize at decode size on the GPU: the step kernel against the v4 kernel, and a layer's decode step.

Part 1, quantize alone (concat append, empty past, float16 x, a Hadamard R): microseconds per call of the step
kernel (the default for at most 16 new tokens) and of the v4 kernel (TQ_QUANT_STEP=0), same build, same run,
CUDA-graph replays; each with R promised Hadamard (as the ORT CUDA op promises a constant one) and unpromised
(the TensorRT plugin, which cannot see R when the engine is built: both kernels then check R's structure on
the GPU).

Part 2, one layer's decode step in buffer mode (B sequences at T cached tokens, one new token each), as a
converted model runs it: TQQuantize of K, TQQuantize of V, TQAttention over T + 1 tokens (4-bit K/V, Hq 32,
Hkv 8, D 128), with either quantize kernel (the step kernel also launched plainly, TQ_QUANT_EARLY=0);
against the uncompressed step: the new K and V copied into float16 caches of T + 1 rows, then torch SDPA.
Prints the card; never asserts.
Run: python3 bench/quantize_step_gpu.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attention_gpu import random_cache  # noqa: E402
from bench.gpu_harness.capi import BUFFER, Codec, Kernels  # noqa: E402
from bench.gpu_harness.timing import time_graph_us  # noqa: E402

QUANT_CASES = [  # (D, Hkv, bits, B, S)
    (128, 8, 4, 1, 1),
    (128, 8, 4, 8, 1),
    (128, 8, 4, 32, 1),
    (128, 8, 3, 1, 1),
    (128, 8, 3, 32, 1),
    (128, 8, 4, 1, 4),
    (128, 8, 4, 32, 4),
    (128, 8, 4, 8, 16),
    (128, 8, 4, 32, 16),
    (64, 3, 4, 1, 1),
    (64, 3, 4, 8, 1),
    (256, 8, 4, 1, 1),
    (256, 8, 4, 32, 1),
    (128, 8, 8, 8, 1),
]
STEP_CASES = [(1, 1024), (1, 4096), (8, 1024), (8, 4096), (1, 32768), (32, 4096)]  # (B, T)


def with_kernel(step: bool, fn, variants: int, early: bool = True) -> float:
    """fn timed with the step kernel (step) or the v4 kernel, the step kernel launched as a programmatic
    dependent of the previous kernel (early) or plainly; the launcher reads TQ_QUANT_STEP and TQ_QUANT_EARLY
    at each launch, i.e. while the graph is captured."""
    os.environ["TQ_QUANT_STEP"] = "1" if step else "0"
    os.environ["TQ_QUANT_EARLY"] = "1" if early else "0"
    try:
        return time_graph_us(fn, variants)
    finally:
        os.environ.pop("TQ_QUANT_STEP", None)
        os.environ.pop("TQ_QUANT_EARLY", None)


def main() -> None:
    import torch
    import torch.nn.functional as F

    from tqexport.codec import Codec as RefCodec
    from tqexport.codec import CodecConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rows")
    args = ap.parse_args()
    kern = Kernels()
    name = torch.cuda.get_device_name()
    print(f"card: {name}")

    quant_rows = []
    for d, hkv, bits, b, s in QUANT_CASES[:6] if args.quick else QUANT_CASES:
        ref = RefCodec.build(CodecConfig(head_dim=d, bits=(bits,), rotation="hadamard"))
        codec = Codec(d, (d,), (bits,))
        rot = torch.from_numpy(ref.rotation).cuda()
        cb = torch.from_numpy(ref.codebook).cuda()
        assert kern.rotation_is_hadamard(rot)
        x = [torch.randn((b, hkv, s, d), dtype=torch.float16, device="cuda") for _ in range(4)]
        past = torch.empty((b, hkv, 0, codec.row_bytes), dtype=torch.uint8, device="cuda")
        present = [torch.empty((b, hkv, s, codec.row_bytes), dtype=torch.uint8, device="cuda") for _ in x]

        times = []
        for promise in (True, False):

            def run(i: int, codec=codec, x=x, past=past, rot=rot, cb=cb, present=present, promise=promise):
                kern.quantize(codec, x[i], past, rot, cb, None, present_cache=present[i], hadamard=promise)

            times += [with_kernel(False, run, len(x)), with_kernel(True, run, len(x))]
        quant_rows.append((d, hkv, bits, b, s, *times))
        print(
            f"quantize D={d} Hkv={hkv} bits={bits} B={b} S={s}: promised v4 {times[0]:.2f} us, step "
            f"{times[1]:.2f} us; unpromised v4 {times[2]:.2f} us, step {times[3]:.2f} us",
            flush=True,
        )

    hq, hkv, d, bits = 32, 8, 128, 4
    ref = RefCodec.build(CodecConfig(head_dim=d, bits=(bits,), rotation="hadamard"))
    codec = Codec(d, (d,), (bits,))
    rot = torch.from_numpy(ref.rotation).cuda()
    cb = torch.from_numpy(ref.codebook).cuda()
    step_rows = []
    for b, t in STEP_CASES[:3] if args.quick else STEP_CASES:
        cap = t + 1
        lengths = torch.full((b,), t, dtype=torch.int64, device="cuda")
        kc, vc = random_cache(torch, codec, b, cap, hkv), random_cache(torch, codec, b, cap, hkv)
        xk = torch.randn((b, hkv, 1, d), dtype=torch.float16, device="cuda")
        xv = torch.randn((b, hkv, 1, d), dtype=torch.float16, device="cuda")
        q = torch.randn((b, hq, 1, d), dtype=torch.float16, device="cuda")
        mask = torch.zeros((1, 1, 1, cap), dtype=torch.float32, device="cuda")
        out = torch.empty_like(q)

        def layer_step(i: int, kc=kc, vc=vc, xk=xk, xv=xv, q=q, mask=mask, out=out, lengths=lengths) -> None:
            for x, cache in ((xk, kc), (xv, vc)):
                kern.quantize(
                    codec, x, cache, rot, cb, None, None, lengths, cache_mode=BUFFER, present_cache=cache,
                    hadamard=True,
                )  # fmt: skip
            kern.attention(
                codec, codec, q, kc, vc, mask, rot, cb, rot, cb, None, None, None, lengths, scale=d**-0.5,
                cache_mode=BUFFER, out=out, k_hadamard=True, v_hadamard=True,
            )  # fmt: skip

        v4 = with_kernel(False, layer_step, 1)
        plain = with_kernel(True, layer_step, 1, early=False)
        step = with_kernel(True, layer_step, 1)
        kc = vc = layer_step = None
        k16 = torch.randn((b, hkv, cap, d), dtype=torch.float16, device="cuda")
        v16 = torch.randn((b, hkv, cap, d), dtype=torch.float16, device="cuda")

        def fp16_step(i: int, k16=k16, v16=v16, xk=xk, xv=xv, q=q, t=t) -> None:
            k16[:, :, t : t + 1].copy_(xk)
            v16[:, :, t : t + 1].copy_(xv)
            F.scaled_dot_product_attention(q, k16, v16, enable_gqa=True)

        base = time_graph_us(fp16_step, 1)
        k16 = v16 = None
        torch.cuda.empty_cache()
        step_rows.append((b, t, v4, plain, step, base))
        print(
            f"layer step B={b} T={t}: v4 {v4:.2f} us, step {plain:.2f} (plain launch) / {step:.2f} us, "
            f"fp16 {base:.2f} us",
            flush=True,
        )

    print(f"\n{name}; quantize per call (concat append, empty past, float16 x, Hadamard R)")
    print("(step: the default routing; unpromised, it takes v4 where the per-block check of R would not pay)")
    print("                      R promised                 R unpromised (checked on the GPU)")
    print("   D Hkv bits   B   S    v4 us  step us  step/v4     v4 us  step us  step/v4")
    for d_, h_, bits_, b, s, v4, step, v4u, stepu in quant_rows:
        print(
            f"{d_:4d} {h_:3d} {bits_:4d} {b:3d} {s:3d} {v4:8.2f} {step:8.2f} {step / v4:8.3f}  "
            f"{v4u:8.2f} {stepu:8.2f} {stepu / v4u:8.3f}"
        )
    print(
        f"\n{name}; one layer's decode step, buffer mode (quantize K + quantize V + attention, 4-bit, "
        f"Hq {hq} Hkv {hkv} D {d}) vs float16 (two cache writes + SDPA)"
    )
    print("(step plain: TQ_QUANT_EARLY=0, the step kernel launched without the programmatic dependency)")
    print("   B      T  with v4 us  step plain us  with step us  change  fp16 us  fp16/ours(step)")
    for b, t, v4, plain, step, base in step_rows:
        change = 100 * (step / v4 - 1)
        print(
            f"{b:4d} {t:6d} {v4:11.2f} {plain:14.2f} {step:13.2f} {change:+6.1f}% {base:8.2f} "
            f"{base / step:16.2f}"
        )


if __name__ == "__main__":
    main()
