"""One TQQuantize configuration, launched a few times, for ncu (bench/gpu_harness/quant_device.sh):
    python3 bench/gpu_harness/quant_profile.py [BITS B S DTYPE]   (default 4 8 4096 float16; Hkv=8, D=128,
Hadamard rotation, no QJL). The library is TQ_KERNELS_LIB (as the benches)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu_harness.capi import Codec, Kernels  # noqa: E402


def main() -> None:
    import torch

    from tqexport.codec import Codec as RefCodec
    from tqexport.codec import CodecConfig

    bits, b, s = (int(a) for a in (sys.argv[1:4] if len(sys.argv) > 3 else (4, 8, 4096)))
    dtype = getattr(torch, sys.argv[4] if len(sys.argv) > 4 else "float16")
    hkv, d = 8, 128
    ref = RefCodec.build(CodecConfig(head_dim=d, bits=(bits,), rotation="hadamard"))
    codec = Codec(d, (d,), (bits,))
    kern = Kernels()
    x = torch.randn((b, hkv, s, d), dtype=dtype, device="cuda")
    past = torch.empty((b, hkv, 0, codec.row_bytes), dtype=torch.uint8, device="cuda")
    present = torch.empty((b, hkv, s, codec.row_bytes), dtype=torch.uint8, device="cuda")
    rot = torch.from_numpy(ref.rotation).cuda()
    cb = torch.from_numpy(ref.codebook).cuda()
    for _ in range(3):
        kern.quantize(codec, x, past, rot, cb, None, present_cache=present)
    torch.cuda.synchronize()
    print("ran", bits, b, s, dtype)


if __name__ == "__main__":
    main()
