"""TQQuantize fast path (plugins/kernels/quantize_hadamard.cuh) against the NumPy reference op.

Oracle: bytes identical to reference_ops.tq_quantize (format.md section 5). One part, no QJL, D in
{64, 128, 256} takes the fast kernel (QJL configs run the v1 kernel since the routing change after the first
device run): a Hadamard R (c * H * diag(s)) runs the float64 Walsh-Hadamard transform, any other R
(dense Haar, or a Hadamard with one entry nudged by one float32 ulp) runs the same kernel's dense branch. The
present cache is poisoned (0xA5) so an unwritten byte fails. Inputs include exact ties (integer vectors whose
rotated coordinates are exactly 0, the middle boundary) so the exact-division recount is exercised.
Run as a script (`python3 tests/gpu/test_quantize_gpu.py`) for the small compute-sanitizer launches.
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

FAST_CONFIGS = [  # (D, bits, qjl, norm_correction)
    (128, 4, 0, 0),
    (128, 3, 0, 0),
    (128, 4, 1, 0),
    (128, 2, 0, 1),
    (64, 8, 0, 0),
    (64, 3, 1, 1),
    (256, 4, 0, 0),
    (256, 5, 1, 0),
    (128, 1, 0, 0),
    (128, 7, 0, 0),
    (64, 6, 0, 0),
    (256, 5, 0, 1),
]


def build(d: int, bits: int, qjl: int, nc: int, rotation: str = "hadamard", heads: int = 1, seed: int = 0):
    from bench.gpu_harness.capi import Codec

    cfg = CodecConfig(
        head_dim=d, bits=(bits,), qjl=bool(qjl), norm_correction=bool(nc), rotation=rotation, seed=seed
    )
    return RefCodec.build(cfg, num_heads=heads), Codec(d, (d,), (bits,), qjl, nc)


def tricky_inputs(
    rng: np.random.Generator, shape: tuple[int, ...], signs: np.ndarray, dtype: str
) -> np.ndarray:
    """Gaussian rows at several scales, plus exact-tie rows: s .* (small integers) and s .* (e_0 + e_1)."""
    x = rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 40.0], size=shape[:-1] + (1,))
    flat = x.reshape(-1, shape[-1])
    n = flat.shape[0]
    flat[0] = 0.0
    for i in range(1, n, 7):
        flat[i] = signs * rng.integers(-2, 3, shape[-1])
    for i in range(3, n, 11):
        flat[i] = 0.0
        flat[i, :2] = signs[:2] * 3.0
    return x.astype(dtype)


def run_case(
    kernels,
    ref,
    codec,
    x: np.ndarray,
    rotation: np.ndarray,
    heads_rot: int,
    codebook: np.ndarray | None = None,
    promise: bool = False,
) -> None:
    import torch

    codebook = ref.codebook if codebook is None else codebook
    b, h, s, d = x.shape
    cache = np.zeros((b, h, 0, codec.row_bytes), np.uint8)
    want, _ = reference_ops.tq_quantize(
        x,
        cache,
        rotation,
        codebook,
        ref.qjl_matrix,
        None,
        bits=codec.bits,
        part_sizes=codec.part_sizes,
        qjl=codec.qjl,
        norm_correction=codec.norm_correction,
    )
    present = torch.full((b, h, s, codec.row_bytes), 0xA5, dtype=torch.uint8, device="cuda")
    got, _ = kernels.quantize(
        codec,
        torch.from_numpy(x).cuda(),
        torch.from_numpy(cache).cuda(),
        torch.from_numpy(np.ascontiguousarray(rotation)).cuda(),
        torch.from_numpy(np.ascontiguousarray(codebook)).cuda(),
        torch.from_numpy(ref.qjl_matrix).cuda() if codec.qjl else None,
        present_cache=present,
        hadamard=promise,
        constant_tables=promise,
    )
    torch.cuda.synchronize()
    got = got.cpu().numpy()
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{len(bad)} bytes differ (rotation heads {heads_rot}), first at {bad[:4].tolist()}"


def custom_codebook(kind: str, cb: np.ndarray, bits: int) -> np.ndarray:
    """4-bit codebooks that steer the fast kernel's choice between its code table and the binary search (the
    stored codebook's first 2^bits entries; the rest stays padding)."""
    c = cb[0, : 2**bits].astype(np.float64)
    if kind == "antisymmetric":  # the middle boundary exactly 0 (zero rows: u = 0 exactly)
        c = (c - c[::-1]) / 2
    elif kind == "close-pair":  # two boundaries 0.002 apart in one cell near u = 0.2: binary search
        c[9] = 0.199
        c[10] = 0.201
        c[11] = 0.203
    elif kind == "close-apart":  # boundaries 0.198, 0.2015 in adjacent cells: table, checked per cell
        c[9] = 0.196
        c[10] = 0.2
        c[11] = 0.203
    elif kind == "wide":  # three boundaries beyond 1, in the unbounded last cell: binary search
        c = c * 8.0
    elif kind == "tail-pair":  # boundaries -1.3 and -0.99925, both in the unbounded first cell: binary search
        c[0], c[1], c[2] = -1.6, -1.0, -0.9985
    out = cb.copy()
    out[0, : 2**bits] = np.sort(c)
    return out


def edge_rows(rng: np.random.Generator, n: int, d: int, rotation: np.ndarray) -> np.ndarray:
    """Rows whose rotated direction is near +-e_i: one coordinate of u near +-1 (the table's end cells)."""
    y = rng.standard_normal((n, d)) * rng.choice([1e-3, 3e-2, 6e-2], size=(n, 1))
    y[np.arange(n), rng.integers(0, d, n)] = rng.choice([-1.0, 1.0], n)
    return y @ rotation.astype(np.float64)


@pytest.mark.parametrize("kind", ["antisymmetric", "close-pair", "close-apart", "wide", "tail-pair"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_custom_codebooks_bit_exact(kernels, kind, dtype):
    """The fast kernel codes 4-bit rows through its table only when each cell of u holds at most one boundary
    and each table entry is close enough to its boundary; these codebooks take the table and the binary search
    both ways (close pairs, boundaries beyond +-1), with rows whose u reaches the end cells."""
    ref, codec = build(128, 4, 0, 0)
    codebook = custom_codebook(kind, ref.codebook, 4)
    rng = np.random.default_rng(sum(map(ord, kind)))  # str hash() differs per process
    x = tricky_inputs(rng, (2, 2, 160, 128), np.sign(ref.rotation[0, 0]), "float64")
    flat = x.reshape(-1, 128)
    flat[1::3] = edge_rows(rng, len(flat[1::3]), 128, ref.rotation[0]) * rng.choice([0.5, 20.0])
    run_case(kernels, ref, codec, x.astype(dtype), ref.rotation, 1, codebook=codebook)


@pytest.mark.parametrize("cfg", FAST_CONFIGS, ids=lambda c: f"D{c[0]}-m{c[1]}-qjl{c[2]}-nc{c[3]}")
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("promise", [False, True], ids=["checked", "promised"])
def test_hadamard_fast_path_bit_exact(kernels, cfg, dtype, promise):
    """promised: R's structure and constant tables promised, as the ORT CUDA op does for constant initializers
    (the kernel skips its R check and builds its tables before it waits for the previous kernel)."""
    d, bits, qjl, nc = cfg
    ref, codec = build(d, bits, qjl, nc)
    rng = np.random.default_rng(d * 10 + bits)
    # 16 (b, h) pairs, 700 tokens: more tiles per head than blocks per head, so blocks loop (persistent grid).
    x = tricky_inputs(rng, (4, 4, 700, d), np.sign(ref.rotation[0, 0]), dtype)
    run_case(kernels, ref, codec, x, ref.rotation, 1, promise=promise)


def test_constant_tables_read_x_after_the_previous_kernel(kernels):
    """With constant_tables the prefill kernel is a programmatic dependent launch that builds its tables
    before it waits for the previous kernel; everything else must be read after that wait. Here x is the
    output of a decode attention launched just before it (its last kernel lets dependents start before it
    writes the output), zeroed before each attention call: codes read early would be those of zero rows."""
    import torch

    from bench.attention_gpu import hadamard_rotation
    from bench.gpu_harness.cases import decode_case

    ref, codec = build(128, 4, 0, 0)
    case = decode_case(4, 8, 4096)  # out [8, 32, 1, 128]: x [1, 1, 256, 128], the prefill kernel (S > 16)
    rot_attn = torch.from_numpy(hadamard_rotation(128)[None]).float().cuda()
    rot = torch.from_numpy(ref.rotation).cuda()
    cb = torch.from_numpy(ref.codebook).cuda()
    past = torch.empty((1, 1, 0, codec.row_bytes), dtype=torch.uint8, device="cuda")
    presents = []
    for i in range(3):
        out = torch.zeros_like(case.out)
        kernels.attention(
            case.codec, case.codec, case.q[i % case.copies], case.k_cache[i % case.copies],
            case.v_cache[i % case.copies], case.mask, rot_attn, case.codebook, rot_attn, case.codebook,
            scale=0.088, out=out, k_hadamard=True, v_hadamard=True,
        )  # fmt: skip
        x = out.view(1, 1, -1, 128)
        present = torch.full((1, 1, x.shape[2], codec.row_bytes), 0xA5, dtype=torch.uint8, device="cuda")
        kernels.quantize(codec, x, past, rot, cb, present_cache=present, hadamard=True, constant_tables=True)
        presents.append((x, present))
    torch.cuda.synchronize()
    for x, present in presents:
        xs = x.cpu().numpy()
        assert np.abs(xs).max() > 0.0, "the attention output is zero: the test would not see an early read"
        want, _ = reference_ops.tq_quantize(
            xs, np.zeros((1, 1, 0, codec.row_bytes), np.uint8), ref.rotation, ref.codebook, None, None,
            bits=codec.bits, part_sizes=codec.part_sizes, qjl=0, norm_correction=0,
        )  # fmt: skip
        bad = np.argwhere(present.cpu().numpy() != want)
        assert bad.size == 0, f"{len(bad)} bytes differ, first at {bad[:4].tolist()}"


@pytest.mark.parametrize("rotation", ["dense", "nudged"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_non_hadamard_rotation_takes_dense_branch_bit_exact(kernels, rotation, dtype):
    d, heads = 128, 3
    rng = np.random.default_rng(5)
    if rotation == "dense":
        ref, codec = build(d, 4, 1, 0, rotation="dense", seed=3)
        rot = np.concatenate(
            [build(d, 4, 1, 0, rotation="dense", seed=3 + i)[0].rotation for i in range(heads)]
        )
    else:
        ref, codec = build(d, 4, 0, 0)
        rot = np.repeat(ref.rotation, heads, axis=0)
        rot[1, 5, 7] = np.nextafter(rot[1, 5, 7], np.float32(2.0))  # head 1 only: its blocks go dense
    x = tricky_inputs(rng, (2, heads, 300, d), np.sign(ref.rotation[0, 0]), dtype)
    run_case(kernels, ref, codec, x, rot, rot.shape[0])


def near_boundary_inputs(rng: np.random.Generator, shape: tuple[int, ...], ref, dtype: str) -> np.ndarray:
    """Half of the rotated coordinates of each row on a Lloyd-Max boundary (then the input rounding moves
    them by ~1e-8 (float32) or ~1e-4 (float16)): most rows take the v3 kernel's exact float64 path for some
    coordinates."""
    d = shape[-1]
    m = ref.config.bits[0]
    cb = ref.codebook[0].astype(np.float64)
    bnd = (cb[: 2**m - 1] + cb[1 : 2**m]) / 2
    # u = 0 exactly is a float64-rounding tie for float32 inputs: any sign is valid
    bnd = bnd[np.abs(bnd) > 1e-9]
    n = int(np.prod(shape[:-1]))
    u = rng.standard_normal((n, d)) / np.sqrt(d)
    on = rng.random((n, d)) < 0.5
    u[on] = rng.choice(bnd, size=int(on.sum()))
    on_sq = np.sum(np.where(on, u, 0.0) ** 2, axis=1, keepdims=True)
    off_sq = np.sum(np.where(on, 0.0, u) ** 2, axis=1, keepdims=True)
    u = np.where(on, u, u * np.sqrt(np.maximum(1.0 - on_sq, 1e-6) / off_sq))
    y = u * rng.choice([1e-2, 1.0, 30.0], size=(n, 1))
    return (y @ ref.rotation[0].astype(np.float64)).reshape(shape).astype(dtype)


@pytest.mark.parametrize("cfg", [(128, 4), (128, 3), (64, 2), (256, 4)], ids=lambda c: f"D{c[0]}-m{c[1]}")
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_near_boundary_inputs_bit_exact(kernels, cfg, dtype):
    """v3: coordinates within the float32 error bound of a boundary are recomputed in float64
    (warp-cooperative)."""
    d, bits = cfg
    ref, codec = build(d, bits, 0, 0)
    x = near_boundary_inputs(np.random.default_rng(d + bits), (2, 2, 300, d), ref, dtype)
    run_case(kernels, ref, codec, x, ref.rotation, 1)


@pytest.mark.parametrize("nc", [0, 1])
def test_extreme_float32_scales_bit_exact(kernels, nc):
    """v3: rows whose float32 sum of squares underflows or overflows (x ~ 1e-25, 1e25), zero rows, and
    normal rows side by side: the first kind takes the exact path for every coordinate."""
    ref, codec = build(128, 4, 0, nc)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 2, 90, 128))
    flat = x.reshape(-1, 128)
    flat[::5] *= 1e-25
    flat[1::5] *= 1e25
    flat[2::9] = 0.0
    run_case(kernels, ref, codec, x.astype(np.float32), ref.rotation, 1)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("in_place", [False, True])
def test_buffer_mode_window_fast_path_bit_exact(kernels, dtype, in_place):
    """Buffer mode with sinks and a recent window on the Hadamard fast path: compressed tokens come from the
    past window's ring slots and from x, sequences of different lengths, 100+ tokens per step (several warp
    tiles)."""
    import torch

    from bench.gpu_harness.capi import BUFFER

    ref, codec = build(128, 3, 0, 0)
    ns, rw, cap, b, h, d, s = 2, 5, 400, 3, 2, 128, 130
    rng = np.random.default_rng(4)
    lengths = np.array([0, 9, 200], np.int64)
    cache = rng.integers(0, 256, (b, h, cap, codec.row_bytes), dtype=np.uint8)
    win = (rng.standard_normal((b, h, ns + rw, d)) * 3).astype(dtype)
    x = (rng.standard_normal((b, h, s, d)) * 3).astype(dtype)
    want_cache, want_win = reference_ops.tq_quantize(
        x,
        cache,
        ref.rotation,
        ref.codebook,
        None,
        win,
        lengths,
        bits=codec.bits,
        part_sizes=codec.part_sizes,
        qjl=0,
        norm_correction=0,
        cache_mode=BUFFER,
        sink_tokens=ns,
        recent_window=rw,
    )
    g_cache = torch.from_numpy(cache).cuda()
    g_win = torch.from_numpy(win).cuda()
    out_c, out_w = kernels.quantize(
        codec,
        torch.from_numpy(x).cuda(),
        g_cache,
        torch.from_numpy(ref.rotation).cuda(),
        torch.from_numpy(ref.codebook).cuda(),
        None,
        g_win,
        torch.from_numpy(lengths).cuda(),
        cache_mode=BUFFER,
        sink_tokens=ns,
        recent_window=rw,
        present_cache=g_cache if in_place else None,
        present_window=g_win if in_place else None,
    )
    torch.cuda.synchronize()
    np.testing.assert_array_equal(out_c.cpu().numpy(), want_cache)
    np.testing.assert_array_equal(out_w.cpu().numpy(), want_win)


def sanitize_main() -> None:
    """Small launches of each branch (Hadamard, dense, QJL, norm correction, window, buffer) to sanitize."""
    import torch

    from bench.gpu_harness.capi import BUFFER, Kernels

    k = Kernels()
    for d, bits, qjl, nc, rot_kind, dtype in (
        (128, 4, 0, 0, "hadamard", torch.float16),
        (128, 3, 1, 1, "hadamard", torch.float32),
        (64, 8, 0, 0, "dense", torch.float16),
        (256, 4, 1, 0, "hadamard", torch.float16),
        (256, 4, 0, 0, "hadamard", torch.float32),
        (64, 2, 0, 1, "hadamard", torch.float16),
    ):
        ref, codec = build(d, bits, qjl, nc, rotation=rot_kind)
        rot, cb = torch.from_numpy(ref.rotation).cuda(), torch.from_numpy(ref.codebook).cuda()
        qm = torch.from_numpy(ref.qjl_matrix).cuda() if qjl else None
        x = torch.randn((2, 2, 70, d), device="cuda", dtype=dtype)
        past = torch.empty((2, 2, 0, codec.row_bytes), dtype=torch.uint8, device="cuda")
        pw = torch.empty((2, 2, 0, d), dtype=dtype, device="cuda")
        # plain, and for a Hadamard R also promised (no R check, tables built before the wait for the previous
        # kernel)
        promised = {"hadamard": True, "constant_tables": True}
        for kw in [{}, promised] if rot_kind == "hadamard" else [{}]:
            k.quantize(codec, x, past, rot, cb, qm, pw, sink_tokens=2, recent_window=3, **kw)
            cache = torch.zeros((2, 2, 64, codec.row_bytes), dtype=torch.uint8, device="cuda")
            win = torch.randn((2, 2, 4, d), device="cuda", dtype=dtype)
            lengths = torch.tensor([3, 30], device="cuda")
            k.quantize(
                codec,
                x[:, :, :5] if not kw else x[:, :, :24],  # promised: 24 new tokens (the step kernel takes 5)
                cache,
                rot,
                cb,
                qm,
                win,
                lengths,
                cache_mode=BUFFER,
                sink_tokens=1,
                recent_window=3,
                present_cache=cache,
                present_window=win,
                **kw,
            )
    torch.cuda.synchronize()
    print("quantize sanitize cases ran")


if __name__ == "__main__":
    sanitize_main()
