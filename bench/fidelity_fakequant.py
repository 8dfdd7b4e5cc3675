"""Fast fidelity yardstick: SmolLM2 in torch with its new K/V fake-quantized by the TurboQuant codec.

Not the product path (that is `tqexport convert` + `tqexport compare` on ONNX); this is a quick way to rank cache
configurations before converting. One full-sequence forward of P + N tokens emulates P-token prefill then N cached
decode steps: query i sees the Ns sink tokens and its last Rw tokens exactly and everything else through the codec.
Metrics on the last N positions against the float model: perplexity ratio, mean KL, top-1 agreement, and the true
bits per element at context P + N (norms, sinks and window counted).

Run (after `bash scripts/setup_export.sh` and the SmolLM2 install):
  .venv-export/bin/python bench/fidelity_fakequant.py --text FILE [--prefill 2048 --steps 256]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqexport.codec import Codec, CodecConfig  # noqa: E402
from tqexport.codec.codebook import boundaries  # noqa: E402


@dataclass
class CacheSetup:
    name: str
    k_bits: int | dict[int, int] = 4
    v_bits: int | dict[int, int] = 4
    k_split: tuple[int, int] | None = None  # (outlier channels, outlier bits) for K
    v_split: tuple[int, int] | None = None
    qjl: bool = False
    sinks: int = 0
    window: int = 0
    norm_correction: bool = False
    rotation: str = "hadamard"
    int4_baseline: bool = False
    extra: dict = field(default_factory=dict)


class TorchCodec:
    """Quantize-dequantize [B, Hkv, T, D] tensors like the reference codec (float64), in torch."""

    def __init__(self, codec: Codec, num_heads: int) -> None:
        self.cfg = codec.config
        rot = torch.from_numpy(codec.rotation.astype(np.float64))
        self.rot = rot.expand(num_heads, -1, -1) if rot.shape[0] == 1 else rot  # [Hkv, D, D]
        mse = self.cfg.mse_bits
        self.cb = [torch.from_numpy(codec.codebook[p, : 2**m].astype(np.float64)) for p, m in enumerate(mse)]
        self.bd = [torch.from_numpy(boundaries(codec.codebook[p], m)) for p, m in enumerate(mse)]
        self.sq = None if codec.qjl_matrix is None else torch.from_numpy(codec.qjl_matrix.astype(np.float64))

    def roundtrip(self, x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (xhat [B, Hkv, T, D], QJL score correction [B, Hq, S, T] or None) for queries q [B, Hq, S, D]."""
        y = torch.einsum("hed,bhtd->bhte", self.rot, x.double())
        yhat = torch.zeros_like(y)
        parts = list(zip(self.cfg.part_offsets, self.cfg.part_sizes, strict=True))
        for p, (o, d) in enumerate(parts):
            yp = y[..., o : o + d]
            n = yp.norm(dim=-1, keepdim=True)
            u = torch.where(n > 0, yp / n.clamp_min(1e-300), torch.zeros_like(yp))
            c = self.cb[p][torch.bucketize(u, self.bd[p], right=False)]
            gamma = n / c.norm(dim=-1, keepdim=True) if self.cfg.norm_correction else n
            yhat[..., o : o + d] = gamma.clamp_max(65504).half().double() * c
        xhat = torch.einsum("hed,bhte->bhtd", self.rot, yhat)
        if self.sq is None:
            return xhat.to(x.dtype), None
        group = q.shape[1] // x.shape[1]
        r = y - yhat
        signs = torch.where(r @ self.sq.T > 0, 1.0, -1.0).double()
        rot_q = self.rot.repeat_interleave(group, dim=0)
        sq_q = torch.einsum("hed,bhsd->bhse", rot_q, q.double()) @ self.sq.T
        corr = torch.zeros(q.shape[0], q.shape[1], q.shape[2], x.shape[2], dtype=torch.float64)
        for o, d in parts:
            rho = r[..., o : o + d].norm(dim=-1).half().double().repeat_interleave(group, dim=1)
            s_rep = signs[..., o : o + d].repeat_interleave(group, dim=1)
            corr += rho[:, :, None, :] * math.sqrt(math.pi / 2) / d * (sq_q[..., o : o + d] @ s_rep.transpose(-1, -2))
        return xhat.to(x.dtype), corr.float()


def int4_rotated_roundtrip(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Baseline: Hadamard rotation + per-vector asymmetric int4 (fp16 scale and zero point)."""
    y = torch.matmul(x.double(), rot.T)
    lo, hi = y.min(-1, keepdim=True).values, y.max(-1, keepdim=True).values
    scale = ((hi - lo) / 15).half().double().clamp_min(1e-12)
    zero = lo.half().double()
    codes = torch.clamp(torch.round((y - zero) / scale), 0, 15)
    return torch.matmul(codes * scale + zero, rot).to(x.dtype)


def bits_for(setup: CacheSetup, layer: int, which: str) -> int:
    b = setup.k_bits if which == "k" else setup.v_bits
    return b[layer] if isinstance(b, dict) else b


def codec_config(setup: CacheSetup, layer: int, which: str, head_dim: int) -> CodecConfig:
    bits = bits_for(setup, layer, which)
    split = setup.k_split if which == "k" else setup.v_split
    seed = 1000 * layer + (0 if which == "k" else 1)
    qjl = setup.qjl and which == "k"
    if split is None:
        return CodecConfig(head_dim=head_dim, bits=(bits,), qjl=qjl, seed=seed,
                           norm_correction=setup.norm_correction, rotation=setup.rotation)
    n_out, out_bits = split
    return CodecConfig(head_dim=head_dim, part_sizes=(n_out, head_dim - n_out), bits=(out_bits, bits), qjl=qjl,
                       seed=seed, norm_correction=setup.norm_correction, rotation=setup.rotation)


def true_bits_per_element(setup: CacheSetup, num_layers: int, head_dim: int, context: int) -> float:
    """Average stored bits per K/V element at `context` tokens: rows, norms, sinks and window included."""
    if setup.int4_baseline:
        return 4 + 32 / head_dim
    w = min(context, setup.sinks + setup.window)
    total = 0.0
    for layer in range(num_layers):
        for which in ("k", "v"):
            row = codec_config(setup, layer, which, head_dim).row_bytes * 8
            total += ((context - w) * row + w * 16 * head_dim) / (context * head_dim)
    return total / (2 * num_layers)


class FakeQuantAttention:
    """A transformers attention function that fake-quantizes K/V per layer; `calibrate` records K/V RMS."""

    def __init__(self) -> None:
        self.setup: CacheSetup | None = None
        self.codecs: dict[tuple[int, str], TorchCodec] = {}
        self.rotation: torch.Tensor | None = None
        self.rms: dict[tuple[int, str], torch.Tensor] = {}
        self.calibrating = False

    def __call__(self, module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        layer = module.layer_idx
        b, hq, s, d = query.shape
        group = hq // key.shape[1]
        if self.calibrating:
            for which, t in (("k", key), ("v", value)):
                self.rms[(layer, which)] = t.double().pow(2).mean(dim=(0, 2)).sqrt()  # [Hkv, D]
        causal = torch.ones(s, key.shape[2], dtype=torch.bool).tril(key.shape[2] - s)
        setup = self.setup
        exact = torch.ones_like(causal)
        k_use, v_use, corr = key, value, None
        if setup is not None and not self.calibrating:
            i = torch.arange(s)[:, None] + key.shape[2] - s
            t = torch.arange(key.shape[2])[None, :]
            exact = (t < setup.sinks) | (t > i - setup.window)
            if setup.int4_baseline:
                k_use = int4_rotated_roundtrip(key, self.rotation)
                v_use = int4_rotated_roundtrip(value, self.rotation)
            else:
                k_use, corr = self.codecs[(layer, "k")].roundtrip(key, query)
                v_use, _ = self.codecs[(layer, "v")].roundtrip(value, query)
        kx = key.repeat_interleave(group, 1)
        kq = k_use.repeat_interleave(group, 1)
        scores_exact = query @ kx.transpose(-1, -2) * scaling
        scores_q = query @ kq.transpose(-1, -2)
        if corr is not None:
            scores_q = scores_q + corr
        scores = torch.where(exact, scores_exact, scores_q * scaling)
        scores = scores.masked_fill(~causal, float("-inf"))
        p = torch.softmax(scores.float(), dim=-1).to(query.dtype)
        out = (p * exact) @ value.repeat_interleave(group, 1) + (p * ~exact) @ v_use.repeat_interleave(group, 1)
        return out.transpose(1, 2).contiguous(), None


def choose_outliers(rms: torch.Tensor, n_out: int) -> list[list[list[int]]]:
    """Per kv head: [outlier channels (largest calibration RMS), the rest]."""
    out = []
    for head in rms:
        top = torch.topk(head, n_out).indices.sort().values.tolist()
        rest = [c for c in range(head.numel()) if c not in set(top)]
        out.append([top, rest])
    return out


def build_codecs(hook: FakeQuantAttention, setup: CacheSetup, num_layers: int, hkv: int, d: int) -> None:
    hook.codecs.clear()
    if setup.int4_baseline:
        from tqexport.codec.rotation import rotation_block

        hook.rotation = torch.from_numpy(rotation_block(d, "hadamard", 0, 0))
        return
    for layer in range(num_layers):
        for which in ("k", "v"):
            cfg = codec_config(setup, layer, which, d)
            split = setup.k_split if which == "k" else setup.v_split
            channels = None
            if split is not None:
                channels = choose_outliers(hook.rms[(layer, which)], split[0])
            codec = Codec.build(cfg, num_heads=hkv, channels=channels)
            hook.codecs[(layer, which)] = TorchCodec(codec, hkv)


def metrics(ref_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    ref_lp = torch.log_softmax(ref_logits.double(), -1)
    lp = torch.log_softmax(logits.double(), -1)
    nll_ref = -ref_lp.gather(-1, targets[:, None]).mean()
    nll = -lp.gather(-1, targets[:, None]).mean()
    kl = (ref_lp.exp() * (ref_lp - lp)).sum(-1)
    top1 = (ref_lp.argmax(-1) == lp.argmax(-1)).double().mean()
    return {"ppl_ref": float(nll_ref.exp()), "ppl": float(nll.exp()), "ppl_ratio": float((nll - nll_ref).exp()),
            "kl": float(kl.mean()), "top1": float(top1)}


DEFAULT_SETUPS = [
    CacheSetup("tq K4V4", 4, 4),
    CacheSetup("tq K3V3", 3, 3),
    CacheSetup("int4 rotated (baseline)", int4_baseline=True),
    CacheSetup("tq K4V4 sinks4", 4, 4, sinks=4),
    CacheSetup("tq K4V4 win64", 4, 4, window=64),
    CacheSetup("tq K4V4 sinks4 win64", 4, 4, sinks=4, window=64),
    CacheSetup("tq K4(qjl)V4", 4, 4, qjl=True),
    CacheSetup("tq K4V4 normcorr", 4, 4, norm_correction=True),
    CacheSetup("tq K5V3 sinks4 win32", 5, 3, sinks=4, window=32),
    CacheSetup("tq K4V3 sinks4 win32", 4, 3, sinks=4, window=32),
    CacheSetup("tq K3V3 sinks4 win32", 3, 3, sinks=4, window=32),
    CacheSetup("tq K3+16@6 V3 sinks4 win32", 3, 3, k_split=(16, 6), sinks=4, window=32),
    CacheSetup("tq K3+16@6 V2+16@4 sinks4 win32", 3, 2, k_split=(16, 6), v_split=(16, 4), sinks=4, window=32),
]


def main(argv: list[str] | None = None) -> int:
    from transformers import AttentionInterface

    from graphs.smollm2.gguf_source import find_gguf
    from graphs.smollm2.hf_model import build_config, build_tokenizer, load_float_model, read_gguf_metadata

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, required=True)
    parser.add_argument("--prefill", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--calibration-offset", type=int, default=20000, help="characters into the text")
    parser.add_argument("--only", default="", help="comma-separated setup names to run")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    gguf = find_gguf()
    meta = read_gguf_metadata(gguf)
    config = build_config(meta)
    tok = build_tokenizer(meta)
    hook = FakeQuantAttention()
    AttentionInterface.register("tq_fake", hook)
    model = load_float_model(gguf, config)
    model.config._attn_implementation = "tq_fake"
    text = args.text.read_text()
    n = args.prefill + args.steps + 1
    ids = torch.tensor([tok(text)["input_ids"][:n]])
    calib = torch.tensor([tok(text[args.calibration_offset :])["input_ids"][:1024]])
    hkv, d, layers = config.num_key_value_heads, config.head_dim, config.num_hidden_layers
    hook.calibrating = True
    model(calib)
    hook.calibrating = False
    hook.setup = None
    ref = model(ids[:, :-1]).logits[0, args.prefill - 1 :]
    targets = ids[0, args.prefill :]
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    print(f"{'setup':<36} {'bits':>5} {'ppl_ratio':>9} {'KL':>7} {'top1':>6}")
    for setup in DEFAULT_SETUPS:
        if wanted and setup.name not in wanted:
            continue
        build_codecs(hook, setup, layers, hkv, d)
        hook.setup = setup
        logits = model(ids[:, :-1]).logits[0, args.prefill - 1 :]
        hook.setup = None
        m = metrics(ref, logits, targets)
        bits = true_bits_per_element(setup, layers, d, args.prefill + args.steps)
        print(f"{setup.name:<36} {bits:>5.2f} {m['ppl_ratio']:>9.4f} {m['kl']:>7.4f} {m['top1']:>6.3f}", flush=True)
    print(f"reference ppl over the {args.steps} decode positions: {float(metrics(ref, ref, targets)['ppl_ref']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
