"""TQQuantize C++ CPU kernel vs the NumPy reference (format.md 4, 5, 7): bit-exact rows and windows."""

from __future__ import annotations

import cpu_lib
import numpy as np
import pytest

from tqexport.codec import Codec, CodecConfig, reference_ops

# (part_sizes, bits, qjl, norm_correction, rotation)
CODECS = [
    ((128,), (4,), False, False, "hadamard"),
    ((128,), (3,), False, False, "hadamard"),
    ((128,), (2,), False, True, "dense"),
    ((128,), (8,), False, False, "hadamard"),
    ((32, 96), (5, 2), False, False, "hadamard"),
    ((64,), (1,), False, False, "dense"),
    ((64, 16, 48), (7, 6, 3), False, True, "dense"),
    ((128,), (4,), True, False, "hadamard"),
    ((96, 32), (3, 5), True, True, "dense"),
]


def _codec(part_sizes, bits, qjl, nc, rotation, heads=1) -> Codec:
    d = sum(part_sizes)
    cfg = CodecConfig(
        head_dim=d, part_sizes=part_sizes, bits=bits, qjl=qjl, norm_correction=nc, rotation=rotation, seed=3
    )
    channels = None
    if heads > 1:
        rng = np.random.default_rng(7)
        channels = []
        for _ in range(heads):
            perm = rng.permutation(d)
            offs = np.cumsum((0,) + part_sizes)
            channels.append([sorted(perm[offs[i] : offs[i + 1]].tolist()) for i in range(len(part_sizes))])
    return Codec.build(cfg, num_heads=heads, channels=channels)


def _attrs(codec: Codec) -> dict:
    return codec.onnx_attributes()


@pytest.mark.parametrize("spec", CODECS, ids=lambda s: f"{s[0]}-{s[1]}-qjl{int(s[2])}-nc{int(s[3])}-{s[4]}")
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rows_bit_exact(spec, dtype):
    codec = _codec(*spec, heads=2)
    rng = np.random.default_rng(0)
    d = codec.config.head_dim
    x = (rng.standard_normal((2, 2, 37, d)) * rng.uniform(0.01, 30, (2, 2, 37, 1))).astype(dtype)
    x[0, 0, 3] = 0  # zero vector: code 2^(m-1) - 1 everywhere, zero norm
    past = np.zeros((2, 2, 0, codec.row_bytes), np.uint8)
    got, _ = cpu_lib.quantize(x, past, codec.rotation, codec.codebook, codec.qjl_matrix, **_attrs(codec))
    want = codec.quantize(x)
    mismatched = np.argwhere((got != want).any(-1))
    assert got.shape == want.shape
    assert len(mismatched) == 0, f"rows differ at {mismatched[:5].tolist()}"


def test_norm_saturates_at_float16_max():
    codec = _codec((128,), (4,), False, False, "hadamard")
    x = np.full((1, 1, 1, 128), 1e4, np.float32)  # norm 1.13e5 > 65504
    got, _ = cpu_lib.quantize(
        x, np.zeros((1, 1, 0, codec.row_bytes), np.uint8), codec.rotation, codec.codebook, **_attrs(codec)
    )
    np.testing.assert_array_equal(got, codec.quantize(x))
    assert got[0, 0, 0, -2:].view(np.float16)[0] == np.float16(65504)


def _run_steps(codec, mode, ns, rw, steps, batch=2, capacity=64, dtype=np.float32):
    """Feeds the same steps to the C++ op and the reference op; asserts equal caches and windows each step."""
    rng = np.random.default_rng(1)
    h, d, w = 2, codec.config.head_dim, ns + rw
    attrs = dict(_attrs(codec), cache_mode=mode, sink_tokens=ns, recent_window=rw)
    if mode == 0:
        cache_ref = np.zeros((batch, h, 0, codec.row_bytes), np.uint8)
        win_ref = np.zeros((batch, h, 0, d), dtype) if w else None
        lengths = None
    else:
        cache_ref = np.zeros((batch, h, capacity, codec.row_bytes), np.uint8)
        win_ref = np.zeros((batch, h, w, d), dtype) if w else None
        lengths = np.array([0, 3][:batch], np.int64)
    cache_cpp, win_cpp = cache_ref.copy(), None if win_ref is None else win_ref.copy()
    for s in steps:
        x = rng.standard_normal((batch, h, s, d)).astype(dtype)
        want_c, want_w = reference_ops.tq_quantize(
            x, cache_ref, codec.rotation, codec.codebook, codec.qjl_matrix, win_ref, lengths, **attrs
        )
        got_c, got_w = cpu_lib.quantize(
            x, cache_cpp, codec.rotation, codec.codebook, codec.qjl_matrix, win_cpp, lengths, **attrs
        )
        np.testing.assert_array_equal(got_c, want_c)
        if w:
            np.testing.assert_array_equal(got_w, want_w)
        else:
            assert got_w is None
        cache_ref, win_ref, cache_cpp, win_cpp = want_c, want_w, got_c, got_w
        if lengths is not None:
            lengths = lengths + s


@pytest.mark.parametrize("ns,rw", [(0, 0), (4, 0), (0, 5), (2, 3)])
@pytest.mark.parametrize("mode", [0, 1])
def test_steps_match_reference(mode, ns, rw):
    codec = _codec((128,), (4,), False, False, "hadamard")
    _run_steps(codec, mode, ns, rw, steps=[7, 1, 1, 1, 9, 1, 2])


def test_steps_float16_qjl_window():
    codec = _codec((96, 32), (3, 5), True, True, "dense")
    _run_steps(codec, 0, 2, 3, steps=[1, 1, 1, 4, 1, 6], dtype=np.float16)


def test_buffer_overflow_is_an_error():
    codec = _codec((128,), (4,), False, False, "hadamard")
    cache = np.zeros((1, 1, 4, codec.row_bytes), np.uint8)
    x = np.ones((1, 1, 3, 128), np.float32)
    with pytest.raises(cpu_lib.KernelError, match="buffer overflow.*capacity is 4"):
        cpu_lib.quantize(
            x,
            cache,
            codec.rotation,
            codec.codebook,
            past_lengths=np.array([2], np.int64),
            cache_mode=1,
            **_attrs(codec),
        )


def test_bad_codec_attribute_is_named():
    codec = _codec((128,), (4,), False, False, "hadamard")
    x = np.ones((1, 1, 1, 128), np.float32)
    attrs = dict(_attrs(codec), part_sizes=[120])
    with pytest.raises(cpu_lib.KernelError, match="part_sizes"):
        cpu_lib.quantize(
            x, np.zeros((1, 1, 0, codec.row_bytes), np.uint8), codec.rotation, codec.codebook, **attrs
        )
