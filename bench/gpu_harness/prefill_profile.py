"""Per-kernel time of TQAttention prefill chunks (torch.profiler / CUPTI), to see where a prefill call goes.

Prints, for each case of bench/prefill_gpu.py's shape, every CUDA kernel the call launches with its mean time.
Run on a GPU: python3 bench/gpu_harness/prefill_profile.py [--shape 32,8,128] [--bits 4] [--case B,PAST,S]
--ncu: no profiler, three calls of the first case only (a target for `ncu --launch-skip 2 --launch-count 1`).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu_harness.capi import Kernels  # noqa: E402
from bench.prefill_gpu import chunk_inputs, codec_setup  # noqa: E402

CASES = [(1, 0, 2048), (1, 8192, 2048), (4, 4096, 256)]


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="32,8,128")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--case", help="B,PAST,S instead of the default cases")
    ap.add_argument("--ncu", action="store_true")
    args = ap.parse_args()
    cases = [tuple(int(x) for x in args.case.split(","))] if args.case else CASES
    hq, hkv, d = (int(x) for x in args.shape.split(","))
    kern = Kernels()
    codec, book, rot = codec_setup(torch, d, args.bits)
    print(torch.cuda.get_device_name())
    for b, past, s in cases:
        q, kc, vc, _, mask = chunk_inputs(torch, codec, b, past, s, hq, hkv)
        out = torch.empty_like(q)
        for _ in range(3 if args.ncu else 2):
            kern.attention(codec, codec, q, kc, vc, mask, rot, book, rot, book, scale=d**-0.5, out=out)
        torch.cuda.synchronize()
        if args.ncu:
            return
        reps = 5
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                kern.attention(codec, codec, q, kc, vc, mask, rot, book, rot, book, scale=d**-0.5, out=out)
            torch.cuda.synchronize()
        per = defaultdict(float)
        for ev in prof.events():
            if ev.device_type == torch.autograd.DeviceType.CUDA:
                per[ev.name[:90]] += ev.device_time / reps
        print(f"B={b} past={past} S={s}: total {sum(per.values()):.1f} us per call")
        for name, us in sorted(per.items(), key=lambda kv: -kv[1]):
            print(f"  {us:9.1f} us  {name}")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
