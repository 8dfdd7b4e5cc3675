"""TQAttention on a prefill chunk (S > 1 query tokens, causal) vs torch SDPA fp16, in the same run.

A converted model's prefill runs TQAttention with S = chunk length over the compressed cache (the past plus
the chunk, which TQQuantize has just appended). This times that call against
`torch.nn.functional.scaled_dot_product_attention` on the uncompressed float16 cache of the same length: with
no past, `is_causal=True` (flash attention); with a past, a boolean mask of the chunk's causal band (SDPA then
takes its masked kernel). Hq 32, Hkv 8, D 128 by default, 4-bit K/V, Hadamard R, promised to the kernels as
the ORT CUDA op promises constant Hadamard initializers (--no-promise: not). Prints the card, microseconds and
the ratio SDPA / ours (> 1: ours faster). Never asserts.
Run: python3 bench/prefill_gpu.py [--shape Hq,Hkv,D] [--bits 4] [--no-promise] [--softcap 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attention_gpu import hadamard_rotation, random_cache  # noqa: E402
from bench.gpu_harness.capi import Codec, Kernels  # noqa: E402
from bench.gpu_harness.timing import time_graph_us  # noqa: E402

CASES = [  # (B, past tokens, chunk tokens)
    (1, 0, 256),
    (1, 0, 1024),
    (1, 0, 2048),
    (1, 4096, 512),
    (1, 8192, 2048),
    (4, 0, 1024),
    (4, 4096, 256),
    (1, 4096, 64),  # two 128-row blocks per kv head: the least the decoded cache is used for
    (8, 2048, 64),
]


def codec_setup(torch, d: int, bits: int):
    """Harness codec (one part, `bits` wide), an evenly spaced codebook and the Hadamard R, on the GPU."""
    codec = Codec(d, (d,), (bits,))
    book = torch.zeros((1, 256), device="cuda")
    book[0, : 2**bits] = torch.linspace(-0.2, 0.2, 2**bits, device="cuda")
    rot = torch.from_numpy(hadamard_rotation(d)[None]).float().cuda()
    return codec, book, rot


def chunk_inputs(torch, codec, b: int, past: int, s: int, hq: int, hkv: int):
    """float16 queries of an S-token chunk after `past` tokens, random compressed K/V caches of past + S rows,
    the chunk's causal band [s, t] (bool) and its additive float32 mask [B, 1, S, T]."""
    d, t = codec.head_dim, past + s
    q = torch.randn((b, hq, s, d), dtype=torch.float16, device="cuda")
    kc, vc = random_cache(torch, codec, b, t, hkv), random_cache(torch, codec, b, t, hkv)
    qpos = past + torch.arange(s, device="cuda")
    allowed = torch.arange(t, device="cuda")[None, :] <= qpos[:, None]  # [s, t]
    mask = torch.where(allowed, 0.0, float("-inf")).float()[None, None].expand(b, 1, s, t).contiguous()
    return q, kc, vc, allowed, mask


def main() -> None:
    import torch
    import torch.nn.functional as F

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="32,8,128", help="Hq,Hkv,D (default 32,8,128)")
    ap.add_argument("--bits", type=int, default=4, help="K and V code width (default 4)")
    ap.add_argument(
        "--no-promise",
        action="store_true",
        help="do not promise the Hadamard R_k / R_v to the kernels (the ORT CUDA op promises them for"
        " constant Hadamard initializers, as `tqexport convert` writes; without the promise the kernels check"
        " R's structure on the device and always run the reduce kernel)",
    )
    ap.add_argument("--softcap", type=float, default=0.0, help="soft-cap of ours (Gemma 2: 50); SDPA: none")
    args = ap.parse_args()
    promise = not args.no_promise
    hq, hkv, d = (int(x) for x in args.shape.split(","))
    kern = Kernels()
    codec, book, rot = codec_setup(torch, d, args.bits)
    name = torch.cuda.get_device_name()
    rows = []
    for b, past, s in CASES:
        t = past + s
        q, kc, vc, allowed, mask = chunk_inputs(torch, codec, b, past, s, hq, hkv)
        out = torch.empty_like(q)

        def ours(_i: int, q=q, kc=kc, vc=vc, mask=mask, out=out) -> None:
            kern.attention(
                codec, codec, q, kc, vc, mask, rot, book, rot, book, scale=d**-0.5, out=out,
                softcap=args.softcap, k_hadamard=promise, v_hadamard=promise,
            )  # fmt: skip

        t_ours = time_graph_us(ours, 1, inner=5, repeats=5)
        kc = vc = ours = None
        k16 = torch.randn((b, hkv, t, d), dtype=torch.float16, device="cuda")
        v16 = torch.randn((b, hkv, t, d), dtype=torch.float16, device="cuda")
        band = allowed[None, None].expand(b, 1, s, t)

        def sdpa(_i: int, q=q, k16=k16, v16=v16, band=band, causal=past == 0) -> None:
            if causal:
                F.scaled_dot_product_attention(q, k16, v16, is_causal=True, enable_gqa=True)
            else:
                F.scaled_dot_product_attention(q, k16, v16, attn_mask=band, enable_gqa=True)

        t_sdpa = time_graph_us(sdpa, 1, inner=5, repeats=5)
        rows.append((b, past, s, t_ours, t_sdpa))
        print(f"B={b} past={past} S={s}: ours {t_ours:9.1f} us  sdpa {t_sdpa:9.1f} us", flush=True)
        torch.cuda.empty_cache()
    told = "promised" if promise else "not promised"
    print(f"\n{name}; Hq={hq} Hkv={hkv} D={d}, {args.bits}-bit K/V, causal prefill chunk, fp16 q/out")
    print(f"Hadamard R_k / R_v {told} to the kernels; soft-cap {args.softcap:g} (ours only)")
    print("  B   past      S    ours_us    sdpa_us  sdpa/ours")
    for b, past, s, to, ts in rows:
        print(f"{b:3d} {past:6d} {s:6d} {to:10.1f} {ts:10.1f} {ts / to:10.3f}")


if __name__ == "__main__":
    main()
