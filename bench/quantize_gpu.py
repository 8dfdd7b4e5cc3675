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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class PrefillCase:
    """One concat-mode append (empty past) of x [B, Hkv, S, D], in as many input/output copies as `x` holds
    (so that L2 cannot keep them across the calls of one timed graph)."""

    codec: Codec
    rotation: Any  # torch float32 [1, D, D]
    codebook: Any  # torch float32 [1, 256]
    qjl_matrix: Any  # torch float32 [D, D] or None
    x: list
    past: Any
    present: list

    def run(self, kern: Kernels, i: int, promise: bool = False, early: bool = False) -> None:
        """Copy i; promise: R promised Sylvester-Hadamard; early: constant tables promised too."""
        kern.quantize(
            self.codec, self.x[i], self.past, self.rotation, self.codebook, self.qjl_matrix,
            present_cache=self.present[i], hadamard=promise, constant_tables=early,
        )  # fmt: skip


def prefill_case(bits: int, qjl: int, rotation: str, dtype: str, b: int, s: int, copies: int) -> PrefillCase:
    import torch

    from tqexport.codec import Codec as RefCodec
    from tqexport.codec import CodecConfig

    ref = RefCodec.build(CodecConfig(head_dim=D, bits=(bits,), qjl=bool(qjl), rotation=rotation))
    codec = Codec(D, (D,), (bits,), qjl)
    rb = codec.row_bytes
    return PrefillCase(
        codec,
        torch.from_numpy(ref.rotation).cuda(),
        torch.from_numpy(ref.codebook).cuda(),
        torch.from_numpy(ref.qjl_matrix).cuda() if qjl else None,
        [torch.randn((b, HKV, s, D), dtype=getattr(torch, dtype), device="cuda") for _ in range(copies)],
        torch.empty((b, HKV, 0, rb), dtype=torch.uint8, device="cuda"),
        [torch.empty((b, HKV, s, rb), dtype=torch.uint8, device="cuda") for _ in range(copies)],
    )


def sweep(kern: Kernels, name: str) -> None:
    import numpy as np

    lengths = [512, 1024, 2048, 4096, 8192]
    times: dict[bool, list[float]] = {True: [], False: []}
    for s in lengths:
        case = prefill_case(4, 0, "hadamard", "float16", 8, s, 4)
        for early in (True, False):
            times[early].append(time_graph_us(lambda i, c=case, e=early: c.run(kern, i, True, e), 4))
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
        variants = 4 if b * s > 1024 else 1
        case = prefill_case(bits, qjl, rot_kind, dtype_name, b, s, variants)
        us = time_graph_us(lambda i, case=case: case.run(kern, i), variants)
        promised = plain = float("nan")
        if not qjl and kern.rotation_is_hadamard(case.rotation):
            promised = time_graph_us(lambda i, case=case: case.run(kern, i, True, True), variants)
            plain = time_graph_us(lambda i, case=case: case.run(kern, i, True), variants)
        nbytes = b * HKV * s * (D * case.x[0].element_size() + case.codec.row_bytes)
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
