"""Decode attention time against the split count (force_splits), to calibrate the split chooser.

    python3 bench/gpu_harness/split_sweep.py [--cases bits:B:T,...] [--splits 0,1,2,4,8,16]

0 = the launcher's own choice. Same setup as bench/attention_gpu.py (Hq=32, Hkv=8, D=128, fp16 q, float mask,
inputs rotating over copies, Sylvester-Hadamard R_k and R_v promised as the ORT CUDA op does for constant
rotations); prints one row per case, microseconds per split count. Never asserts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.attention_gpu import HKV, HQ, D, hadamard_rotation  # noqa: E402
from bench.gpu_harness.capi import Kernels  # noqa: E402
from bench.gpu_harness.cases import decode_case  # noqa: E402
from bench.gpu_harness.timing import time_graph_us  # noqa: E402

DEFAULT_CASES = (
    "4:1:1024,4:8:1024,4:32:1024,4:1:4096,4:8:4096,4:32:4096,3:8:1024,3:32:1024,4:1:32768,4:8:32768"
)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--splits", default="0,1,2,4,8,16")
    args = ap.parse_args()
    splits = [int(s) for s in args.splits.split(",")]
    kern = Kernels()
    rot = torch.from_numpy(hadamard_rotation(D)[None]).float().cuda()
    if not kern.rotation_is_hadamard(rot):
        raise SystemExit("split_sweep: this build cannot check R for Hadamard structure")
    print(f"{torch.cuda.get_device_name()}; Hq={HQ} Hkv={HKV} D={D}; us per call by split count (0 = auto)")
    print("bits   B       T " + "".join(f"{s:>9d}" for s in splits))
    for case in args.cases.split(","):
        bits, b, t = (int(x) for x in case.split(":"))
        c = decode_case(bits, b, t)
        codec, q, kc, vc, mask, cb, out = c.codec, c.q, c.k_cache, c.v_cache, c.mask, c.codebook, c.out
        copies = c.copies
        row = []
        for ns in splits:
            inputs = (codec, q, kc, vc, mask, cb, out, ns)

            def call(i: int, inputs=inputs) -> None:
                codec, q, kc, vc, mask, cb, out, ns = inputs
                kern.attention(
                    codec,
                    codec,
                    q[i],
                    kc[i],
                    vc[i],
                    mask,
                    rot,
                    cb,
                    rot,
                    cb,
                    scale=0.088,
                    out=out,
                    force_splits=ns,
                    k_hadamard=True,
                    v_hadamard=True,
                )

            row.append(time_graph_us(call, copies))
        print(f"{bits:4d} {b:3d} {t:7d} " + "".join(f"{us:9.1f}" for us in row), flush=True)


if __name__ == "__main__":
    main()
