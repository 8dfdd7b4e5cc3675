"""TQQuantize's decode-step kernel (plugins/kernels/quantize_step.cuh) against the NumPy reference op.

A call with at most 16 new tokens, one part, no QJL and a Hadamard R runs the step kernel; TQ_QUANT_STEP=0
sends the same call to the v4 kernel. R is either promised (QuantizeParams::rotation_hadamard, as the ORT CUDA
op promises a constant one) or, unpromised (the TensorRT plugin; an ORT graph whose R is not a constant),
checked in the kernel: a warp whose R is not Hadamard-structured (a dense R, or one entry nudged by one ulp,
for some heads) computes y = R x densely.
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


def build(d: int, bits: int, nc: int, seed: int = 0):
    from bench.gpu_harness.capi import Codec

    cfg = CodecConfig(head_dim=d, bits=(bits,), norm_correction=bool(nc), rotation="hadamard", seed=seed)
    return RefCodec.build(cfg), Codec(d, (d,), (bits,), 0, nc)


def hadamard_heads(d: int, bits: int, heads: int, seed: int) -> np.ndarray:
    """[heads, D, D] float32: the reference's Hadamard R from seeds seed .. seed + heads - 1 (each head its
    own signs; RefCodec.build alone gives one shared R)."""
    cfgs = [CodecConfig(head_dim=d, bits=(bits,), rotation="hadamard", seed=seed + i) for i in range(heads)]
    return np.stack([RefCodec.build(c).rotation[0] for c in cfgs]).astype(np.float32)


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
    d, bits, nc, rheads = cfg
    ref, codec = build(d, bits, nc, seed=bits)
    rot = hadamard_heads(d, bits, rheads, seed=bits)
    assert kernels.rotation_is_hadamard(rot)
    rng = np.random.default_rng(d * 10 + bits)
    concat_steps(
        kernels, monkeypatch, rng, codec, ref.codebook, rot, dtype, window, (1, 1, 3, STEP_MAX_TOKENS, 1),
        hadamard=True, takes_step=lambda s: True,
    )  # fmt: skip


def concat_steps(
    kernels, monkeypatch, rng, codec, codebook, rot, dtype, window, sizes, hadamard, takes_step
) -> None:
    """Batch 2 over 3 kv heads in concat mode: a 20-token prefix from the reference, then a step of each of
    `sizes` tokens from the reference's cache. With TQ_QUANT_STEP=1 the step kernel runs where
    takes_step(S) (v4 otherwise), with TQ_QUANT_STEP=0 v4; both give the reference's bytes."""
    import torch

    d = codec.head_dim
    heads, b = 3, 2
    ns, rw = window
    signs = np.sign(rot[0, 0])
    cache = np.zeros((b, heads, 0, codec.row_bytes), np.uint8)
    win = np.zeros((b, heads, 0, d), dtype) if ns + rw else None
    x0 = step_inputs(rng, (b, heads, 20, d), signs, dtype)
    cache, win = reference_ops.tq_quantize(
        x0, cache, rot, codebook, None, win, sink_tokens=ns, recent_window=rw, **attrs(codec)
    )
    for s in sizes:
        x = step_inputs(rng, (b, heads, s, d), signs, dtype)
        want_cache, want_win = reference_ops.tq_quantize(
            x, cache, rot, codebook, None, win, sink_tokens=ns, recent_window=rw, **attrs(codec)
        )
        got = {}
        for step in ("1", "0"):
            monkeypatch.setenv("TQ_QUANT_STEP", step)
            args = (codec, dev(x), dev(cache), dev(rot), dev(codebook), None)
            win_arg = dev(win) if win is not None else None

            def call(args=args, win_arg=win_arg, step=step, got=got):
                got[step] = kernels.quantize(
                    *args, win_arg, sink_tokens=ns, recent_window=rw, hadamard=hadamard
                )

            names = launched(call)
            kernel = STEP_KERNEL if step == "1" and takes_step(s) else V4_KERNEL
            other = V4_KERNEL if kernel == STEP_KERNEL else STEP_KERNEL
            if want_cache.shape[2] > cache.shape[2]:  # compresses
                assert any(kernel in n for n in names), f"TQ_QUANT_STEP={step}, S={s}: no {kernel} in {names}"
            assert not any(other in n for n in names), f"TQ_QUANT_STEP={step}, S={s}: {other} ran"
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
    assert any(STEP_KERNEL in n for n in names), f"an unpromised R takes the step kernel too: {names}"


def rotation_of(form: str, d: int, bits: int, heads: int) -> tuple[np.ndarray, object]:
    """R [heads, D, D] float32 and the reference codec: "hadamard" (the converter's, one per head), "dense"
    (Haar rotations), "mixed" (head 1 dense, the others Hadamard), "nudged" (head 1's Hadamard R with one
    entry moved by one float32 ulp, so only the kernel's bit-for-bit check can tell)."""
    ref, _ = build(d, bits, 0, seed=bits)
    rot = hadamard_heads(d, bits, heads, seed=bits)
    dense = np.stack(
        [
            RefCodec.build(CodecConfig(head_dim=d, bits=(bits,), rotation="dense", seed=11 + i), num_heads=1)
            .rotation[0]
            .astype(np.float32)
            for i in range(heads)
        ]
    )
    if form == "dense":
        rot = dense
    elif form == "mixed":
        rot[1] = dense[1]
    elif form == "nudged":
        rot[1, 5, 7] = np.nextafter(rot[1, 5, 7], np.float32(2.0))
    return rot, ref


def unpromised_takes_step(d: int, vectors: int, rotation_heads: int) -> bool:
    """quantize_step.cuh unpromised_check_pays: without the promise each 4-warp block reads the R of its heads
    (one per block when shared, up to one per warp per head), routed only for D <= 128 and <= 4 MB read."""
    blocks = -(-vectors // 4)
    checks = blocks * (1 if rotation_heads == 1 else 4)
    return d <= 128 and checks * d * d * 4 <= 4 << 20


UNPROMISED = [  # (D, bits, norm_correction, R form)
    (128, 4, 0, "hadamard"),
    (128, 3, 1, "dense"),
    (128, 4, 0, "mixed"),
    (128, 2, 0, "nudged"),
    (64, 4, 1, "mixed"),
    (64, 8, 0, "dense"),
    (256, 4, 0, "mixed"),
    (256, 3, 0, "hadamard"),
]


@pytest.mark.parametrize("cfg", UNPROMISED, ids=lambda c: f"D{c[0]}-m{c[1]}-nc{c[2]}-{c[3]}")
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shared", [False, True], ids=["rh3", "rh1"])
def test_step_kernel_unpromised_rotation_bit_exact(kernels, monkeypatch, cfg, dtype, shared):
    """No promise: concat steps of 1, 3 and 16 tokens (with a 2 + 5 window) over 3 kv heads and batch 2, each
    from the reference's cache; the step kernel ran where routed (its structure check per distinct head of a
    block, and the dense y = R x for the heads that fail it), and its bytes equal the reference's and v4's."""
    d, bits, nc, form = cfg
    rot, _ = rotation_of(form, d, bits, 3)
    if shared:
        rot = rot[1:2]  # head 1's R for every head: the non-Hadamard one where there is one
    assert kernels.rotation_is_hadamard(rot) == (form == "hadamard")
    ref, codec = build(d, bits, nc, seed=bits)
    concat_steps(
        kernels, monkeypatch, np.random.default_rng(d + bits), codec, ref.codebook, rot, dtype, (2, 5),
        (1, 3, STEP_MAX_TOKENS), hadamard=False,
        takes_step=lambda s: unpromised_takes_step(d, 2 * 3 * s, rot.shape[0]),
    )  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [(128, 8, 8, 1, 1, True), (128, 32, 8, 4, 1, False), (128, 2, 8, 1, 8, True), (128, 16, 8, 1, 8, False),
     (64, 32, 8, 1, 1, True), (256, 1, 8, 1, 1, False)],
    ids=lambda c: f"D{c[0]}-B{c[1]}-H{c[2]}-S{c[3]}-rh{c[4]}",
)  # fmt: skip
def test_unpromised_routing_by_checked_bytes(kernels, monkeypatch, case):
    """Without the promise the step kernel runs only where its per-block check of R stays small (D <= 128,
    at most 4 MB of R read per launch); larger calls and D = 256 take v4. Bytes equal the reference."""
    d, b, h, s, rheads, step_expected = case
    assert unpromised_takes_step(d, b * h * s, rheads) == step_expected
    monkeypatch.delenv("TQ_QUANT_STEP", raising=False)
    ref, codec = build(d, 4, 0)
    rot = hadamard_heads(d, 4, h, seed=2)[:rheads] if rheads > 1 else ref.rotation.astype(np.float32)
    x = np.random.default_rng(d + b).standard_normal((b, h, s, d)).astype(np.float16)
    past = np.zeros((b, h, 0, codec.row_bytes), np.uint8)
    want, _ = reference_ops.tq_quantize(x, past, rot, ref.codebook, None, None, **attrs(codec))
    got = {}

    def call():
        got["c"] = kernels.quantize(codec, dev(x), dev(past), dev(rot), dev(ref.codebook), None)[0]

    names = launched(call)
    kernel = STEP_KERNEL if step_expected else V4_KERNEL
    assert any(kernel in n for n in names), f"expected {kernel}, got {names}"
    np.testing.assert_array_equal(got["c"].cpu().numpy(), want)


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
