"""TQQuantize throughput on the GPU: bytes read + written per second as a share of a device-to-device copy.

Prefill-sized appends (concat mode, empty past) of fp16 K, Hkv=8, D=128, 4-bit and 3-bit. Never asserts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_harness.capi import Codec, Kernels  # noqa: E402
from bench.gpu_harness.timing import copy_bandwidth_gbs, time_graph_us  # noqa: E402

HKV, D = 8, 128


def main() -> None:
    import torch

    from tqexport.codec import Codec as RefCodec
    from tqexport.codec import CodecConfig

    kern = Kernels()
    name = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth_gbs()
    print(f"card: {name}; device-to-device copy: {copy_gbs:.0f} GB/s")
    rows = []
    for bits, qjl in ((4, 0), (3, 0), (4, 1)):
        ref = RefCodec.build(CodecConfig(head_dim=D, bits=(bits,), qjl=bool(qjl)))
        codec = Codec(D, (D,), (bits,), qjl)
        rot = torch.from_numpy(ref.rotation).cuda()
        cb = torch.from_numpy(ref.codebook).cuda()
        qm = torch.from_numpy(ref.qjl_matrix).cuda() if qjl else None
        for b, s in ((1, 1), (32, 1), (1, 4096), (8, 4096)):
            x = [torch.randn((b, HKV, s, D), dtype=torch.float16, device="cuda") for _ in range(2)]
            past = torch.empty((b, HKV, 0, codec.row_bytes), dtype=torch.uint8, device="cuda")
            present = torch.empty((b, HKV, s, codec.row_bytes), dtype=torch.uint8, device="cuda")

            def run(i: int, codec=codec, x=x, past=past, rot=rot, cb=cb, qm=qm, present=present) -> None:
                kern.quantize(codec, x[i], past, rot, cb, qm, present_cache=present)

            us = time_graph_us(run, 2)
            nbytes = b * HKV * s * (D * 2 + codec.row_bytes)
            gbs = nbytes / (us * 1e-6) / 1e9
            rows.append((bits, qjl, b, s, us, gbs, gbs / copy_gbs))
    print(f"\n{name}; copy {copy_gbs:.0f} GB/s; Hkv={HKV} D={D}, fp16 x, dense float64 rotation")
    print("bits qjl   B     S      us     GB/s  %copy")
    for bits, qjl, b, s, us, gbs, share in rows:
        print(f"{bits:4d} {qjl:3d} {b:3d} {s:5d} {us:7.1f} {gbs:8.1f} {100 * share:6.1f}")


if __name__ == "__main__":
    main()
