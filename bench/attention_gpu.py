"""TQAttention decode (S=1) on the GPU vs torch SDPA fp16 on the uncompressed cache, in the same run.

Prints the card, microseconds, speedup over SDPA and achieved bandwidth on the compressed bytes as a share
of a device-to-device copy measured in the same run. Inputs rotate among several copies so L2 does not
flatter small cases. Never asserts. Run: python3 bench/attention_gpu.py [--quick] [--rotation dense]

The rotation defaults to what `tqexport convert` writes by default, a Sylvester-Hadamard
R = H_D diag(s) / sqrt(D) (docs/format.md 3.1; the kernels recognize it and un-rotate by a butterfly);
`--rotation dense` times a random dense orthogonal R (convert --rotation dense), which takes the dense
product. The cache bytes are the same either way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.gpu_harness.capi import Codec, Kernels  # noqa: E402
from bench.gpu_harness.timing import copy_bandwidth_gbs, time_graph_us  # noqa: E402

HQ, HKV, D = 32, 8, 128
L2_FLUSH_BYTES = 256 << 20


def hadamard_rotation(d: int, seed: int = 0) -> np.ndarray:
    """H_d diag(s) / sqrt(d) (Sylvester order, random signs s), float64, as format.md 3.1 builds it."""
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    s = 2.0 * np.random.default_rng(seed).integers(0, 2, d) - 1.0
    return h * s[None, :] / np.sqrt(d)


def dense_rotation(d: int, seed: int = 0) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian), float64."""
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]


def random_cache(torch, codec: Codec, b: int, t: int, hkv: int = HKV):
    """Random codes with float16 norms of 1.0 (random bytes could be NaN norms)."""
    cache = torch.randint(0, 256, (b, hkv, t, codec.row_bytes), dtype=torch.uint8, device="cuda")
    p = len(codec.bits)
    norm_off = codec.row_bytes - 2 * p * (2 if codec.qjl else 1)
    one = torch.tensor([1.0] * p, dtype=torch.float16, device="cuda").view(torch.uint8)
    cache[..., norm_off : norm_off + 2 * p] = one
    return cache


def main() -> None:
    import torch
    import torch.nn.functional as F

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--profile", nargs="?", const="4:8:32768", default="", help="bits:B:T: 3 calls, no timing (for ncu)"
    )
    ap.add_argument("--skip-sdpa", action="store_true", help="time only the TQ kernels (A/B of builds)")
    ap.add_argument("--cases", default="", help="only these bits:B:T cases, comma-separated (e.g. 4:1:1024)")
    ap.add_argument(
        "--widths",
        default="4,3",
        help="K/V code widths, comma-separated: 4 (both 4-bit) or 4/3 (K 4-bit, V 3-bit); default 4,3",
    )
    ap.add_argument(
        "--rotation",
        choices=("hadamard", "dense"),
        default="hadamard",
        help="R of K and V (default hadamard)",
    )
    ap.add_argument(
        "--shape",
        default=f"{HQ},{HKV},{D}",
        help=f"Hq,Hkv,D of the timing rows (default {HQ},{HKV},{D}: issue 4's shape). The decode kernel "
        "serves D 128, D 64 and D 256 (at D 256 and with 2/3-bit V at D 64: Hq/Hkv <= 8); anything else "
        "takes the general split kernel",
    )
    args = ap.parse_args()
    hq, hkv, d = (int(x) for x in args.shape.split(","))
    kern = Kernels()
    make_rotation = hadamard_rotation if args.rotation == "hadamard" else dense_rotation
    if args.profile:
        pbits, pb, pt = (int(x) for x in args.profile.split(":"))
        codec = Codec(D, (D,), (pbits,))
        cb = torch.zeros((1, 256), device="cuda")
        cb[0, : 2**pbits] = torch.linspace(-0.2, 0.2, 2**pbits, device="cuda")
        rot = torch.from_numpy(make_rotation(D)[None]).float().cuda()
        q = torch.randn((pb, HQ, 1, D), dtype=torch.float16, device="cuda")
        kc, vc = random_cache(torch, codec, pb, pt), random_cache(torch, codec, pb, pt)
        mask = torch.zeros((1, 1, 1, pt), device="cuda")
        k_hadamard = kern.rotation_is_hadamard(rot)
        for _ in range(3):
            kern.attention(
                codec, codec, q, kc, vc, mask, rot, cb, rot, cb, scale=0.088, k_hadamard=k_hadamard,
                v_hadamard=k_hadamard,
            )  # fmt: skip
        torch.cuda.synchronize()
        return
    name = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth_gbs()
    print(f"card: {name}; device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")
    rot = torch.from_numpy(make_rotation(d)[None]).float().cuda()
    # As the ORT CUDA op does for constant R_k and R_v: rotation_is_hadamard once, then the promises on every
    # call (R_k: the q butterfly; R_v: no device check of its structure).
    k_hadamard = kern.rotation_is_hadamard(rot)
    batches = (1, 8, 32)
    lengths = (1024, 4096, 32768, 131072) if not args.quick else (1024, 32768)
    rows = []
    for bits in args.widths.split(","):
        kbits, vbits = (int(x) for x in bits.split("/")) if "/" in bits else (int(bits), int(bits))
        kcodec, vcodec = Codec(d, (d,), (kbits,)), Codec(d, (d,), (vbits,))
        kcb, vcb = torch.zeros((1, 256), device="cuda"), torch.zeros((1, 256), device="cuda")
        kcb[0, : 2**kbits] = torch.linspace(-0.2, 0.2, 2**kbits, device="cuda")
        vcb[0, : 2**vbits] = torch.linspace(-0.2, 0.2, 2**vbits, device="cuda")
        for b in batches:
            for t in lengths:
                if args.cases and f"{bits}:{b}:{t}" not in args.cases.split(","):
                    continue
                comp_bytes = b * hkv * t * (kcodec.row_bytes + vcodec.row_bytes)
                fp16_bytes = b * hkv * t * d * 2 * 2
                copies = int(max(1, min(4, L2_FLUSH_BYTES // max(comp_bytes, 1) + 1)))
                sdpa_copies = int(max(1, min(4, L2_FLUSH_BYTES // fp16_bytes + 1)))
                try:
                    q = [
                        torch.randn((b, hq, 1, d), dtype=torch.float16, device="cuda") for _ in range(copies)
                    ]
                    kc = [random_cache(torch, kcodec, b, t, hkv) for _ in range(copies)]
                    vc = [random_cache(torch, vcodec, b, t, hkv) for _ in range(copies)]
                    mask = torch.zeros((1, 1, 1, t), dtype=torch.float32, device="cuda")
                    out = torch.empty_like(q[0])

                    codecs, books = (kcodec, vcodec), (kcb, vcb)

                    def ours(
                        i: int, codecs=codecs, books=books, q=q, kc=kc, vc=vc, mask=mask, out=out
                    ) -> None:
                        kern.attention(
                            *codecs,
                            q[i],
                            kc[i],
                            vc[i],
                            mask,
                            rot,
                            books[0],
                            rot,
                            books[1],
                            scale=0.088,
                            out=out,
                            k_hadamard=k_hadamard,
                            v_hadamard=k_hadamard,
                        )

                    t_ours = time_graph_us(ours, copies)
                    kc = vc = ours = None
                    torch.cuda.empty_cache()
                    if args.skip_sdpa:
                        bw = comp_bytes / (t_ours * 1e-6) / 1e9
                        nan = float("nan")
                        rows.append((bits, b, t, t_ours, nan, nan, bw, bw / copy_gbs))
                        print(
                            f"bits={bits} B={b:2d} T={t:6d}: ours {t_ours:9.1f} us {bw:6.0f} GB/s", flush=True
                        )
                        continue
                    k16 = [
                        torch.randn((b, hkv, t, d), dtype=torch.float16, device="cuda")
                        for _ in range(sdpa_copies)
                    ]
                    v16 = [
                        torch.randn((b, hkv, t, d), dtype=torch.float16, device="cuda")
                        for _ in range(sdpa_copies)
                    ]
                    q16 = [
                        torch.randn((b, hq, 1, d), dtype=torch.float16, device="cuda")
                        for _ in range(sdpa_copies)
                    ]

                    def sdpa(i: int, q16=q16, k16=k16, v16=v16) -> None:
                        F.scaled_dot_product_attention(q16[i], k16[i], v16[i], enable_gqa=True)

                    t_sdpa = time_graph_us(sdpa, sdpa_copies)
                    k16 = v16 = q16 = sdpa = None
                    torch.cuda.empty_cache()
                except torch.OutOfMemoryError:
                    print(f"bits={bits} B={b} T={t}: out of memory, skipped")
                    torch.cuda.empty_cache()
                    continue
                bw = comp_bytes / (t_ours * 1e-6) / 1e9
                rows.append((bits, b, t, t_ours, t_sdpa, t_sdpa / t_ours, bw, bw / copy_gbs))
                print(
                    f"bits={bits} B={b:2d} T={t:6d}: ours {t_ours:9.1f} us  sdpa {t_sdpa:9.1f} us  "
                    f"x{t_sdpa / t_ours:5.2f}  {bw:6.0f} GB/s = {100 * bw / copy_gbs:4.0f}% of copy",
                    flush=True,
                )
    print(
        f"\n{name}; copy {copy_gbs:.0f} GB/s; Hq={hq} Hkv={hkv} D={d}, decode S=1, fp16 q/out, "
        f"{args.rotation} R{' (R_k, R_v promised Hadamard)' if k_hadamard else ''}"
    )
    print("bits   B       T   ours_us   sdpa_us  speedup  %copy")
    for bits, b, t, to, ts, sp, _bw, share in rows:
        print(f"{bits:>4} {b:3d} {t:7d} {to:9.1f} {ts:9.1f} {sp:8.2f} {100 * share:6.0f}")


if __name__ == "__main__":
    main()
