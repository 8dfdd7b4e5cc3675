"""Host time per call of the TQ launchers, this build against a baseline build, both timed in the same run.

    python3 bench/host_overhead_gpu.py --baseline build/gpu_X/libtq_kernels_harness.so [--lib P] [--calls N]

A decode step at batch 1 is host-bound: each layer pays the launchers' host time (plan, driver calls, launch).
The shapes are tiny (decode attention B 1, Hq 32, Hkv 8, D 128, T 256, 4-bit; quantize of one new token), so
the GPU finishes each call before the host issues the next and the wall time per call is host time: Python and
ctypes (the same for both builds), the launcher and the driver. --lib defaults to TQ_KERNELS_LIB or build/gpu.
Prints microseconds per call, four interleaved rounds per build, and the baseline / this ratio of the medians.
Never asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attention_gpu import random_cache  # noqa: E402
from bench.gpu_harness.capi import Codec, Kernels, library_path  # noqa: E402

HQ, HKV, D, T = 32, 8, 128, 256


def per_call_us(fn, calls: int) -> float:
    import torch

    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e6 / calls


def main() -> None:
    import torch

    from tqexport.codec import Codec as RefCodec
    from tqexport.codec import CodecConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="harness library of the baseline build")
    ap.add_argument("--lib", default="", help="this build's library (default: TQ_KERNELS_LIB or build/gpu)")
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    builds = {"baseline": Kernels(Path(args.baseline)), "this": Kernels(Path(args.lib) if args.lib else None)}
    ref = RefCodec.build(CodecConfig(head_dim=D, bits=(4,)))
    codec = Codec(D, (D,), (4,))
    rot = torch.from_numpy(ref.rotation).cuda()
    cb = torch.from_numpy(ref.codebook).cuda()
    q = torch.randn((1, HQ, 1, D), dtype=torch.float16, device="cuda")
    x = torch.randn((1, HKV, 1, D), dtype=torch.float16, device="cuda")
    past = random_cache(torch, codec, 1, T - 1)
    present = torch.empty((1, HKV, T, codec.row_bytes), dtype=torch.uint8, device="cuda")
    kc, vc = random_cache(torch, codec, 1, T), random_cache(torch, codec, 1, T)
    mask = torch.zeros((1, 1, 1, T), dtype=torch.float32, device="cuda")
    out = torch.empty_like(q)

    def calls(kern: Kernels) -> dict:
        return {
            "attention": lambda: kern.attention(
                codec, codec, q, kc, vc, mask, rot, cb, rot, cb, scale=0.088, out=out
            ),
            "quantize": lambda: kern.quantize(codec, x, past, rot, cb, present_cache=present),
        }

    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(4):
        for build, kern in builds.items():
            for op, fn in calls(kern).items():
                times.setdefault((build, op), []).append(per_call_us(fn, args.calls))
    print(f"card: {torch.cuda.get_device_name()}; {args.calls} calls per round, 4 rounds interleaved")
    print(f"baseline: {args.baseline}; this: {args.lib or library_path()}")
    print("op          baseline_us   this_us   baseline/this   (medians; rounds in brackets)")
    for op in ("attention", "quantize"):
        base, this = times[("baseline", op)], times[("this", op)]
        mb, mt = statistics.median(base), statistics.median(this)
        rounds = f"[{', '.join(f'{v:.1f}' for v in base)}] [{', '.join(f'{v:.1f}' for v in this)}]"
        print(f"{op:10s} {mb:12.1f} {mt:9.1f} {mb / mt:15.2f}   {rounds}")


if __name__ == "__main__":
    main()
