"""TQAttention C++ CPU kernel against the float64 NumPy reference over the decoded cache (format.md 6, 8.2).

Tolerance: 1e-4 of the output's largest magnitude (float32 scores, softmax and accumulation; the reference is
float64). Both the AVX2 and the scalar kernel are checked (TQEXPORT_CPU_SIMD=0 selects the scalar one).
"""

from __future__ import annotations

import cpu_lib
import numpy as np
import pytest

from tqexport.codec import Codec, CodecConfig, reference_ops

KERNELS = ["simd", "scalar"]
CODECS = {  # name: (K config kwargs, V config kwargs)
    "k4v3": (dict(part_sizes=(128,), bits=(4,)), dict(part_sizes=(128,), bits=(3,))),
    "k4qjl_v2": (dict(part_sizes=(128,), bits=(4,), qjl=True), dict(part_sizes=(128,), bits=(2,))),
    "outlier_parts": (
        dict(part_sizes=(32, 96), bits=(6, 3), qjl=True),
        dict(part_sizes=(32, 96), bits=(5, 1)),
    ),
    "k8v7_dense": (
        dict(part_sizes=(64, 64), bits=(8, 4), rotation="dense"),
        dict(part_sizes=(128,), bits=(7,), rotation="dense"),
    ),
}


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    if request.param == "simd" and not cpu_lib.simd_enabled():
        pytest.skip("no AVX2+FMA+F16C on this CPU")
    if request.param == "scalar":
        monkeypatch.setenv("TQEXPORT_CPU_SIMD", "0")
    return request.param


def _codecs(name: str, heads: int) -> tuple[Codec, Codec]:
    kc, vc = CODECS[name]
    out = []
    for seed, kw in ((1, kc), (2, vc)):
        cfg = CodecConfig(head_dim=128, seed=seed, **kw)
        channels = None
        if heads > 1:  # per-head rotations (outlier channel lists)
            rng = np.random.default_rng(seed)
            offs = np.cumsum((0, *cfg.part_sizes))
            channels = []
            for _ in range(heads):
                perm = rng.permutation(128)
                channels.append([sorted(perm[offs[i] : offs[i + 1]].tolist()) for i in range(cfg.num_parts)])
        out.append(Codec.build(cfg, num_heads=heads, channels=channels))
    return out[0], out[1]


def _fill(kc, vc, mode, ns, rw, b, hkv, steps, capacity=0, dtype=np.float32, seed=0):
    """Runs reference TQQuantize steps; returns caches, windows, lengths (buffer) and the total tokens."""
    rng = np.random.default_rng(seed)
    w = ns + rw
    state = {}
    for name, codec in (("k", kc), ("v", vc)):
        if mode == 0:
            state[name] = [
                np.zeros((b, hkv, 0, codec.row_bytes), np.uint8),
                np.zeros((b, hkv, 0, 128), dtype) if w else None,
            ]
        else:
            state[name] = [
                np.zeros((b, hkv, capacity, codec.row_bytes), np.uint8),
                np.zeros((b, hkv, w, 128), dtype) if w else None,
            ]
    lengths = np.arange(b, dtype=np.int64) * 3 if mode == 1 else None
    total = 0
    for s in steps:
        lengths_now = None if lengths is None else lengths.copy()
        for name, codec in (("k", kc), ("v", vc)):
            x = (rng.standard_normal((b, hkv, s, 128)) * 2).astype(dtype)
            attrs = dict(codec.onnx_attributes(), cache_mode=mode, sink_tokens=ns, recent_window=rw)
            state[name] = list(
                reference_ops.tq_quantize(
                    x,
                    state[name][0],
                    codec.rotation,
                    codec.codebook,
                    codec.qjl_matrix,
                    state[name][1],
                    lengths_now,
                    **attrs,
                )
            )
        total += s
        if lengths is not None:
            lengths = lengths + s
    past = None if lengths is None else lengths - steps[-1]
    if lengths is not None:  # poison what sequence b must never read: rows >= T_b - W, free window slots
        for bi, t_b in enumerate(lengths):
            for name in ("k", "v"):
                state[name][0][bi, :, max(0, t_b - w) :] = 0xFF  # float16 norms 0xFFFF = NaN
                if w and t_b < w:
                    state[name][1][bi, :, t_b:] = np.nan
    return state, past, total


def _attn_attrs(kc, vc, mode, ns, rw, scale, softcap):
    k, v = kc.onnx_attributes(), vc.onnx_attributes()
    return dict(
        k_bits=k["bits"],
        k_part_sizes=k["part_sizes"],
        k_qjl=k["qjl"],
        v_bits=v["bits"],
        v_part_sizes=v["part_sizes"],
        scale=scale,
        softcap=softcap,
        cache_mode=mode,
        sink_tokens=ns,
        recent_window=rw,
    )


def _check(q, state, mask, kc, vc, past, attrs, threads=0):
    args = (
        q,
        state["k"][0],
        state["v"][0],
        mask,
        kc.rotation,
        kc.codebook,
        vc.rotation,
        vc.codebook,
        kc.qjl_matrix,
        state["k"][1],
        state["v"][1],
        past,
    )
    want = reference_ops.tq_attention(*args, **attrs).astype(np.float64)
    got = cpu_lib.attention(*args, **attrs, threads=threads).astype(np.float64)
    assert np.all(np.isfinite(got))
    err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)
    tol = 1e-4 if q.dtype == np.float32 else 2e-3  # float16 output rounding (2^-11 relative)
    assert err <= tol, f"relative error {err:.3g}"
    return got


@pytest.mark.parametrize("codecs", list(CODECS))
@pytest.mark.parametrize("ns,rw", [(0, 0), (4, 16)])
def test_decode_concat(kernel, codecs, ns, rw):
    kc, vc = _codecs(codecs, 2)
    state, _, total = _fill(kc, vc, 0, ns, rw, b=2, hkv=2, steps=[300, 1])
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 8, 1, 128)).astype(np.float32)
    mask = np.zeros((2, 1, 1, total), np.float32)
    mask[1, 0, 0, :7] = -np.inf  # left padding of sequence 1
    _check(q, state, mask, kc, vc, None, _attn_attrs(kc, vc, 0, ns, rw, 128**-0.5, 0.0))


@pytest.mark.parametrize("mask_dtype", [np.float32, np.float16, np.bool_])
def test_prefill_causal_per_head_mask_softcap(kernel, mask_dtype):
    kc, vc = _codecs("k4v3", 1)
    s = 9
    state, _, total = _fill(kc, vc, 0, 2, 3, b=1, hkv=2, steps=[100, s])
    rng = np.random.default_rng(6)
    q = rng.standard_normal((1, 6, s, 128)).astype(np.float32)
    allowed = np.arange(total)[None, :] <= (total - s + np.arange(s))[:, None]  # causal
    allowed = np.broadcast_to(allowed, (1, 6, s, total)).copy()
    allowed[0, 4, :, 50:60] = False  # one head sees a hole
    allowed[0, 5, 2, :] = False  # fully masked row -> zeros
    if mask_dtype == np.bool_:
        mask = allowed
    else:
        mask = np.where(allowed, rng.uniform(-1, 0, allowed.shape), -np.inf).astype(mask_dtype)
    got = _check(q, state, mask, kc, vc, None, _attn_attrs(kc, vc, 0, 2, 3, 0.1, 30.0))
    assert np.all(got[0, 5, 2] == 0)


@pytest.mark.parametrize("ns,rw", [(0, 0), (2, 5)])
def test_buffer_mode_never_reads_past_length(kernel, ns, rw):
    kc, vc = _codecs("k4qjl_v2", 2)
    state, past, _ = _fill(kc, vc, 1, ns, rw, b=3, hkv=2, steps=[40, 2], capacity=64)
    tm = 70
    rng = np.random.default_rng(8)
    q = rng.standard_normal((3, 4, 2, 128)).astype(np.float32)
    mask = np.zeros((3, 1, 2, tm), np.float32)  # positions >= T_b are excluded by the op itself
    _check(q, state, mask, kc, vc, past, _attn_attrs(kc, vc, 1, ns, rw, 0.09, 0.0))


def test_float16(kernel):
    kc, vc = _codecs("k4v3", 1)
    state, _, total = _fill(kc, vc, 0, 4, 8, b=1, hkv=2, steps=[200, 1], dtype=np.float16)
    q = np.random.default_rng(9).standard_normal((1, 4, 1, 128)).astype(np.float16)
    mask = np.zeros((1, 1, 1, total), np.float16)
    _check(q, state, mask, kc, vc, None, _attn_attrs(kc, vc, 0, 4, 8, 128**-0.5, 0.0))


def test_threads_and_kernels_agree(monkeypatch):
    kc, vc = _codecs("k4v3", 1)
    state, _, total = _fill(kc, vc, 0, 0, 0, b=1, hkv=2, steps=[3000, 1])
    q = np.random.default_rng(10).standard_normal((1, 8, 1, 128)).astype(np.float32)
    mask = np.zeros((1, 1, 1, total), np.float32)
    attrs = _attn_attrs(kc, vc, 0, 0, 0, 128**-0.5, 0.0)
    outs = []
    for simd in ("1", "0"):
        monkeypatch.setenv("TQEXPORT_CPU_SIMD", simd)
        for threads in (1, 2, 5):
            outs.append(_check(q, state, mask, kc, vc, None, attrs, threads=threads))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=0, atol=1e-5 * np.abs(outs[0]).max())


def test_mask_too_short_is_an_error():
    kc, vc = _codecs("k4v3", 1)
    state, _, total = _fill(kc, vc, 0, 0, 0, b=1, hkv=1, steps=[10])
    q = np.zeros((1, 2, 1, 128), np.float32)
    mask = np.zeros((1, 1, 1, total - 1), np.float32)
    with pytest.raises(cpu_lib.KernelError, match="Tc=10, Wd=0, T=9"):
        cpu_lib.attention(
            q,
            state["k"][0],
            state["v"][0],
            mask,
            kc.rotation,
            kc.codebook,
            vc.rotation,
            vc.codebook,
            **_attn_attrs(kc, vc, 0, 0, 0, 1.0, 0.0),
        )
