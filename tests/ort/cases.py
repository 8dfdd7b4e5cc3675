"""Small, valid TQQuantize / TQAttention inputs built with the NumPy reference codec.

Letters as in docs/format.md: B batch, Hq / Hkv heads, S new tokens, T total tokens, D head dim,
Ns sink tokens,
Rw recent window, W = Ns + Rw. Every builder returns (inputs, attributes) dicts that both the reference ops
(tqexport.codec.reference_ops) and ort_ops.run_* accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tqexport.codec import CodecConfig, build_codebook, build_qjl_matrix, build_rotation, reference_ops

CONCAT, BUFFER = reference_ops.CONCAT, reference_ops.BUFFER


@dataclass(frozen=True)
class Codec:
    """One cache's codec parameters and constant tensors (rotation per kv head or shared)."""

    config: CodecConfig
    rotation: np.ndarray  # float32 [Hr, D, D]
    codebook: np.ndarray  # float32 [P, 256]
    qjl_matrix: np.ndarray | None  # float32 [D, D] when qjl

    def attributes(self, prefix: str = "", with_extras: bool = True) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            f"{prefix}bits": list(self.config.bits),
            f"{prefix}part_sizes": list(self.config.part_sizes),
        }
        if prefix != "v_":
            attrs[f"{prefix}qjl"] = int(self.config.qjl)
        if with_extras:
            attrs["norm_correction"] = int(self.config.norm_correction)
            attrs["rotation_kind"] = 1 if self.config.rotation == "hadamard" else 0
        return attrs


def make_codec(
    head_dim: int,
    bits=(4,),
    part_sizes=None,
    qjl: bool = False,
    rotation: str = "hadamard",
    norm_correction: bool = False,
    kv_heads: int = 1,
    per_head_rotation: bool = False,
    seed: int = 0,
) -> Codec:
    part_sizes = tuple(part_sizes) if part_sizes else (head_dim,)
    heads = kv_heads if per_head_rotation else 1
    configs = [
        CodecConfig(
            head_dim=head_dim,
            part_sizes=part_sizes,
            bits=tuple(bits),
            qjl=qjl,
            norm_correction=norm_correction,
            rotation=rotation,
            seed=seed + h,
        )
        for h in range(heads)
    ]
    rot = np.stack([build_rotation(c) for c in configs])
    return Codec(configs[0], rot, build_codebook(configs[0]), build_qjl_matrix(configs[0]) if qjl else None)


def empty_cache(batch: int, kv_heads: int, codec: Codec, rows: int = 0) -> np.ndarray:
    return np.zeros((batch, kv_heads, rows, codec.config.row_bytes), np.uint8)


def quantize_inputs(
    x: np.ndarray,
    codec: Codec,
    past_cache: np.ndarray,
    past_window: np.ndarray | None = None,
    past_lengths: np.ndarray | None = None,
    **cache_attrs: int,
) -> tuple[dict, dict]:
    inputs = {
        "x": x,
        "past_cache": past_cache,
        "rotation": codec.rotation,
        "codebook": codec.codebook,
        "qjl_matrix": codec.qjl_matrix,
        "past_window": past_window,
        "past_lengths": past_lengths,
    }
    return inputs, {**codec.attributes(), **cache_attrs}


def window_rows(total: int, sink_tokens: int, recent_window: int) -> int:
    return min(total, sink_tokens + recent_window)


def concat_caches(
    kv: np.ndarray, codec: Codec, sink_tokens: int = 0, recent_window: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Compressed cache and window of a concat-mode sequence holding all T tokens of kv [B, Hkv, T, D]."""
    b, h, _, d = kv.shape
    w = sink_tokens + recent_window
    past_window = np.zeros((b, h, 0, d), kv.dtype) if w else None
    inputs, attrs = quantize_inputs(
        kv, codec, empty_cache(b, h, codec), past_window, sink_tokens=sink_tokens, recent_window=recent_window
    )
    return reference_ops.tq_quantize(**inputs, **attrs)


def causal_mask(
    batch: int,
    new_tokens: int,
    total: int,
    pad: list[int] | None = None,
    kind: str = "additive",
    dtype=np.float32,
) -> np.ndarray:
    """[B, 1, S, T] mask for the last S of T tokens; pad[b] left-padding tokens of sequence b are masked."""
    pad = pad or [0] * batch
    t = np.arange(total)[None, :]
    s = (total - new_tokens + np.arange(new_tokens))[:, None]
    allowed = np.stack([(t <= s) & (t >= pad[b]) for b in range(batch)])[:, None]
    if kind == "bool":
        return allowed
    return np.where(allowed, 0.0, -np.inf).astype(dtype)


def attention_inputs(
    q: np.ndarray,
    k_codec: Codec,
    v_codec: Codec,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    mask: np.ndarray,
    k_window: np.ndarray | None = None,
    v_window: np.ndarray | None = None,
    past_lengths: np.ndarray | None = None,
    scale: float | None = None,
    softcap: float = 0.0,
    **cache_attrs: int,
) -> tuple[dict, dict]:
    inputs = {
        "q": q,
        "k_cache": k_cache,
        "v_cache": v_cache,
        "mask": mask,
        "k_rotation": k_codec.rotation,
        "k_codebook": k_codec.codebook,
        "v_rotation": v_codec.rotation,
        "v_codebook": v_codec.codebook,
        "k_qjl_matrix": k_codec.qjl_matrix,
        "k_window": k_window,
        "v_window": v_window,
        "past_lengths": past_lengths,
    }
    attrs = {
        **k_codec.attributes("k_", with_extras=False),
        **v_codec.attributes("v_", with_extras=False),
        "scale": float(scale if scale is not None else q.shape[-1] ** -0.5),
        "softcap": float(softcap),
        **cache_attrs,
    }
    return inputs, attrs


def small_attention_case(
    dtype=np.float32,
    batch: int = 2,
    kv_heads: int = 2,
    group: int = 2,
    new_tokens: int = 1,
    total: int = 12,
    head_dim: int = 32,
    sink_tokens: int = 0,
    recent_window: int = 0,
    k_qjl: bool = False,
    seed: int = 0,
) -> tuple[dict, dict]:
    """A valid concat-mode TQAttention case (caches from the reference quantizer)."""
    rng = np.random.default_rng(seed)
    k_codec = make_codec(head_dim, bits=(4,) if not k_qjl else (3,), qjl=k_qjl, kv_heads=kv_heads)
    v_codec = make_codec(head_dim, bits=(3,), kv_heads=kv_heads, seed=100)
    keys = rng.standard_normal((batch, kv_heads, total, head_dim)).astype(dtype)
    values = rng.standard_normal((batch, kv_heads, total, head_dim)).astype(dtype)
    k_cache, k_window = concat_caches(keys, k_codec, sink_tokens, recent_window)
    v_cache, v_window = concat_caches(values, v_codec, sink_tokens, recent_window)
    q = rng.standard_normal((batch, kv_heads * group, new_tokens, head_dim)).astype(dtype)
    mask = causal_mask(batch, new_tokens, total)
    return attention_inputs(
        q,
        k_codec,
        v_codec,
        k_cache,
        v_cache,
        mask,
        k_window,
        v_window,
        sink_tokens=sink_tokens,
        recent_window=recent_window,
    )


def special_vectors(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Gaussian vectors with a few special rows: an all-zero vector, a tiny and a huge one."""
    x = rng.standard_normal(shape)
    x[0, 0, 0] = 0.0
    if shape[2] > 2:
        x[-1, -1, 1] *= 1e-3
        x[-1, 0, 2] *= 50.0
    return x.astype(dtype)


def buffer_attention_case(
    dtype,
    sink_tokens: int,
    recent_window: int,
    new_tokens: int,
    lengths: list[int],
    capacity: int,
    group: int = 2,
    seed: int = 0,
    head_dim: int = 32,
) -> tuple[dict, dict]:
    """Buffer-mode caches built per sequence from concat-mode ones; unused rows / slots are poisoned."""
    rng = np.random.default_rng(seed)
    b, hkv, d = len(lengths), 2, head_dim
    w = sink_tokens + recent_window
    k_codec = make_codec(d, bits=(3,), qjl=True, kv_heads=hkv)
    v_codec = make_codec(d, bits=(4,), kv_heads=hkv, seed=3)
    totals = [n + new_tokens for n in lengths]
    k_cache = rng.integers(0, 256, (b, hkv, capacity, k_codec.config.row_bytes), dtype=np.uint8)
    v_cache = rng.integers(0, 256, (b, hkv, capacity, v_codec.config.row_bytes), dtype=np.uint8)
    k_window = np.full((b, hkv, w, d), np.nan, dtype) if w else None
    v_window = np.full((b, hkv, w, d), np.nan, dtype) if w else None
    for i, total in enumerate(totals):
        keys = rng.standard_normal((1, hkv, total, d)).astype(dtype)
        values = rng.standard_normal((1, hkv, total, d)).astype(dtype)
        for cache, window, codec, kv in (
            (k_cache, k_window, k_codec, keys),
            (v_cache, v_window, v_codec, values),
        ):
            c, wnd = concat_caches(kv, codec, sink_tokens, recent_window)
            cache[i, :, : c.shape[2]] = c[0]
            if w:
                window[i, :, : wnd.shape[2]] = wnd[0]
    q = rng.standard_normal((b, hkv * group, new_tokens, d)).astype(dtype)
    t_mask = max(totals) + 2
    mask = np.zeros((b, 1, new_tokens, t_mask), np.float32)
    for i, n in enumerate(lengths):
        pos = n + np.arange(new_tokens)[:, None]
        mask[i, 0] = np.where(np.arange(t_mask)[None, :] <= pos, 0.0, -np.inf)
    return attention_inputs(
        q,
        k_codec,
        v_codec,
        k_cache,
        v_cache,
        mask,
        k_window,
        v_window,
        np.array(lengths, np.int64),
        cache_mode=BUFFER,
        sink_tokens=sink_tokens,
        recent_window=recent_window,
    )
