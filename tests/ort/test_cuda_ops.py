"""The ORT CUDA ops (a TQ_WITH_CUDA build) against the NumPy reference and the ORT CPU ops.

Every node must run on the CUDA provider (CPU fallback disabled). TQQuantize must be bit-identical to the
reference; TQAttention within CUDA_RTOL of the float64 reference over the decoded cache. Bad inputs fail with
the same messages as on the CPU (the checks are shared: plugins/ort/op_contract.cc).
"""

from __future__ import annotations

import dataclasses

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
)
from ort_ops import CUDA, run_attention, run_quantize

from tqexport.codec import reference_ops

pytestmark = pytest.mark.gpu

# Relative error bound (max abs error / max abs reference). The CUDA kernels run the score and value
# products on tensor cores in half precision (plugins/kernels), so float32 models also see float16 rounding
# of the operands.
CUDA_RTOL = {np.float32: 5e-3, np.float16: 5e-3}


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    ours64, ref64 = ours.astype(np.float64), ref.astype(np.float64)
    return float(np.max(np.abs(ours64 - ref64)) / max(np.max(np.abs(ref64)), 1e-30))


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("bits", "part_sizes", "qjl", "rotation"),
    [
        ((1,), (64,), False, "hadamard"),
        ((4,), (64,), False, "dense"),
        ((3,), (64,), True, "hadamard"),
        ((3, 2), (32, 32), True, "dense"),
        ((8,), (64,), False, "hadamard"),
        ((5, 2), (16, 48), False, "dense"),
    ],
)
def test_cuda_quantize_bit_identical(bits, part_sizes, qjl, rotation, dtype) -> None:
    rng = np.random.default_rng(sum(bits))
    codec = make_codec(
        64, bits=bits, part_sizes=part_sizes, qjl=qjl, rotation=rotation, kv_heads=2, per_head_rotation=True
    )
    x = special_vectors(rng, (2, 2, 7, 64), dtype)
    inputs, attrs = quantize_inputs(x, codec, empty_cache(2, 2, codec))
    ours, _ = run_quantize(inputs, attrs, provider=CUDA)
    ref, _ = reference_ops.tq_quantize(**inputs, **attrs)
    assert np.array_equal(ours, ref), f"{int(np.sum(ours != ref))} bytes differ"


@pytest.mark.parametrize(("cache_mode", "sink_tokens", "recent_window"), [(0, 2, 3), (1, 2, 3), (1, 0, 0)])
def test_cuda_quantize_steps(cache_mode: int, sink_tokens: int, recent_window: int) -> None:
    rng = np.random.default_rng(1)
    codec = make_codec(64, bits=(4,), kv_heads=2)
    w = sink_tokens + recent_window
    capacity = 16 if cache_mode == BUFFER else 0
    cache = empty_cache(2, 2, codec, capacity)
    window = np.zeros((2, 2, w if cache_mode == BUFFER else 0, 64), np.float32) if w else None
    lengths = np.array([0, 3], np.int64) if cache_mode == BUFFER else None
    for s in [3, 1, 1, 4]:
        x = special_vectors(rng, (2, 2, s, 64), np.float32)
        inputs, attrs = quantize_inputs(
            x,
            codec,
            cache,
            window,
            lengths,
            cache_mode=cache_mode,
            sink_tokens=sink_tokens,
            recent_window=recent_window,
        )
        ours_cache, ours_window = run_quantize(inputs, attrs, provider=CUDA)
        ref_cache, ref_window = reference_ops.tq_quantize(**inputs, **attrs)
        assert np.array_equal(ours_cache, ref_cache)
        if w:
            assert np.array_equal(ours_window, ref_window)
        cache, window = ours_cache, ours_window
        lengths = lengths + s if lengths is not None else None


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("new_tokens", [1, 5], ids=["decode", "prefill_chunk"])
@pytest.mark.parametrize(("sink_tokens", "recent_window", "k_qjl"), [(0, 0, False), (2, 4, True)])
def test_cuda_attention_concat(new_tokens, group, dtype, sink_tokens, recent_window, k_qjl) -> None:
    inputs, attrs = small_attention_case(
        dtype,
        batch=2,
        kv_heads=2,
        group=group,
        new_tokens=new_tokens,
        total=40,
        head_dim=64,
        sink_tokens=sink_tokens,
        recent_window=recent_window,
        k_qjl=k_qjl,
        seed=group,
    )
    ours = run_attention(inputs, attrs, provider=CUDA)
    ref = reference_ops.tq_attention(**inputs, **attrs)
    assert ours.dtype == np.dtype(dtype) and np.all(np.isfinite(ours))
    assert _rel_err(ours, ref) <= CUDA_RTOL[dtype]


# Buffer mode with unequal past_lengths (one sequence empty), random bytes in the unused compressed rows and
# NaN in the unused window slots: none of them may be read. (Wrong on the H100 while the ORT glue sized the
# attention workspace with past_lengths unset: 0 bytes, so the kernels' partials overwrote the lengths.)
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(("sink_tokens", "recent_window"), [(2, 3), (0, 0)], ids=["window", "no_window"])
@pytest.mark.parametrize("new_tokens", [1, 2], ids=["decode", "prefill_chunk"])
def test_cuda_attention_buffer_mode(new_tokens: int, sink_tokens: int, recent_window: int, dtype) -> None:
    inputs, attrs = buffer_attention_case(
        dtype, sink_tokens, recent_window, new_tokens, lengths=[3, 9, 0], capacity=14, head_dim=64
    )
    ours = run_attention(inputs, attrs, provider=CUDA)
    ref = reference_ops.tq_attention(**inputs, **attrs)
    assert np.all(np.isfinite(ours))
    assert _rel_err(ours, ref) <= CUDA_RTOL[dtype]


# R_k as a constant initializer: the CUDA op reads it once at kernel creation and, where every head is
# Sylvester-Hadamard, promises that to the launcher (AttentionParams::k_rotation_hadamard), so the decode
# kernel rotates q by a butterfly from R_k's first row. A dense R and a Hadamard R with one entry's sign
# flipped must not be promised: with the promise, the near miss would be rotated as the Hadamard R it is not
# (one coordinate of R_k q off by 2 |q_j| / sqrt(D)), far outside the bound. Shared and per-kv-head R,
# D 64 and 128, float16 and float32. The op's choice is read from ORT's log (INFO), so a promise that was
# never made cannot pass as one.
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize(
    ("rotation", "per_head"),
    [("hadamard", False), ("hadamard", True), ("dense", False), ("near_miss", False), ("near_miss", True)],
)
def test_cuda_attention_constant_k_rotation(
    rotation: str, per_head: bool, head_dim: int, dtype, capfd
) -> None:
    rng = np.random.default_rng(head_dim)
    batch, kv_heads, group, total = 2, 2, 4, 300
    k_codec = make_codec(
        head_dim,
        bits=(4,),
        rotation="dense" if rotation == "dense" else "hadamard",
        kv_heads=kv_heads,
        per_head_rotation=per_head,
    )
    if rotation == "near_miss":
        rot = k_codec.rotation.copy()
        rot[-1, 5, 7] = -rot[-1, 5, 7]
        k_codec = dataclasses.replace(k_codec, rotation=rot)
    v_codec = make_codec(head_dim, bits=(4,), kv_heads=kv_heads, seed=100)
    keys = rng.standard_normal((batch, kv_heads, total, head_dim)).astype(dtype)
    values = rng.standard_normal((batch, kv_heads, total, head_dim)).astype(dtype)
    k_cache, _ = concat_caches(keys, k_codec, 0, 0)
    v_cache, _ = concat_caches(values, v_codec, 0, 0)
    q = rng.standard_normal((batch, kv_heads * group, 1, head_dim)).astype(dtype)
    inputs, attrs = attention_inputs(q, k_codec, v_codec, k_cache, v_cache, causal_mask(batch, 1, total))
    constants = ("k_rotation", "k_codebook", "v_rotation")
    ours = run_attention(inputs, attrs, provider=CUDA, constants=constants, log_severity=1)
    log = capfd.readouterr().err
    promised = "k_rotation is a constant Sylvester-Hadamard matrix" in log
    assert promised == (rotation == "hadamard"), log[-2000:]
    if rotation != "hadamard":
        assert "k_rotation read on every call (it is not Sylvester-Hadamard-structured)" in log, log[-2000:]
    ref = reference_ops.tq_attention(**inputs, **attrs)
    assert np.all(np.isfinite(ours))
    assert _rel_err(ours, ref) <= CUDA_RTOL[dtype]
    # k_rotation as a graph input: never promised
    run_attention(inputs, attrs, provider=CUDA, log_severity=1)
    assert "k_rotation read on every call (it is not a constant initializer)" in capfd.readouterr().err


# R_v as a constant initializer: promised like R_k (AttentionParams::v_rotation_hadamard) where every head is
# Sylvester-Hadamard, so the output's un-rotation skips its device check of R_v. Decode (the decode kernel's
# reduce) and a 3-token prefill chunk (the general path); a dense R_v and a one-sign near miss get no promise,
# and with one the near miss would be un-rotated as the Hadamard R it is not (far outside the bound). The
# choice is read from ORT's log.
@pytest.mark.parametrize("new_tokens", [1, 3], ids=["decode", "prefill_chunk"])
@pytest.mark.parametrize(
    ("rotation", "per_head"), [("hadamard", False), ("hadamard", True), ("dense", False), ("near_miss", True)]
)
def test_cuda_attention_constant_v_rotation(rotation: str, per_head: bool, new_tokens: int, capfd) -> None:
    rng = np.random.default_rng(new_tokens + len(rotation))
    batch, kv_heads, group, total, head_dim, dtype = 2, 2, 4, 300, 128, np.float16
    k_codec = make_codec(head_dim, bits=(4,), kv_heads=kv_heads)
    v_codec = make_codec(
        head_dim,
        bits=(3,),
        rotation="dense" if rotation == "dense" else "hadamard",
        kv_heads=kv_heads,
        per_head_rotation=per_head,
        seed=100,
    )
    if rotation == "near_miss":
        rot = v_codec.rotation.copy()
        rot[-1, 9, 2] = -rot[-1, 9, 2]
        v_codec = dataclasses.replace(v_codec, rotation=rot)
    keys = rng.standard_normal((batch, kv_heads, total, head_dim)).astype(dtype)
    values = rng.standard_normal((batch, kv_heads, total, head_dim)).astype(dtype)
    k_cache, _ = concat_caches(keys, k_codec, 0, 0)
    v_cache, _ = concat_caches(values, v_codec, 0, 0)
    q = rng.standard_normal((batch, kv_heads * group, new_tokens, head_dim)).astype(dtype)
    mask = causal_mask(batch, new_tokens, total)
    inputs, attrs = attention_inputs(q, k_codec, v_codec, k_cache, v_cache, mask)
    constants = ("k_rotation", "v_rotation", "v_codebook")
    ours = run_attention(inputs, attrs, provider=CUDA, constants=constants, log_severity=1)
    log = capfd.readouterr().err
    assert "k_rotation is a constant Sylvester-Hadamard matrix" in log, log[-2000:]
    promised = "v_rotation is a constant Sylvester-Hadamard matrix" in log
    assert promised == (rotation == "hadamard"), log[-2000:]
    if rotation != "hadamard":
        assert "v_rotation read on every call (it is not Sylvester-Hadamard-structured)" in log, log[-2000:]
    ref = reference_ops.tq_attention(**inputs, **attrs)
    assert np.all(np.isfinite(ours))
    assert _rel_err(ours, ref) <= CUDA_RTOL[dtype]
    run_attention(inputs, attrs, provider=CUDA, log_severity=1)
    assert "v_rotation read on every call (it is not a constant initializer)" in capfd.readouterr().err


# TQQuantize with its rotation as a constant initializer: promised (QuantizeParams::rotation_hadamard) where
# every head is Sylvester-Hadamard, so the kernel skips its check of R; the codes stay bit-identical to the
# reference. A one-sign near miss gets no promise (with one, its codes would differ) and stays bit-identical.
# 9 new tokens take the decode-step kernel, 40 the prefill kernel, which with a constant rotation and codebook
# (QuantizeParams::constant_tables) builds its tables before it waits for the previous kernel.
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("rotation", "per_head"), [("hadamard", False), ("hadamard", True), ("near_miss", True)]
)
@pytest.mark.parametrize("new_tokens", [9, 40], ids=["step", "prefill"])
def test_cuda_quantize_constant_rotation(
    rotation: str, per_head: bool, dtype, new_tokens: int, capfd
) -> None:
    rng = np.random.default_rng(7)
    codec = make_codec(128, bits=(4,), kv_heads=2, per_head_rotation=per_head)
    if rotation == "near_miss":
        rot = codec.rotation.copy()
        rot[-1, 100, 5] = -rot[-1, 100, 5]
        codec = dataclasses.replace(codec, rotation=rot)
    x = special_vectors(rng, (2, 2, new_tokens, 128), dtype)
    inputs, attrs = quantize_inputs(x, codec, empty_cache(2, 2, codec))
    ours, _ = run_quantize(inputs, attrs, provider=CUDA, constants=("rotation", "codebook"), log_severity=1)
    log = capfd.readouterr().err
    promised = "tqexport TQQuantize" in log and "rotation is a constant Sylvester-Hadamard matrix" in log
    assert promised == (rotation == "hadamard"), log[-2000:]
    if rotation != "hadamard":
        assert "rotation read on every call (it is not Sylvester-Hadamard-structured)" in log, log[-2000:]
    ref, _ = reference_ops.tq_quantize(**inputs, **attrs)
    assert np.array_equal(ours, ref), f"{int(np.sum(ours != ref))} bytes differ"
    run_quantize(inputs, attrs, provider=CUDA, log_severity=1)
    assert "rotation read on every call (it is not a constant initializer)" in capfd.readouterr().err


def test_cuda_matches_cpu_op() -> None:
    inputs, attrs = small_attention_case(
        np.float16, batch=1, kv_heads=2, group=4, new_tokens=3, total=33, head_dim=64, seed=5
    )
    cpu = run_attention(inputs, attrs)
    gpu = run_attention(inputs, attrs, provider=CUDA)
    assert _rel_err(gpu, cpu) <= CUDA_RTOL[np.float16]


def test_cuda_buffer_overflow_fails_before_launch() -> None:
    codec = make_codec(64, bits=(4,), kv_heads=2)
    x = np.zeros((2, 2, 3, 64), np.float32)
    inputs, attrs = quantize_inputs(
        x, codec, empty_cache(2, 2, codec, 4), None, np.array([0, 2], np.int64), cache_mode=BUFFER
    )
    with pytest.raises(Exception, match="buffer overflow: sequence 1"):
        run_quantize(inputs, attrs, provider=CUDA)


def test_cuda_attention_heads_do_not_divide() -> None:
    inputs, attrs = small_attention_case(np.float32, kv_heads=2, group=2, head_dim=64)
    inputs["q"] = inputs["q"][:, :3].copy()
    with pytest.raises(Exception, match="query heads Hq=3 .* is not a multiple of kv heads Hkv=2"):
        run_attention(inputs, attrs, provider=CUDA)
