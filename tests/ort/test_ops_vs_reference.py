"""The ORT CPU ops against the NumPy reference codec (tqexport.codec.reference_ops).

TQQuantize: the present cache and window must be bit-identical to the reference for every bit width, both
rotations, QJL on/off, fractional (outlier) splits, float32/float16 inputs, zero vectors, multi-step sequences
with sinks and a recent window, and buffer mode. TQAttention: within a relative tolerance of the float64
reference over the decoded cache (section 6 of docs/format.md) for decode and prefill chunks, GQA groups
1/2/4/8, left-padded batches, additive and bool masks, softcap, both cache modes, sinks and a recent window.
Unused buffer rows and window slots are poisoned (random bytes / NaN) to prove the op never reads them.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import (
    BUFFER,
    attention_inputs,
    buffer_attention_case,
    causal_mask,
    concat_caches,
    empty_cache,
    make_codec,
    quantize_inputs,
    small_attention_case,
    special_vectors,
    window_rows,
)
from ort_ops import run_attention, run_quantize

from tqexport.codec import reference_ops
from tqexport.codec.reference_ops import decoded_attention_reference

# Relative tolerance of attention outputs, as max|ort - ref| / max|ref|:
# float32: the op accumulates in float32 while the reference is float64 (observed ~1e-6);
# float16: both outputs
# are rounded to float16 (half an ulp is 2^-11 ~ 4.9e-4 of the value) and the inputs are float16 too.
ATTENTION_RTOL = {np.float32: 1e-4, np.float16: 2e-3}
DTYPES = [np.float32, np.float16]


def _assert_same_bytes(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs reference {ref.shape}"
    diff = np.argwhere(ours != ref)
    assert diff.size == 0, f"{what}: {len(diff)} bytes differ, first at {diff[0].tolist()}"


def _assert_close(ours: np.ndarray, ref: np.ndarray, dtype, what: str = "attention") -> None:
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    assert np.all(np.isfinite(ours)), f"{what}: non-finite outputs"
    ours64, ref64 = ours.astype(np.float64), ref.astype(np.float64)
    scale = max(np.max(np.abs(ref64)), 1e-30)
    err = np.max(np.abs(ours64 - ref64)) / scale
    assert err <= ATTENTION_RTOL[dtype], f"{what}: relative error {err:.3g} > {ATTENTION_RTOL[dtype]}"


# ------------------------------------------------------------------------------------------------ TQQuantize


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize("qjl", [False, True], ids=["mse", "qjl"])
@pytest.mark.parametrize("rotation", ["hadamard", "dense"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_quantize_codes_bit_identical(bits: int, rotation: str, qjl: bool, dtype) -> None:
    if qjl and bits == 1:
        pytest.skip("qjl needs bits >= 2 (one MSE bit + the QJL bit)")
    rng = np.random.default_rng(bits * 10 + qjl)
    codec = make_codec(
        32, bits=(bits,), qjl=qjl, rotation=rotation, kv_heads=2, per_head_rotation=bits % 2 == 0
    )
    x = special_vectors(rng, (2, 2, 5, 32), dtype)
    inputs, attrs = quantize_inputs(x, codec, empty_cache(2, 2, codec))
    ours, _ = run_quantize(inputs, attrs)
    ref, _ = reference_ops.tq_quantize(**inputs, **attrs)
    _assert_same_bytes(ours, ref, f"bits={bits} {rotation} qjl={qjl}")


SPLITS = [
    ((16, 16), (3, 2), False, False),
    ((32, 32), (4, 3), False, True),
    ((16, 32, 16), (2, 3, 4), False, False),
    ((16, 16, 16, 16), (1, 2, 5, 8), False, True),
    ((32, 32), (3, 2), True, False),
    ((48, 16), (4, 3), True, True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize(("part_sizes", "bits", "qjl", "norm_correction"), SPLITS)
def test_quantize_fractional_splits_bit_identical(part_sizes, bits, qjl, norm_correction, dtype) -> None:
    rng = np.random.default_rng(len(part_sizes))
    d = sum(part_sizes)
    codec = make_codec(
        d,
        bits=bits,
        part_sizes=part_sizes,
        qjl=qjl,
        rotation="dense",
        norm_correction=norm_correction,
        kv_heads=3,
        per_head_rotation=True,
    )
    x = special_vectors(rng, (1, 3, 6, d), dtype)
    inputs, attrs = quantize_inputs(x, codec, empty_cache(1, 3, codec))
    ours, _ = run_quantize(inputs, attrs)
    ref, _ = reference_ops.tq_quantize(**inputs, **attrs)
    _assert_same_bytes(ours, ref, f"split {part_sizes} bits {bits}")


WINDOWS = [(0, 0), (2, 0), (0, 3), (2, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize(("sink_tokens", "recent_window"), WINDOWS)
def test_quantize_concat_steps_with_window(sink_tokens: int, recent_window: int, dtype) -> None:
    """Prefill, decode steps and a chunk, each step's outputs fed back: caches and windows stay identical."""
    rng = np.random.default_rng(7)
    codec = make_codec(32, bits=(3,), qjl=True, kv_heads=2)
    b, h, d = 2, 2, 32
    w = sink_tokens + recent_window
    cache = empty_cache(b, h, codec)
    window = np.zeros((b, h, 0, d), dtype) if w else None
    total = 0
    for step, s in enumerate([2, 1, 1, 4, 1, 3]):
        x = special_vectors(rng, (b, h, s, d), dtype)
        cache_attrs = {"sink_tokens": sink_tokens, "recent_window": recent_window}
        inputs, attrs = quantize_inputs(x, codec, cache, window, **cache_attrs)
        ours_cache, ours_window = run_quantize(inputs, attrs)
        ref_cache, ref_window = reference_ops.tq_quantize(**inputs, **attrs)
        total += s
        assert ours_cache.shape[2] == total - window_rows(total, sink_tokens, recent_window)
        _assert_same_bytes(ours_cache, ref_cache, f"step {step} cache")
        if w:
            assert ours_window.shape == (b, h, window_rows(total, sink_tokens, recent_window), d)
            _assert_same_bytes(ours_window, ref_window, f"step {step} window")
        cache, window = ours_cache, ours_window


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize(("sink_tokens", "recent_window"), WINDOWS)
def test_quantize_buffer_mode(sink_tokens: int, recent_window: int, dtype) -> None:
    """Per-sequence lengths in a fixed-capacity cache; rows and slots not written keep their bytes."""
    rng = np.random.default_rng(11)
    codec = make_codec(32, bits=(4,), kv_heads=2)
    b, h, d, capacity = 2, 2, 32, 12
    w = sink_tokens + recent_window
    cache = rng.integers(0, 256, (b, h, capacity, codec.config.row_bytes), dtype=np.uint8)
    window = rng.standard_normal((b, h, w, d)).astype(dtype) if w else None
    lengths = np.array([0, 4], np.int64)
    for step, s in enumerate([3, 1, 2, 1]):
        x = special_vectors(rng, (b, h, s, d), dtype)
        inputs, attrs = quantize_inputs(
            x,
            codec,
            cache,
            window,
            lengths,
            cache_mode=BUFFER,
            sink_tokens=sink_tokens,
            recent_window=recent_window,
        )
        ours_cache, ours_window = run_quantize(inputs, attrs)
        ref_cache, ref_window = reference_ops.tq_quantize(**inputs, **attrs)
        _assert_same_bytes(ours_cache, ref_cache, f"step {step} cache")
        if w:
            _assert_same_bytes(ours_window, ref_window, f"step {step} window")
        cache, window, lengths = ours_cache, ours_window, lengths + s


# ------------------------------------------------------------------------------------------------ TQAttention


def _attention_check(inputs: dict, attrs: dict, dtype, what: str = "attention") -> np.ndarray:
    ours = run_attention(inputs, attrs)
    ref = reference_ops.tq_attention(**{k: v for k, v in inputs.items()}, **attrs)
    _assert_close(ours, ref, dtype, what)
    return ours


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize("group", [1, 2, 4, 8])
@pytest.mark.parametrize("new_tokens", [1, 4], ids=["decode", "prefill_chunk"])
def test_attention_gqa_decode_and_prefill(new_tokens: int, group: int, dtype) -> None:
    inputs, attrs = small_attention_case(
        dtype, batch=2, kv_heads=2, group=group, new_tokens=new_tokens, total=13, seed=group
    )
    _attention_check(inputs, attrs, dtype)


def test_attention_matches_plain_attention_over_decoded_cache() -> None:
    """Independent oracle: dequantize K/V to the original domain, then float64 softmax attention."""
    from tqexport.codec import Codec

    rng = np.random.default_rng(3)
    b, hkv, g, t, d = 2, 2, 2, 10, 32
    k_codec = make_codec(d, bits=(4,), kv_heads=hkv)
    v_codec = make_codec(d, bits=(3,), kv_heads=hkv, seed=5)
    keys = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    values = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    k_cache, _ = concat_caches(keys, k_codec)
    v_cache, _ = concat_caches(values, v_codec)
    q = rng.standard_normal((b, hkv * g, 3, d)).astype(np.float32)
    mask = causal_mask(b, 3, t, pad=[0, 2])
    inputs, attrs = attention_inputs(q, k_codec, v_codec, k_cache, v_cache, mask)
    ours = run_attention(inputs, attrs)
    k_hat = Codec(k_codec.config, k_codec.rotation, k_codec.codebook, None).dequantize(k_cache)
    v_hat = Codec(v_codec.config, v_codec.rotation, v_codec.codebook, None).dequantize(v_cache)
    ref = decoded_attention_reference(q, k_hat, v_hat, mask, attrs["scale"])
    _assert_close(ours, ref, np.float32, "attention vs decoded-cache float64 attention")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize("mask_kind", ["additive", "bool"])
def test_attention_left_padded_batch(mask_kind: str, dtype) -> None:
    rng = np.random.default_rng(5)
    b, hkv, g, t, s, d = 3, 2, 2, 11, 2, 32
    k_codec = make_codec(d, bits=(4,), kv_heads=hkv)
    v_codec = make_codec(d, bits=(4,), kv_heads=hkv, seed=9)
    keys = rng.standard_normal((b, hkv, t, d)).astype(dtype)
    values = rng.standard_normal((b, hkv, t, d)).astype(dtype)
    keys[1, :, :4] = np.nan  # padding positions hold garbage: the mask must exclude them exactly
    values[1, :, :4] = np.nan
    k_cache, _ = concat_caches(np.nan_to_num(keys), k_codec)
    v_cache, _ = concat_caches(np.nan_to_num(values), v_codec)
    q = rng.standard_normal((b, hkv * g, s, d)).astype(dtype)
    mask = causal_mask(b, s, t, pad=[0, 4, 9], kind=mask_kind, dtype=dtype)
    inputs, attrs = attention_inputs(q, k_codec, v_codec, k_cache, v_cache, mask)
    _attention_check(inputs, attrs, dtype, f"left-padded {mask_kind}")


@pytest.mark.parametrize("mask_kind", ["additive", "bool"])
def test_attention_fully_masked_row_outputs_zeros(mask_kind: str) -> None:
    inputs, attrs = small_attention_case(np.float32, batch=2, new_tokens=2, total=8)
    allowed = np.ones((2, 1, 2, 8), bool)
    allowed[1, 0, 1, :] = False
    inputs["mask"] = allowed if mask_kind == "bool" else np.where(allowed, 0.0, -np.inf).astype(np.float32)
    ours = _attention_check(inputs, attrs, np.float32)
    assert np.all(ours[1, :, 1] == 0.0)


def test_attention_per_head_mask_broadcast_over_batch() -> None:
    inputs, attrs = small_attention_case(np.float32, batch=2, kv_heads=2, group=2, new_tokens=2, total=9)
    rng = np.random.default_rng(2)
    inputs["mask"] = rng.normal(0.0, 2.0, (1, 4, 2, 9)).astype(np.float32)  # Bm=1, Hm=Hq, additive bias
    _attention_check(inputs, attrs, np.float32, "per-head mask")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
def test_attention_softcap(dtype) -> None:
    inputs, attrs = small_attention_case(dtype, new_tokens=3, total=10, seed=4)
    inputs["q"] = (inputs["q"].astype(np.float32) * 4.0).astype(dtype)
    attrs["softcap"] = 1.5
    with_cap = _attention_check(inputs, attrs, dtype, "softcap")
    attrs["softcap"] = 0.0
    without = run_attention(inputs, attrs)
    assert np.max(np.abs(with_cap.astype(np.float64) - without.astype(np.float64))) > 1e-2, (
        "softcap had no effect"
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
def test_attention_qjl_keys(dtype) -> None:
    inputs, attrs = small_attention_case(dtype, new_tokens=2, total=12, k_qjl=True, seed=8)
    _attention_check(inputs, attrs, dtype, "qjl keys")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize(("sink_tokens", "recent_window"), [(2, 0), (0, 4), (2, 4), (3, 20)])
@pytest.mark.parametrize("new_tokens", [1, 3], ids=["decode", "prefill_chunk"])
def test_attention_concat_sink_and_window(
    new_tokens: int, sink_tokens: int, recent_window: int, dtype
) -> None:
    inputs, attrs = small_attention_case(
        dtype,
        new_tokens=new_tokens,
        total=14,
        sink_tokens=sink_tokens,
        recent_window=recent_window,
        k_qjl=True,
        seed=sink_tokens + recent_window,
    )
    assert inputs["k_window"].shape[2] == window_rows(14, sink_tokens, recent_window)
    _attention_check(inputs, attrs, dtype, f"concat Ns={sink_tokens} Rw={recent_window}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize(("sink_tokens", "recent_window"), [(0, 0), (2, 0), (0, 3), (2, 3)])
@pytest.mark.parametrize("new_tokens", [1, 2], ids=["decode", "prefill_chunk"])
def test_attention_buffer_mode(new_tokens: int, sink_tokens: int, recent_window: int, dtype) -> None:
    inputs, attrs = buffer_attention_case(
        dtype, sink_tokens, recent_window, new_tokens, lengths=[3, 9, 0], capacity=14, seed=new_tokens
    )
    _attention_check(inputs, attrs, dtype, f"buffer Ns={sink_tokens} Rw={recent_window}")


def test_quantize_then_attention_round_trip() -> None:
    """Caches written by the ORT TQQuantize feed the ORT TQAttention; compare with the reference pipeline."""
    rng = np.random.default_rng(21)
    b, hkv, g, d, t = 1, 2, 4, 64, 9
    k_codec = make_codec(d, bits=(3, 2), part_sizes=(32, 32), qjl=True, kv_heads=hkv, per_head_rotation=True)
    v_codec = make_codec(d, bits=(4, 2), part_sizes=(16, 48), kv_heads=hkv, per_head_rotation=True, seed=50)
    keys = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    values = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    caches = {}
    for name, codec, kv in (("k", k_codec, keys), ("v", v_codec, values)):
        inputs, attrs = quantize_inputs(
            kv,
            codec,
            empty_cache(b, hkv, codec),
            np.zeros((b, hkv, 0, d), np.float32),
            sink_tokens=1,
            recent_window=2,
        )
        caches[name] = run_quantize(inputs, attrs)
    q = rng.standard_normal((b, hkv * g, 1, d)).astype(np.float32)
    mask = causal_mask(b, 1, t)
    inputs, attrs = attention_inputs(
        q,
        k_codec,
        v_codec,
        caches["k"][0],
        caches["v"][0],
        mask,
        caches["k"][1],
        caches["v"][1],
        sink_tokens=1,
        recent_window=2,
    )
    _attention_check(inputs, attrs, np.float32, "round trip")
