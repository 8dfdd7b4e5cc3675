"""CPU emulation of the v4 quantize kernel's arithmetic (plugins/kernels/quantize_hadamard.cuh, namespace v4).

Float32 butterflies in the kernel's order, the sum of squares in its chains, rsqrtf modelled as the
correctly rounded value moved by up to 2 ulp, the 513-cell table (4 * code entries) or the float32 binary
search, the 2^-19 pending margin, the exact float64 recomputation, the float16 gamma margin, and the row
packing (shifts, multiplies, prmt), compared byte for byte with reference_ops.tq_quantize. Not CUDA (no
indexing, no warps): it checks the error bound and the bit layouts without device time.

    python3 bench/gpu_harness/quant_emulate.py   (prints ALL OK)
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tqexport.codec import Codec as RefCodec
from tqexport.codec import CodecConfig, reference_ops

f32 = np.float32
EPS = f32(2.0**-19)
CPT = 32  # coordinates per thread (v4; v3 was 64)


def fma32(a, b, c):
    return (a.astype(np.float64) * np.float64(b) + np.float64(c)).astype(np.float32)


def count_below(bnd, u):  # strict
    return np.searchsorted(bnd, u, side="left")


def coord_of(tpv, t, k):
    """The kernel's coord_of: register k of slice t after the half exchanges (runs of 8, or 16 at D = 64)."""
    if tpv == 2:
        return (k & 15) | ((t & 1) << 4) | (((k >> 4) & 1) << 5)
    run = (((t >> 1) & 1) << 3) | ((t & 1) << 4) | ((t >> 2) << 7)
    return (k & 7) | run | (((k >> 4) & 1) << 5) | (((k >> 3) & 1) << 6)


def nibble_boundary(v, nib):
    """The kernel table entry: the float32 nearest to v with low mantissa nibble nib (sign kept, -0 as +0)."""
    bits = 0 if v == 0.0 else int(np.array(v, np.float32).view(np.uint32))
    sign, mag = bits & 0x80000000, bits & 0x7FFFFFF0
    cands = [mag, mag + 16] + ([mag - 16] if mag >= 16 else [])
    vals = [np.array(sign | c | nib, np.uint32).view(np.float32) for c in cands]
    errs = [abs(float(c) - v) for c in vals]
    return vals[int(np.argmin(errs))]  # first of equals: the kernel keeps the earlier candidate on a tie


def group_sum(parts):
    """The kernel's xor-shuffle sum over TPV lanes (float32, commutative: lane 0's value is everyone's)."""
    vals = list(parts)
    o = 1
    while o < len(vals):
        vals = [(vals[t & ~o] + vals[t | o]).astype(np.float32) for t in range(len(vals))]
        o <<= 1
    return vals[0]


def emulate(x, rot, codebook, bits, nc, rng, perturb=True, stats=None):
    B, H, S, D = x.shape
    m = bits
    ncent = 1 << m
    cb = codebook[0].astype(np.float32)
    bound64 = np.full(256, 4.0)
    bound64[: ncent - 1] = (cb[: ncent - 1].astype(np.float64) + cb[1:ncent].astype(np.float64)) * 0.5
    b32 = bound64.astype(np.float32)
    # cells: candidate boundary as the float32 carrying the code below it in its low mantissa nibble
    use_table = m <= 4
    cells = np.zeros(513, np.float32)
    if m <= 4:
        for k in range(513):
            lo = -np.inf if k == 0 else (4 * k - 0.5) / 1024 - 1 - 2.0**-16
            hi = np.inf if k == 512 else (4 * k + 3.5) / 1024 - 1 + 2.0**-16
            below = int(np.sum(bound64[: ncent - 1] <= lo))
            inside = np.sum(bound64[: ncent - 1] < hi) - below
            nb = nibble_boundary(bound64[below], below)
            if inside > 1 or (below + 1 < ncent and not abs(float(nb) - bound64[below]) <= 2.0**-21):
                use_table = False
            cells[k] = nb
    row0 = rot[0, 0]
    c32 = f32(abs(row0[0]))
    c64 = float(c32)
    s = row0 < 0
    lay_rb = D * m // 8 + 2
    xs = x.reshape(-1, D)
    n_vec = xs.shape[0]
    z = xs.astype(np.float32).copy()
    z[:, s] = -z[:, s]
    # S32: per thread 8 chains (k & 7) over its CPT coordinates, tree, group sum over TPV lanes (xor shuffles)
    TPV = D // CPT
    parts = []
    for t in range(TPV):
        acc = np.zeros((n_vec, 8), np.float32)
        for k in range(CPT):
            acc[:, k & 7] = fma32(z[:, CPT * t + k], z[:, CPT * t + k], acc[:, k & 7])
        st = ((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])) + (
            (acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7])
        )
        parts.append(st)
    tot = group_sum(parts)
    s32 = tot.astype(np.float32)
    # butterflies float32
    r = z.copy()
    bit = 1
    while bit < D:
        idx = np.arange(D)
        lo_i = idx[(idx & bit) == 0]
        a = r[:, lo_i].copy()
        bb = r[:, lo_i | bit].copy()
        r[:, lo_i] = a + bb
        r[:, lo_i | bit] = a - bb
        bit <<= 1
    sd = (s32 * f32(D)).astype(np.float32)
    in_range = (s32 >= f32(2.0**-60)) & (s32 <= f32(2.0**60))
    zero = (x.dtype == np.float16) & (s32 == 0)
    with np.errstate(all="ignore"):
        inv = np.where(in_range, (f32(1) / np.sqrt(sd)).astype(np.float32), f32(0))
        if perturb:  # rsqrtf: up to 2 ulp
            ulp = np.spacing(inv).astype(np.float32)
            inv = (inv + rng.integers(-2, 3, size=inv.shape).astype(np.float32) * ulp).astype(np.float32)
        codes = np.zeros((n_vec, D), np.int64)
        pend = np.zeros((n_vec, D), bool)
        if use_table:
            i256 = (inv * f32(256)).astype(np.float32)
            g = r.astype(np.float64) * i256[:, None].astype(np.float64) + 2097408.0
            g = np.nan_to_num(g.astype(np.float32), nan=2097408.0)
            idx = ((g.view(np.int32) & 0xFFC) >> 2).astype(np.int64)
            cells_ext = np.concatenate([cells, np.full(1024 - 513, cells[512])])
            beta = cells_ext[idx]
            e = (beta.view(np.int32) & 0xF).astype(np.int64)
            d = fma32(-r, inv[:, None], beta.astype(np.float64))  # beta - u, one rounding
            codes = e + np.signbit(d)  # plus d's sign bit (d == 0 is pending, or exact in zero vectors)
            top7 = (d.view(np.uint32) >> np.uint32(24)) & np.uint32(0x7F)
            pend = top7 < 54  # the kernel's test on the exponent bits of d's top byte: |d| < 2^-19
            assert np.array_equal(pend, np.abs(d) < EPS)  # NaN d: neither
        else:
            u = (r * inv[:, None]).astype(np.float32)
            pos = np.searchsorted(b32[: ncent - 1], u, side="left")  # count b32 < u
            codes = pos
            b32x = np.concatenate([[f32(-4.0)], b32[: ncent - 1], [f32(4.0)]])
            pend = (np.abs(u - b32x[pos + 1]) <= EPS) | (np.abs(u - b32x[pos]) <= EPS)
    range_bad = ~in_range & ~zero
    pend[zero] = False
    pend[range_bad] = True
    # gamma fast
    with np.errstate(all="ignore"):
        g32 = (c32 * np.sqrt(sd)).astype(np.float32)
        gm = f32(2.0**-19)
        if nc:
            cv = cb[np.clip(codes, 0, 255)]
            csp = []
            for t in range(TPV):
                ca = np.zeros((n_vec, 4), np.float32)
                for k in range(CPT):
                    ca[:, k & 3] = fma32(cv[:, CPT * t + k], cv[:, CPT * t + k], ca[:, k & 3])
                csp.append((ca[:, 0] + ca[:, 1]) + (ca[:, 2] + ca[:, 3]))
            cs = group_sum(csp)
            rs = (f32(1) / np.sqrt(cs)).astype(np.float32)
            g32 = np.where(g32 > 0, (g32 * rs).astype(np.float32), f32(0))
            gm = f32(2.0**-18)
        lo = np.minimum((g32 * (f32(1) - gm)).astype(np.float32), f32(65504)).astype(np.float16)
        hi = np.minimum((g32 * (f32(1) + gm)).astype(np.float32), f32(65504)).astype(np.float16)
    g16 = lo.view(np.uint16).copy()
    need64 = range_bad | pend.any(axis=1) | (lo.view(np.uint16) != hi.view(np.uint16))
    # exact path
    xd = xs.astype(np.float64)
    with np.errstate(all="ignore"):
        n64 = c64 * np.sqrt(np.sum(xd * xd, axis=1) * D)
    zc = count_below(bound64[: ncent - 1], 0.0)
    Hs = (
        np.array([[(-1) ** bin(i & j).count("1") for j in range(D)] for i in range(D)], np.float64)
        * np.where(s, -1.0, 1.0)[None, :]
    )
    npend = 0
    for v in np.nonzero(need64)[0]:
        for i in np.nonzero(pend[v])[0]:
            npend += 1
            if not (n64[v] > 0):
                codes[v, i] = zc
                continue
            rr = np.sum(Hs[i] * xd[v])
            y = c64 * rr
            codes[v, i] = count_below(bound64[: ncent - 1], y / n64[v])
        if nc:
            cs64 = np.sum(cb[codes[v]].astype(np.float64) ** 2)
            gam = (n64[v] / np.sqrt(cs64)) if n64[v] > 0 else 0.0
        else:
            gam = n64[v]
        g16[v] = (
            np.array(min(gam, 65504.0) if not np.isnan(gam) else 65504.0).astype(np.float16).view(np.uint16)
        )
    if stats is not None:
        stats["pend"] = stats.get("pend", 0) + npend
        stats["need"] = stats.get("need", 0) + int(need64.sum())
        stats["vec"] = stats.get("vec", 0) + n_vec
    # packing via the kernel's bit tricks, per thread
    rows = np.zeros((n_vec, lay_rb), np.uint8)
    # table codes: bits 4..7 of each byte hold the boundary's mantissa bits (garbage the packing masks off).
    # After the half exchanges register k of slice t holds coordinate coord_of(TPV, t, k).
    junk = np.uint64(0xF0) if use_table else np.uint64(0)
    owner = sorted(coord_of(TPV, t, k) for t in range(TPV) for k in range(CPT))
    assert owner == list(range(D)), "coord_of must cover each coordinate once"
    cw = np.zeros((n_vec, TPV, CPT // 4), np.uint64)
    for t in range(TPV):
        for k in range(CPT):
            cw[:, t, k >> 2] |= (
                (codes[:, coord_of(TPV, t, k)].astype(np.uint64) | (junk & np.uint64(16 * (k % 16)))) & 0xFF
            ) << np.uint64(8 * (k & 3))
    cw = cw.astype(np.uint32)

    def put(vrow_bytes, off, word):
        for bt in range(4):
            vrow_bytes[:, off + bt] = ((word >> np.uint32(8 * bt)) & np.uint32(0xFF)).astype(np.uint8)

    def byte_perm(a, c, sel):
        src = [(a >> np.uint32(8 * i)) & np.uint32(0xFF) for i in range(4)] + [
            (c >> np.uint32(8 * i)) & np.uint32(0xFF) for i in range(4)
        ]
        out = np.zeros_like(a)
        for i in range(4):
            out |= src[(sel >> (4 * i)) & 7] << np.uint32(8 * i)
        return out

    u32 = np.uint32

    def put8(off, byte):
        rows[:, off] = (byte & u32(0xFF)).astype(np.uint8)

    def put16(off, half):
        put8(off, half)
        put8(off + 1, half >> u32(8))

    def nib1(w, shift):  # the 1-bit field of 4 code bytes -> 4 bits
        return ((((w >> u32(shift)) & u32(0x01010101)) * u32(0x01020408)) >> u32(24)) & u32(0xF)

    def byte2(w, shift):  # the 2-bit field of 4 code bytes -> 1 byte
        return (((w >> u32(shift)) & u32(0x03030303)) * u32(0x01041040)) >> u32(24)

    for t in range(TPV):
        for ch in range(4):  # chunk: registers 8 ch .. 8 ch + 7 = coordinates cs .. cs + 7
            cs = coord_of(TPV, t, 8 * ch)
            w0, w1 = cw[:, t, 2 * ch], cw[:, t, 2 * ch + 1]
            if use_table and m == 3:  # the kernel's constant-mask branch (code bits 0..2, garbage in 4..7)
                f0 = (w0 & u32(0x03030303)) * u32(0x01041040)
                f1 = (w1 & u32(0x03030303)) * u32(0x01041040)
                put16(cs // 4, byte_perm(f0, f1, 0x0073))
                b0 = ((w0 & u32(0x04040404)) * u32(0x04081020)) >> u32(28)
                b1 = ((w1 & u32(0x04040404)) * u32(0x04081020)) >> u32(28)
                put8(D // 4 + cs // 8, b0 | (b1 << u32(4)))
                continue
            if use_table and m == 4:  # the kernel's constant-mask branch: two words of code bytes -> 8 codes
                a = (w0 & u32(0x0F0F0F0F)) * u32(0x110)
                c = (w1 & u32(0x0F0F0F0F)) * u32(0x110)
                put(rows, cs // 2, byte_perm(a, c, 0x7531))
                continue
            shift = 0
            seg = 0
            if m & 8:
                put(rows, seg + cs, w0)
                put(rows, seg + cs + 4, w1)
                seg += D
                shift += 8
            if m & 4:
                a = (w0 >> u32(shift)) & u32(0x0F0F0F0F)
                c = (w1 >> u32(shift)) & u32(0x0F0F0F0F)
                a |= a >> u32(4)
                c |= c >> u32(4)
                put(rows, seg + cs // 2, byte_perm(a, c, 0x6420))
                seg += D // 2
                shift += 4
            if m & 2:
                put16(seg + cs // 4, byte2(w0, shift) | (byte2(w1, shift) << u32(8)))
                seg += D // 4
                shift += 2
            if m & 1:
                put8(seg + cs // 8, nib1(w0, shift) | (nib1(w1, shift) << u32(4)))
    rows[:, lay_rb - 2] = (g16 & 0xFF).astype(np.uint8)
    rows[:, lay_rb - 1] = (g16 >> 8).astype(np.uint8)
    return rows.reshape(B, H, S, lay_rb)


def check(d, bits, nc, dtype, x_maker, seed=0, nvec=(2, 2, 500), symmetric=False):
    rng = np.random.default_rng(seed)
    ref = RefCodec.build(
        CodecConfig(head_dim=d, bits=(bits,), norm_correction=bool(nc), rotation="hadamard", seed=seed)
    )
    codebook = ref.codebook
    if symmetric:  # exactly antisymmetric centroids: the middle boundary is exactly 0
        codebook = ((codebook - codebook[:, ::-1]) / 2).astype(codebook.dtype)
    x = x_maker(rng, (*nvec, d), ref).astype(dtype)
    want, _ = reference_ops.tq_quantize(
        x,
        np.zeros((nvec[0], nvec[1], 0, d * bits // 8 + 2), np.uint8),
        ref.rotation,
        codebook,
        None,
        None,
        bits=(bits,),
        part_sizes=(d,),
        qjl=0,
        norm_correction=nc,
    )
    st = {}
    got = emulate(x, ref.rotation, codebook, bits, nc, rng, stats=st)
    bad = np.argwhere(got != want)
    print(
        f"D{d} m{bits} nc{nc} {dtype}: {len(bad)} bad bytes; pending coords {st['pend']}, "
        f"exact vectors {st['need']}/{st['vec']}",
        bad[:3].tolist(),
    )
    return len(bad) == 0


def gauss(rng, shape, ref):
    return rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 40.0], size=shape[:-1] + (1,))


def tricky(rng, shape, ref):
    x = gauss(rng, shape, ref)
    signs = np.sign(ref.rotation[0, 0])
    flat = x.reshape(-1, shape[-1])
    flat[0] = 0.0
    for i in range(1, flat.shape[0], 7):
        flat[i] = signs * rng.integers(-2, 3, shape[-1])
    for i in range(3, flat.shape[0], 11):
        flat[i] = 0.0
        flat[i, :2] = signs[:2] * 3.0
    return x


def near_boundary(rng, shape, ref):
    """Rotated coordinates on boundaries: y = n * u with u_i = a boundary (or its neighbour), x = R^T y."""
    d = shape[-1]
    cb = ref.codebook[0].astype(np.float64)
    m = ref.config.bits[0]
    bnd = (cb[: 2**m - 1] + cb[1 : 2**m]) / 2
    bnd = bnd[np.abs(bnd) > 1e-12] if np.any(np.abs(bnd) > 1e-12) else np.array([0.05, -0.05])
    n = int(np.prod(shape[:-1]))
    u = rng.choice(bnd, size=(n, d)) * (1 + rng.standard_normal((n, d)) * 1e-7)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    u *= np.linalg.norm(u, axis=1, keepdims=True)  # keep
    y = u * rng.choice([1e-2, 1.0, 30.0], size=(n, 1))
    R = ref.rotation[0].astype(np.float64)
    x = y @ R  # R^T y for rows: x = y R (R orthogonal-ish)
    return x.reshape(shape)


def extreme(rng, shape, ref):
    x = gauss(rng, shape, ref)
    flat = x.reshape(-1, shape[-1])
    flat[::5] *= 1e-25
    flat[1::5] *= 1e25
    flat[2::5] = 0.0
    return x


if __name__ == "__main__":
    ok = True
    for d, bits, nc in [
        (128, 4, 0),
        (128, 3, 0),
        (128, 2, 1),
        (64, 8, 0),
        (256, 4, 0),
        (128, 1, 0),
        (64, 4, 1),
        (256, 3, 1),
        (128, 7, 0),
        (64, 6, 0),
        (256, 5, 1),
    ]:
        for dtype in ("float16", "float32"):
            for mk in (tricky, near_boundary):
                ok &= check(d, bits, nc, dtype, mk, seed=d + bits)
    ok &= check(128, 4, 0, "float32", extreme, nvec=(1, 2, 100))
    for bits in (1, 2, 4):  # a boundary at exactly 0 and zero vectors (tricky's first row)
        ok &= check(128, bits, 0, "float16", tricky, seed=bits, symmetric=True)
    print("ALL OK" if ok else "FAIL")
