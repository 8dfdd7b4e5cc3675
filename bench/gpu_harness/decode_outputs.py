"""Save the decode kernel's outputs for a fixed set of cases (same inputs every run), so two harness builds
can be compared bit for bit:

    TQ_KERNELS_LIB=A python3 bench/gpu_harness/decode_outputs.py OUT_A.npz   (the same for B)
    python3 bench/gpu_harness/decode_outputs.py --compare OUT_A.npz OUT_B.npz
"""

from __future__ import annotations

import sys

import numpy as np

CASES = [  # (D, G, k bits, v bits, sink, recent, total, mask kind, splits)
    (64, 3, 4, 4, 0, 0, 104, "pad", 0),
    (64, 3, 4, 4, 4, 32, 104, "pad", 0),
    (64, 3, 4, 4, 4, 32, 104, "zero", 0),
    (64, 3, 4, 4, 4, 32, 700, "pad", 0),
    (128, 4, 4, 4, 0, 0, 4500, "zero", 0),
    (128, 4, 4, 4, 4, 32, 700, "pad", 0),
    (128, 4, 3, 3, 0, 0, 4500, "zero", 1),
    (64, 3, 3, 3, 4, 32, 104, "pad", 0),
    (128, 8, 4, 3, 4, 32, 700, "pad", 0),
    (128, 4, 4, 4, 0, 0, 4500, "pad", 3),
    (256, 2, 4, 4, 0, 0, 4500, "zero", 0),
    (256, 2, 3, 4, 4, 32, 700, "pad", 0),
]


def main() -> None:
    if sys.argv[1] == "--compare":
        a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
        for k in a.files:
            same = np.array_equal(a[k], b[k])
            diff = float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
            print(f"{k}: {'bit-identical' if same else f'differs, max |a - b| = {diff:.3e}'}")
        return
    sys.path.insert(0, ".")
    from bench.gpu_harness.capi import Kernels
    from tests.gpu.test_kernels_gpu import build, build_mask, dev, dev_wins, kernel_decode, make_cache

    kernels = Kernels()
    out = {}
    for d, g, kb, vb, ns, rw, total, kind, splits in CASES:
        rng = np.random.default_rng(7)
        hkv, b = 2, 3
        kref, kc = build(d, (d,), (kb,), 0, 0, "hadamard", heads=1, seed=3)
        vref, vc = build(d, (d,), (vb,), 0, 0, "hadamard", heads=1, seed=4)
        k_cache, k_win = make_cache(kref, rng, b, hkv, total, d, ns, rw, "float16")
        v_cache, v_win = make_cache(vref, rng, b, hkv, total, d, ns, rw, "float16")
        q = rng.standard_normal((b, hkv * g, 1, d)).astype("float16")
        mask = build_mask(kind, b, hkv * g, 1, total, rng, np.array([0, 3, total // 2]))
        args = [dev(x) for x in (q, k_cache, v_cache, mask, kref.rotation, kref.codebook, vref.rotation)]
        args.append(dev(vref.codebook))
        o = kernel_decode(kernels, kc, vc, args, dev_wins(k_win, v_win), ns, rw, splits)
        out[f"D{d}-G{g}-k{kb}v{vb}-w{ns}+{rw}-T{total}-{kind}-s{splits}"] = o.float().cpu().numpy()
    np.savez(sys.argv[1], **out)
    print("saved", sys.argv[1], len(out))


if __name__ == "__main__":
    main()
