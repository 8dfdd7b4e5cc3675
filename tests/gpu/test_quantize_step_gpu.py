"""TQQuantize's decode-step kernel (plugins/kernels/quantize_step.cuh) against the NumPy reference op.

A call with at most 16 new tokens, a promised Hadamard R (as the ORT CUDA op and the TensorRT plugin promise a
constant one), one part and no QJL runs the step kernel; TQ_QUANT_STEP=0 sends the same call to the v4 kernel.
Oracle: bytes identical to reference_ops.tq_quantize, step by step from the reference's own cache, for
code widths 1..8, D 64/128/256, float16/float32, norm correction, shared and per-head R, sinks and a recent
window (tokens leaving the window come from the past window's ring), buffer mode with ragged lengths, in place
and copying, and at capacity (the overflow flag). Inputs include zero rows and exact ties (integer rows whose
rotated coordinates land on the middle boundary). Which kernel ran is read from the CUDA profiler.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tqexport.codec import Codec as RefCodec  # noqa: E402
from tqexport.codec import CodecConfig, reference_ops  # noqa: E402

pytestmark = pytest.mark.gpu

STEP_KERNEL = "tq_quantize_step_kernel"
V4_KERNEL = "tq_quantize_wht4_kernel"
STEP_MAX_TOKENS = 16  # quantize_step.cuh kStepMaxTokens

CONFIGS = [  # (D, bits, norm_correction, rotation heads)
    (128, 4, 0, 1),
    (128, 3, 0, 3),
    (128, 2, 1, 1),
    (128, 8, 0, 1),
    (64, 4, 0, 1),
    (64, 1, 0, 3),
    (64, 5, 1, 1),
    (64, 7, 0, 1),
    (256, 4, 0, 3),
    (256, 6, 1, 1),
    (256, 3, 0, 1),
]


def build(d: int, bits: int, nc: int, heads: int = 1, seed: int = 0):
    from bench.gpu_harness.capi import Codec

    cfg = CodecConfig(head_dim=d, bits=(bits,), norm_correction=bool(nc), rotation="hadamard", seed=seed)
    return RefCodec.build(cfg, num_heads=heads), Codec(d, (d,), (bits,), 0, nc)


def attrs(codec) -> dict:
    return dict(bits=codec.bits, part_sizes=codec.part_sizes, qjl=0, norm_correction=codec.norm_correction)


def dev(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def step_inputs(
    rng: np.random.Generator, shape: tuple[int, ...], signs: np.ndarray, dtype: str
) -> np.ndarray:
    """Gaussian rows at scales 1e-3 .. 40, a zero row, and exact-tie rows s .* (small integers)."""
    x = rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 40.0], size=shape[:-1] + (1,))
    flat = x.reshape(-1, shape[-1])
    flat[0] = 0.0
    flat[1::5] = signs * rng.integers(-2, 3, (flat[1::5].shape[0], shape[-1]))
    return x.astype(dtype)


def launched(fn) -> set[str]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"D{c[0]}-m{c[1]}-nc{c[2]}-rh{c[3]}")
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize(
    "window", [(0, 0), (2, 5), (4, 0), (0, 3)], ids=["nowin", "win2+5", "sinks4", "recent3"]
)
def test_step_kernel_concat_steps_bit_exact(kernels, monkeypatch, cfg, dtype, window):
    """Concat mode: a 20-token prefix, then steps of 1, 1, 3, 16 and 1 tokens, each from the reference's
    cache; the step kernel's bytes equal the reference's and (TQ_QUANT_STEP=0) the v4 kernel's."""
    import torch

    d, bits, nc, rheads = cfg
    heads, b = 3, 2
    ns, rw = window
    ref, codec = build(d, bits, nc, heads=rheads, seed=bits)
    rot = ref.rotation.astype(np.float32)
    assert kernels.rotation_is_hadamard(rot)
    rng = np.random.default_rng(d * 10 + bits)
    signs = np.sign(rot[0, 0])
    cache = np.zeros((b, heads, 0, codec.row_bytes), np.uint8)
    win = np.zeros((b, heads, 0, d), dtype) if ns + rw else None
    x0 = step_inputs(rng, (b, heads, 20, d), signs, dtype)
    cache, win = reference_ops.tq_quantize(
        x0, cache, rot, ref.codebook, None, win, sink_tokens=ns, recent_window=rw, **attrs(codec)
    )
    for s in (1, 1, 3, STEP_MAX_TOKENS, 1):
        x = step_inputs(rng, (b, heads, s, d), signs, dtype)
        want_cache, want_win = reference_ops.tq_quantize(
            x, cache, rot, ref.codebook, None, win, sink_tokens=ns, recent_window=rw, **attrs(codec)
        )
        got = {}
        for step in ("1", "0"):
            monkeypatch.setenv("TQ_QUANT_STEP", step)
            args = (codec, dev(x), dev(cache), dev(rot), dev(ref.codebook), None)
            win_arg = dev(win) if win is not None else None

            def call(args=args, win_arg=win_arg, step=step, got=got):
                got[step] = kernels.quantize(*args, win_arg, sink_tokens=ns, recent_window=rw, hadamard=True)

            names = launched(call)
            kernel = STEP_KERNEL if step == "1" else V4_KERNEL
            other = V4_KERNEL if step == "1" else STEP_KERNEL
            compresses = want_cache.shape[2] > cache.shape[2]
            if compresses:
                assert any(kernel in n for n in names), f"TQ_QUANT_STEP={step}: no {kernel} in {names}"
            assert not any(other in n for n in names), f"TQ_QUANT_STEP={step}: {other} ran"
        torch.cuda.synchronize()
        for step, (g_cache, g_win) in got.items():
            np.testing.assert_array_equal(
                g_cache.cpu().numpy(), want_cache, err_msg=f"TQ_QUANT_STEP={step}, S={s}"
            )
            if win is not None:
                np.testing.assert_array_equal(g_win.cpu().numpy(), want_win)
        cache, win = want_cache, want_win


def test_seventeen_tokens_take_the_v4_kernel(kernels, monkeypatch):
    ref, codec = build(128, 4, 0)
    monkeypatch.delenv("TQ_QUANT_STEP", raising=False)
    past = dev(np.zeros((1, 2, 0, codec.row_bytes), np.uint8))
    for s, kernel in ((STEP_MAX_TOKENS, STEP_KERNEL), (STEP_MAX_TOKENS + 1, V4_KERNEL)):
        x = dev(np.random.default_rng(s).standard_normal((1, 2, s, 128)).astype(np.float16))
        names = launched(
            lambda x=x: kernels.quantize(
                codec, x, past, dev(ref.rotation), dev(ref.codebook), None, hadamard=True
            )
        )
        assert any(kernel in n for n in names), f"S={s}: expected {kernel}, got {names}"
    x = dev(np.zeros((1, 2, 1, 128), np.float16))
    names = launched(
        lambda: kernels.quantize(codec, x, past, dev(ref.rotation), dev(ref.codebook), None, hadamard=False)
    )
    assert not any(STEP_KERNEL in n for n in names), "an unpromised R must not take the step kernel"


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("s", [1, 3])
def test_step_kernel_buffer_mode_bit_exact(kernels, monkeypatch, dtype, in_place, s):
    """Buffer mode with sinks and a recent window, sequences of lengths 0, 1, 6, 9 and 200 in one batch: the
    compressed tokens come from the past window's ring slots (and from x once the window is full)."""
    import torch

    from bench.gpu_harness.capi import BUFFER

    monkeypatch.setenv("TQ_QUANT_STEP", "1")
    ref, codec = build(128, 4, 1)
    ns, rw, cap, h, d = 2, 5, 400, 2, 128
    rng = np.random.default_rng(7 + s)
    lengths = np.array([0, 1, 6, 9, 200], np.int64)
    b = len(lengths)
    cache = rng.integers(0, 256, (b, h, cap, codec.row_bytes), dtype=np.uint8)
    win = (rng.standard_normal((b, h, ns + rw, d)) * 3).astype(dtype)
    x = step_inputs(rng, (b, h, s, d), np.sign(ref.rotation[0, 0]), dtype)
    want_cache, want_win = reference_ops.tq_quantize(
        x, cache, ref.rotation, ref.codebook, None, win, lengths, cache_mode=BUFFER,
        sink_tokens=ns, recent_window=rw, **attrs(codec),
    )  # fmt: skip
    g_cache, g_win = dev(cache), dev(win)
    out_c, out_w = kernels.quantize(
        codec, dev(x), g_cache, dev(ref.rotation), dev(ref.codebook), None, g_win, dev(lengths),
        cache_mode=BUFFER, sink_tokens=ns, recent_window=rw, hadamard=True,
        present_cache=g_cache if in_place else None, present_window=g_win if in_place else None,
    )  # fmt: skip
    torch.cuda.synchronize()
    np.testing.assert_array_equal(out_c.cpu().numpy(), want_cache)
    np.testing.assert_array_equal(out_w.cpu().numpy(), want_win)


def test_step_kernel_buffer_overflow_flags_and_writes_nothing(kernels, monkeypatch):
    """Sequence 0 at capacity - 1 with 3 new tokens: its first row lands in the last slot, the other two would
    land past capacity (flag set, nothing written there); sequence 1 fits. Every written byte is the
    reference's."""
    import torch

    from bench.gpu_harness.capi import BUFFER

    monkeypatch.setenv("TQ_QUANT_STEP", "1")
    ref, codec = build(64, 4, 0)
    cap, h, s = 8, 2, 3
    lengths = np.array([cap - 1, 2], np.int64)
    rng = np.random.default_rng(3)
    cache = rng.integers(0, 256, (2, h, cap, codec.row_bytes), dtype=np.uint8)
    x = (rng.standard_normal((2, h, s, 64))).astype(np.float32)
    big = np.concatenate([cache, np.zeros((2, h, s, codec.row_bytes), np.uint8)], axis=2)
    want, _ = reference_ops.tq_quantize(
        x, big, ref.rotation, ref.codebook, None, None, lengths, cache_mode=BUFFER, **attrs(codec)
    )
    flag = torch.zeros(1, dtype=torch.int32, device="cuda")
    g_cache = dev(cache)
    kernels.quantize(
        codec, dev(x), g_cache, dev(ref.rotation), dev(ref.codebook), None, None, dev(lengths),
        cache_mode=BUFFER, present_cache=g_cache, overflow_flag=flag, hadamard=True,
    )  # fmt: skip
    torch.cuda.synchronize()
    assert int(flag.item()) == 1
    np.testing.assert_array_equal(g_cache.cpu().numpy(), want[:, :, :cap])
