"""One decode-attention case's inputs for the GPU harness scripts (smallt_sweep.py, split_sweep.py,
chain_stamps.py): the setup of bench/attention_gpu.py (Hq=32, Hkv=8, D=128, fp16 q, float mask, a linear
codebook, random codes with unit norms), in as many copies as keep the compressed caches from staying in L2
across the calls of one timed graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.attention_gpu import HKV, HQ, L2_FLUSH_BYTES, D, random_cache
from bench.gpu_harness.capi import Codec


@dataclass
class DecodeCase:
    codec: Codec
    codebook: Any  # torch [1, 256] float32
    copies: int
    q: list  # copies x [B, Hq, 1, D] float16
    k_cache: list  # copies x [B, Hkv, T, row_bytes] uint8
    v_cache: list
    mask: Any  # [1, 1, 1, T] float32 zeros
    out: Any  # [B, Hq, 1, D] float16


def decode_case(bits: int, b: int, t: int) -> DecodeCase:
    import torch

    codec = Codec(D, (D,), (bits,))
    cb = torch.zeros((1, 256), device="cuda")
    cb[0, : 2**bits] = torch.linspace(-0.2, 0.2, 2**bits, device="cuda")
    comp = b * HKV * t * 2 * codec.row_bytes
    copies = int(max(1, min(4, L2_FLUSH_BYTES // max(comp, 1) + 1)))
    q = [torch.randn((b, HQ, 1, D), dtype=torch.float16, device="cuda") for _ in range(copies)]
    kc = [random_cache(torch, codec, b, t) for _ in range(copies)]
    vc = [random_cache(torch, codec, b, t) for _ in range(copies)]
    mask = torch.zeros((1, 1, 1, t), dtype=torch.float32, device="cuda")
    return DecodeCase(codec, cb, copies, q, kc, vc, mask, torch.empty_like(q[0]))
