"""Decode-kernel launches for compute-sanitizer (memcheck, racecheck) over the small-T paths: 4 and 8 warps
per block (TQ_DECODE_WARPS), one and three splits, with and without a window, G = 4 and 16 (which ignores 8).
Exit 0 if it ran (the sanitizer's summary is the verdict):
    compute-sanitizer --tool racecheck python3 bench/gpu_harness/smallt_sanitize.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from bench.gpu_harness.capi import Codec, Kernels  # noqa: E402
from tqexport.codec import Codec as RefCodec  # noqa: E402
from tqexport.codec import CodecConfig  # noqa: E402


def main() -> None:
    k = Kernels()
    d, b, hkv, t, ns, rw = 128, 2, 2, 700, 2, 4
    kref = RefCodec.build(CodecConfig(head_dim=d, bits=(4,)))
    vref = RefCodec.build(CodecConfig(head_dim=d, bits=(3,)))
    kc, vc = Codec(d, (d,), (4,)), Codec(d, (d,), (3,))
    krot, kcb = torch.from_numpy(kref.rotation).cuda(), torch.from_numpy(kref.codebook).cuda()
    vrot, vcb = torch.from_numpy(vref.rotation).cuda(), torch.from_numpy(vref.codebook).cuda()
    x = torch.randn((b, hkv, t, d), device="cuda", dtype=torch.float16)
    runs = 0
    for window in ((0, 0), (ns, rw)):
        w = window[0] + window[1]
        pk = torch.empty((b, hkv, 0, kc.row_bytes), dtype=torch.uint8, device="cuda")
        pv = torch.empty((b, hkv, 0, vc.row_bytes), dtype=torch.uint8, device="cuda")
        pw = torch.empty((b, hkv, 0, d), dtype=torch.float16, device="cuda")
        kcache, kwin = k.quantize(
            kc, x, pk, krot, kcb, None, pw if w else None, sink_tokens=window[0], recent_window=window[1]
        )
        vcache, vwin = k.quantize(
            vc, x, pv, vrot, vcb, None, pw if w else None, sink_tokens=window[0], recent_window=window[1]
        )
        mask = torch.zeros((b, 1, 1, t), device="cuda")
        for group in (4, 16):
            q = torch.randn((b, hkv * group, 1, d), device="cuda", dtype=torch.float16)
            for warps in (4, 8):
                for splits in (1, 3):
                    os.environ["TQ_DECODE_WARPS"] = str(warps)
                    out = k.attention(
                        kc,
                        vc,
                        q,
                        kcache,
                        vcache,
                        mask,
                        krot,
                        kcb,
                        vrot,
                        vcb,
                        None,
                        kwin if w else None,
                        vwin if w else None,
                        scale=0.1,
                        sink_tokens=window[0],
                        recent_window=window[1],
                        force_splits=splits,
                    )
                    torch.cuda.synchronize()
                    assert torch.isfinite(out).all(), (window, group, warps, splits)
                    runs += 1
    os.environ.pop("TQ_DECODE_WARPS", None)
    print(f"smallt sanitize cases ran: {runs} launches")


if __name__ == "__main__":
    main()
