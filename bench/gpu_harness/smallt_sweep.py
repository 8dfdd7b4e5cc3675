"""Small-T decode attention: time against warps per block x split count.

    python3 bench/gpu_harness/smallt_sweep.py [--cases bits:B:T,...] [--warps 4,8] [--splits 0,1,2,4,8,16]
        [--rotation hadamard|dense] [--floor]

Forces the launcher's choice through TQ_DECODE_WARPS (plugins/kernels/attention.cu) and force_splits;
0 splits = the launcher's own split count (for those warps); the "auto" row = no override at all. Same setup
as bench/attention_gpu.py (Hq=32, Hkv=8, D=128, fp16 q, float mask, inputs rotating over copies, R of K and V
Sylvester-Hadamard by default as `tqexport convert` writes it; --rotation dense: a random dense R). Prints one
row per (case, warps), microseconds per split count; --floor adds the same timer's reading for a graph of
one and of two trivial kernels (the launch floor). Never asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.attention_gpu import HKV, HQ, D, dense_rotation, hadamard_rotation  # noqa: E402
from bench.gpu_harness.capi import Kernels  # noqa: E402
from bench.gpu_harness.cases import decode_case  # noqa: E402
from bench.gpu_harness.timing import time_graph_us  # noqa: E402

DEFAULT_CASES = "4:1:1024,3:1:1024,4:8:1024,4:32:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,4:1:32768"


def timed(inputs: tuple, ns: int) -> float:
    kern, codec, q, kc, vc, mask, rot, cb, out, copies = inputs

    k_hadamard = kern.rotation_is_hadamard(rot)

    def call(i: int) -> None:
        kern.attention(
            codec, codec, q[i], kc[i], vc[i], mask, rot, cb, rot, cb, scale=0.088, out=out, force_splits=ns,
            k_hadamard=k_hadamard, v_hadamard=k_hadamard,
        )  # fmt: skip

    return time_graph_us(call, copies)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--warps", default="4,8")
    ap.add_argument("--splits", default="0,1,2,4,8,16")
    ap.add_argument("--rotation", choices=("hadamard", "dense"), default="hadamard")
    ap.add_argument(
        "--floor", action="store_true", help="also time CUDA graphs of one and of two trivial kernels"
    )
    args = ap.parse_args()
    splits = [int(s) for s in args.splits.split(",")]
    kern = Kernels()
    make_rotation = hadamard_rotation if args.rotation == "hadamard" else dense_rotation
    rot = torch.from_numpy(make_rotation(D)[None]).float().cuda()
    print(
        f"{torch.cuda.get_device_name()}; Hq={HQ} Hkv={HKV} D={D}; {args.rotation} R; "
        "us per call by split count (0 = auto)"
    )
    print("bits   B       T  warps " + "".join(f"{s:>8d}" for s in splits))
    for case in args.cases.split(","):
        bits, b, t = (int(x) for x in case.split(":"))
        c = decode_case(bits, b, t)
        inputs = (kern, c.codec, c.q, c.k_cache, c.v_cache, c.mask, rot, c.codebook, c.out, c.copies)
        os.environ.pop("TQ_DECODE_WARPS", None)
        print(f"{bits:4d} {b:3d} {t:7d}   auto {timed(inputs, 0):8.1f}", flush=True)
        for w in (int(x) for x in args.warps.split(",")):
            os.environ["TQ_DECODE_WARPS"] = str(w)
            row = [timed(inputs, ns) for ns in splits]
            print(f"{bits:4d} {b:3d} {t:7d} {w:6d} " + "".join(f"{us:8.1f}" for us in row), flush=True)
        os.environ.pop("TQ_DECODE_WARPS", None)
    if args.floor:
        x = [torch.zeros(1024, device="cuda") for _ in range(2)]
        one = time_graph_us(lambda i: x[i].add_(1.0), 2)
        two = time_graph_us(lambda i: (x[i].add_(1.0), x[i].mul_(1.0)), 2)
        print(f"floor: a graph of one trivial kernel {one:.2f} us, of two {two:.2f} us (the rows' timer)")


if __name__ == "__main__":
    main()
