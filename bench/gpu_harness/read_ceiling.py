"""Read-only bandwidth ceiling of the card, next to the copy bandwidth the benches divide by.

The issue's "% of copy" counts a device-to-device copy's bytes read plus written; the decode kernel and SDPA
only read. This times a plain streaming read (16-byte loads, 4 in flight per thread, an XOR kept so nothing is
dropped) over as many bytes as a decode case, so a NOTES row can say how far a kernel is from what the memory
system gives to reads alone. Timing only; needs CuPy and torch on the device.
Run: python3 bench/gpu_harness/read_ceiling.py [--gb 1.1 4.4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu_harness.timing import copy_bandwidth_gbs, time_graph_us  # noqa: E402

READ_SRC = r"""
extern "C" __global__ void read_xor(const uint4* __restrict__ src, long long n, unsigned* out) {
  unsigned acc = 0;
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldcs(src + i), b = __ldcs(src + i + stride);
    const uint4 c = __ldcs(src + i + 2 * stride), d = __ldcs(src + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldcs(src + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;  // keeps the loads; practically never written
}
"""


def main() -> None:
    import cupy as cp
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, nargs="+", default=[1.1, 4.4], help="bytes read per call, in GB")
    args = ap.parse_args()
    kernel = cp.RawKernel(READ_SRC, "read_xor")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out = torch.zeros(1, dtype=torch.int32, device="cuda")
    name = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth_gbs()
    print(f"{name}; device-to-device copy {copy_gbs:.0f} GB/s (read + write)")
    for gb in args.gb:
        nbytes = int(gb * 1e9) // 16 * 16
        copies = 2 if gb < 1 else 1  # a buffer under 1 GB alternates with a second one (L2 holds 50 MB)
        bufs = [torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_() for _ in range(copies)]
        for blocks_per_sm in (4, 8, 16):
            us = time_read(kernel, bufs, sms * blocks_per_sm, out)
            gbs = nbytes / (us * 1e-6) / 1e9
            print(
                f"read {nbytes / 1e9:5.2f} GB, {blocks_per_sm:2d} blocks/SM x 256: {us:9.1f} us "
                f"{gbs:6.0f} GB/s = {100 * gbs / copy_gbs:4.0f}% of copy"
            )
        bufs.clear()
        torch.cuda.empty_cache()


def time_read(kernel, bufs: list, blocks: int, out) -> float:
    """Median microseconds of one streaming read of a buffer (cycling over bufs)."""
    import cupy as cp
    import torch

    def read(i: int) -> None:
        with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            kernel(
                (blocks,),
                (256,),
                (cp.uint64(bufs[i].data_ptr()), cp.int64(bufs[i].numel() // 16), cp.uint64(out.data_ptr())),
            )

    return time_graph_us(read, len(bufs), inner=5, repeats=5)


if __name__ == "__main__":
    main()
