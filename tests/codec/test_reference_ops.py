"""Reference ops: token placement (sinks, compressed middle, recent ring), cache modes, attention accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from tqexport.codec import Codec, CodecConfig
from tqexport.codec import reference_ops as ops

B, HKV, HQ, D = 2, 2, 4, 32
CHUNKS = [5, 1, 1, 4, 1, 7, 1, 1]  # prefill chunk, decodes, chunks that cross the window boundaries


def _codecs(bits: int = 8, qjl: bool = False) -> tuple[Codec, Codec]:
    k = Codec.build(CodecConfig(head_dim=D, bits=(bits,), qjl=qjl, seed=1))
    v = Codec.build(CodecConfig(head_dim=D, bits=(bits,), seed=2))
    return k, v


def _quantize_attrs(codec: Codec, sinks: int, recent: int) -> dict[str, object]:
    return {**codec.onnx_attributes(), "sink_tokens": sinks, "recent_window": recent}


@pytest.mark.parametrize(("sinks", "recent"), [(0, 0), (2, 3), (0, 4), (3, 0), (1, 1)])
def test_every_token_lives_in_exactly_one_place_with_its_exact_value(sinks: int, recent: int) -> None:
    rng = np.random.default_rng(sinks * 10 + recent)
    codec, _ = _codecs()
    w = sinks + recent
    cache = np.zeros((B, HKV, 0, codec.row_bytes), np.uint8)
    window = np.zeros((B, HKV, 0, D), np.float32) if w else None
    history: list[np.ndarray] = []
    total = 0
    for s in CHUNKS:
        x = rng.standard_normal((B, HKV, s, D)).astype(np.float32)
        history.append(x)
        cache, window = ops.tq_quantize(
            x, cache, codec.rotation, codec.codebook, None, window, **_quantize_attrs(codec, sinks, recent)
        )
        total += s
        everything = np.concatenate(history, axis=2)
        in_window = [t for t in range(total) if ops.token_place(t, total, sinks, recent)[0] == "window"]
        compressed = [t for t in range(total) if t not in in_window]
        assert cache.shape[2] == len(compressed) == total - min(total, w)
        assert (window.shape[2] if window is not None else 0) == min(total, w) == len(in_window)
        slots = [ops.token_place(t, total, sinks, recent)[1] for t in in_window]
        assert sorted(slots) == list(range(len(in_window)))  # one slot each, no slot shared
        if window is not None:
            assert np.array_equal(window[:, :, slots], everything[:, :, in_window])
        rows = [ops.token_place(t, total, sinks, recent)[1] for t in compressed]
        assert rows == list(range(len(compressed)))
        if compressed:
            assert np.array_equal(cache, codec.quantize(everything[:, :, compressed]))


def _causal_left_padded_mask(s: int, total: int, pad: int) -> np.ndarray:
    mask = np.triu(np.full((s, total), -np.inf, np.float32), k=total - s + 1)
    mask = np.broadcast_to(mask, (B, 1, s, total)).copy()
    mask[1, :, :, :pad] = -np.inf
    return mask


@pytest.mark.parametrize(("sinks", "recent"), [(0, 0), (2, 3)])
@pytest.mark.parametrize(("softcap", "qjl"), [(0.0, False), (5.0, False), (0.0, True)])
def test_attention_concat_equals_buffer_and_tracks_float_attention(
    sinks: int, recent: int, softcap: float, qjl: bool
) -> None:
    rng = np.random.default_rng(7)
    kc, vc = _codecs(bits=8, qjl=qjl)
    w = sinks + recent
    cap = 64
    k_cat = np.zeros((B, HKV, 0, kc.row_bytes), np.uint8)
    v_cat = np.zeros((B, HKV, 0, vc.row_bytes), np.uint8)
    k_buf = np.zeros((B, HKV, cap, kc.row_bytes), np.uint8)
    v_buf = np.zeros((B, HKV, cap, vc.row_bytes), np.uint8)
    kw = vw = np.zeros((B, HKV, 0, D), np.float32) if w else None
    kbw = vbw = np.zeros((B, HKV, w, D), np.float32) if w else None
    keys, values, total = [], [], 0
    attn = {
        **kc.onnx_attributes("k_"),
        **vc.onnx_attributes("v_"),
        "scale": D**-0.5,
        "softcap": softcap,
        "sink_tokens": sinks,
        "recent_window": recent,
    }
    qa = {"sink_tokens": sinks, "recent_window": recent}
    for s in CHUNKS:
        k = rng.standard_normal((B, HKV, s, D)).astype(np.float32)
        v = rng.standard_normal((B, HKV, s, D)).astype(np.float32)
        q = rng.standard_normal((B, HQ, s, D)).astype(np.float32)
        keys.append(k)
        values.append(v)
        lengths = np.full(B, total, np.int64)
        k_cat, kw = ops.tq_quantize(
            k, k_cat, kc.rotation, kc.codebook, kc.qjl_matrix, kw, **kc.onnx_attributes(), **qa
        )
        v_cat, vw = ops.tq_quantize(
            v, v_cat, vc.rotation, vc.codebook, None, vw, **vc.onnx_attributes(), **qa
        )
        k_buf, kbw = ops.tq_quantize(
            k,
            k_buf,
            kc.rotation,
            kc.codebook,
            kc.qjl_matrix,
            kbw,
            lengths,
            cache_mode=1,
            **kc.onnx_attributes(),
            **qa,
        )
        v_buf, vbw = ops.tq_quantize(
            v, v_buf, vc.rotation, vc.codebook, None, vbw, lengths, cache_mode=1, **vc.onnx_attributes(), **qa
        )
        total += s
        mask = _causal_left_padded_mask(s, total, pad=2)
        args = (kc.rotation, kc.codebook, vc.rotation, vc.codebook, kc.qjl_matrix)
        out = ops.tq_attention(q, k_cat, v_cat, mask, *args, kw, vw, **attn)
        out_buf = ops.tq_attention(q, k_buf, v_buf, mask, *args, kbw, vbw, lengths, cache_mode=1, **attn)
        assert np.array_equal(out, out_buf)
        ref = ops.decoded_attention_reference(
            q, np.concatenate(keys, 2), np.concatenate(values, 2), mask, D**-0.5, softcap
        )
        # 8-bit codes: per-coordinate relative error ~ sqrt(D_mse(8)) ~ 0.7% at D=32; outputs are averages
        assert np.max(np.abs(out - ref)) < 0.03 * np.max(np.abs(ref))


def test_buffer_overflow_is_an_error_not_a_write() -> None:
    kc, _ = _codecs()
    buf = np.zeros((1, HKV, 4, kc.row_bytes), np.uint8)
    x = np.ones((1, HKV, 3, D), np.float32)
    with pytest.raises(ops.ReferenceOpError, match="buffer overflow"):
        ops.tq_quantize(
            x, buf, kc.rotation, kc.codebook, None, None, np.array([2]), cache_mode=1, **kc.onnx_attributes()
        )


def test_fully_masked_row_outputs_zeros() -> None:
    kc, vc = _codecs()
    k = np.ones((1, HKV, 3, D), np.float32)
    kcache, _ = ops.tq_quantize(
        k, np.zeros((1, HKV, 0, kc.row_bytes), np.uint8), kc.rotation, kc.codebook, **kc.onnx_attributes()
    )
    vcache, _ = ops.tq_quantize(
        k, np.zeros((1, HKV, 0, vc.row_bytes), np.uint8), vc.rotation, vc.codebook, **vc.onnx_attributes()
    )
    mask = np.zeros((1, 1, 1, 3), bool)
    out = ops.tq_attention(
        np.ones((1, HQ, 1, D), np.float32),
        kcache,
        vcache,
        mask,
        kc.rotation,
        kc.codebook,
        vc.rotation,
        vc.codebook,
        **kc.onnx_attributes("k_"),
        **vc.onnx_attributes("v_"),
        scale=1.0,
    )
    assert np.array_equal(out, np.zeros_like(out))
