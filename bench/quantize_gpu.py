"""TQQuantize throughput on the GPU: bytes read + written per second as a share of a device-to-device copy.

Concat-mode appends (empty past) of K, Hkv=8, D=128: prefill B=8 S=4096 and decode B=32 S=1, 4-bit and 3-bit,
QJL off/on, float16 and float32 inputs, Hadamard rotation (the v4 fast path without QJL; QJL runs the v1
kernel) and a dense Haar rotation (the fast kernel's v2 dense branch). Prints the card; never asserts.
`--fast` times only the B=8 S=4096 Hadamard rows without QJL (the fast path's target cases).
`--sweep` times the promised 4-bit float16 call (with and without constant_tables) at B=8 and S = 512 .. 8192
and fits us = fixed + per_token * S (least squares): the fixed part is what a launch costs besides streaming
(setup, first and last tiles, the launch itself).

Rows with a Hadamard R and no QJL are timed twice: as a caller that knows nothing about R (the kernel checks
R's structure, a D x D read per block) and as the ORT CUDA op calls it for a constant rotation initializer
(QuantizeParams::rotation_hadamard promised after the host check, and QuantizeParams::constant_tables: a
block builds its tables before it waits for the previous kernel, here the previous call): the columns "us" and
"promised". The column "no-early" is the promised call without constant_tables (a plain launch: what a caller
gets whose codebook or R is not a constant initializer, e.g. the TensorRT plugin), timed in the same run. With
the promise, calls of at most 16 new tokens (the S=1 rows) run the decode-step kernel (quantize_step.cuh); its
own A/B against v4 and a layer's decode step are in bench/quantize_step_gpu.py.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_harness.capi import Codec, Kernels  # noqa: E402
from bench.gpu_harness.timing import copy_bandwidth_gbs, time_graph_us  # noqa: E402

HKV, D = 8, 128
CASES = [  # (bits, qjl, rotation, dtype, B, S)
    (4, 0, "hadamard", "float16", 8, 4096),
    (3, 0, "hadamard", "float16", 8, 4096),
    (4, 1, "hadamard", "float16", 8, 4096),
    (3, 1, "hadamard", "float16", 8, 4096),
    (4, 0, "hadamard", "float32", 8, 4096),
    (4, 0, "dense", "float16", 8, 4096),
    (4, 0, "hadamard", "float16", 32, 1),
    (3, 0, "hadamard", "float16", 32, 1),
    (4, 1, "hadamard", "float16", 32, 1),
    (3, 1, "hadamard", "float16", 32, 1),
    (4, 0, "hadamard", "float16", 1, 1),
    (4, 0, "hadamard", "float16", 8, 1),
]


def sweep(kern: Kernels, name: str) -> None:
    import numpy as np
    import torch

    from tqexport.codec import Codec as RefCodec
    from tqexport.codec import CodecConfig

    ref = RefCodec.build(CodecConfig(head_dim=D, bits=(4,), rotation="hadamard"))
    codec = Codec(D, (D,), (4,), 0)
    rot = torch.from_numpy(ref.rotation).cuda()
    cb = torch.from_numpy(ref.codebook).cuda()
    lengths = [512, 1024, 2048, 4096, 8192]
    times: dict[bool, list[float]] = {True: [], False: []}
    for s in lengths:
        x = [torch.randn((8, HKV, s, D), dtype=torch.float16, device="cuda") for _ in range(4)]
        past = torch.empty((8, HKV, 0, codec.row_bytes), dtype=torch.uint8, device="cuda")
        present = [
            torch.empty((8, HKV, s, codec.row_bytes), dtype=torch.uint8, device="cuda") for _ in range(4)
        ]
        for early in (True, False):

            def run(i: int, x=x, past=past, present=present, early=early) -> None:
                kern.quantize(
                    codec,
                    x[i],
                    past,
                    rot,
                    cb,
                    None,
                    present_cache=present[i],
                    hadamard=True,
                    constant_tables=early,
                )

            times[early].append(time_graph_us(run, 4))
    print(f"\n{name}; 4-bit float16 promised, B=8 Hkv={HKV} D={D}; with and without constant_tables")
    for early in (True, False):
        per_token, fixed = np.polyfit(np.array(lengths, float), np.array(times[early]), 1)
        print("     S       us   fit us" + ("" if early else "   (no-early)"))
        for s, us in zip(lengths, times[early], strict=True):
            print(f"{s:6d} {us:8.2f} {fixed + per_token * s:8.2f}")
        label = "promised" if early else "no-early"
        print(f"{label}: fixed {fixed:.2f} us, per 1K tokens {1024 * per_token:.2f} us")


def main() -> None:
    import torch

    from tqexport.codec import Codec as RefCodec
    from tqexport.codec import CodecConfig

    kern = Kernels()
    name = torch.cuda.get_device_name()
    if "--sweep" in sys.argv[1:]:
        sweep(kern, name)
        return
    copy_gbs = copy_bandwidth_gbs()
    print(f"card: {name}; device-to-device copy: {copy_gbs:.0f} GB/s")
    rows = []
    fast_only = "--fast" in sys.argv[1:]
    for bits, qjl, rot_kind, dtype_name, b, s in CASES:
        if fast_only and (qjl or rot_kind != "hadamard" or b * s <= 1024):
            continue
        dtype = getattr(torch, dtype_name)
        ref = RefCodec.build(CodecConfig(head_dim=D, bits=(bits,), qjl=bool(qjl), rotation=rot_kind))
        codec = Codec(D, (D,), (bits,), qjl)
        rot = torch.from_numpy(ref.rotation).cuda()
        cb = torch.from_numpy(ref.codebook).cuda()
        qm = torch.from_numpy(ref.qjl_matrix).cuda() if qjl else None
        variants = 4 if b * s > 1024 else 1
        x = [torch.randn((b, HKV, s, D), dtype=dtype, device="cuda") for _ in range(variants)]
        past = torch.empty((b, HKV, 0, codec.row_bytes), dtype=torch.uint8, device="cuda")
        present = [
            torch.empty((b, HKV, s, codec.row_bytes), dtype=torch.uint8, device="cuda")
            for _ in range(variants)
        ]

        def run(
            i: int,
            codec=codec,
            x=x,
            past=past,
            rot=rot,
            cb=cb,
            qm=qm,
            present=present,
            promise=False,
            early=False,
        ) -> None:
            kern.quantize(
                codec,
                x[i],
                past,
                rot,
                cb,
                qm,
                present_cache=present[i],
                hadamard=promise,
                constant_tables=early,
            )

        us = time_graph_us(run, variants)
        promised = plain = float("nan")
        if not qjl and kern.rotation_is_hadamard(rot):
            promised = time_graph_us(lambda i, run=run: run(i, promise=True, early=True), variants)
            plain = time_graph_us(lambda i, run=run: run(i, promise=True), variants)
        nbytes = b * HKV * s * (D * x[0].element_size() + codec.row_bytes)
        best = us if math.isnan(promised) else min(us, promised)
        gbs = nbytes / (best * 1e-6) / 1e9
        rows.append((bits, qjl, rot_kind, dtype_name, b, s, us, promised, plain, gbs, gbs / copy_gbs))
    print(
        f"\n{name}; copy {copy_gbs:.0f} GB/s; Hkv={HKV} D={D}; quantize v4 (Hadamard, no QJL; "
        "promised S <= 16: the step kernel)"
    )
    print("(GB/s and %copy from the faster column; promised/us: the promise's time over the checked one)")
    print("bits qjl rotation dtype      B     S       us promised no-early promised/us     GB/s  %copy")
    for bits, qjl, rot_kind, dtype_name, b, s, us, promised, plain, gbs, share in rows:
        head = f"{bits:4d} {qjl:3d} {rot_kind:8s} {dtype_name:8s} {b:3d} {s:5d}"
        times = f"{us:8.1f} {promised:8.1f} {plain:8.1f} {promised / us:11.3f}"
        print(f"{head} {times} {gbs:8.1f} {100 * share:6.1f}")


if __name__ == "__main__":
    main()
