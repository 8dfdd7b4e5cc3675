"""Where a prefill quantize call's time goes, phase by phase (timing builds only).

    nvcc <the flags of smallt_build.sh> -DTQ_STAMPS=1 -c plugins/kernels/quantize.cu -o build/gpu_qs/obj/...
    TQ_KERNELS_LIB=build/gpu_qs/libtq_kernels_harness.so python3 bench/gpu_harness/quant_stamps.py [--s 4096]

With -DTQ_STAMPS=1 thread 0 of every v4 quantize block records the global timer (ns) at: 0 entry, 1 setup
done (after its last barrier), 2 warp 0's first tile arrived, 3 loop done, 4 exit (its bulk stores complete),
and its SM and warp 0's tile count. Case: bench/quantize_gpu.py's B=8 Hkv=8 D=128 float16 4-bit, Hadamard R
promised, as a plain launch and with constant_tables (the setup before the wait for the previous kernel). For
each: the graph-replay time per call, then the stamps of the replay's last call in ns after the first block's
entry (min / median / max over blocks), the span from the first entry to the last exit, the per-block phase
medians, and the SMs' last exits by how many blocks they ran. Never asserts; the stamps cost a few stores per
block.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu_harness.capi import Kernels  # noqa: E402
from bench.gpu_harness.chain_stamps import SLOTS, read_stamps  # noqa: E402
from bench.gpu_harness.timing import time_graph_us  # noqa: E402
from bench.quantize_gpu import prefill_case  # noqa: E402

READER = "tq_quant_stamps_read"  # quantize.cu's stamps (tq_device.cuh's g_stamps of that translation unit)

NAMES = {0: "entry", 1: "setup done", 2: "first tile arrived", 3: "loop done", 4: "exit"}  # 5 SM + 1, 6 tiles


def summarize(st: np.ndarray) -> list[str]:
    ns = st[:, :SLOTS]
    live = ns[:, 0] > 0
    t0 = ns[live, 0].min()
    lines = [f"  {'ns after first entry':<22s} {'min':>8s} {'median':>8s} {'max':>8s}"]
    for s, name in NAMES.items():
        v = ns[live, s]
        v = v[v > 0] - t0
        if v.size:
            lines.append(f"  {name:<22s} {v.min():8d} {int(np.median(v)):8d} {v.max():8d}  ({v.size} blocks)")
    ex = ns[live, 4]
    lines.append(f"  span first entry -> last exit: {ex.max() - t0} ns")
    phases = []
    for a, b in ((0, 1), (1, 2), (2, 3), (3, 4), (0, 4)):
        ok = (ns[live, a] > 0) & (ns[live, b] > 0)
        if ok.any():
            phases.append(f"{a}->{b} {int(np.median(ns[live, b][ok] - ns[live, a][ok]))}")
    lines.append("  per block, median ns: " + ", ".join(phases))
    sm = ns[live, 5] - 1
    if (sm >= 0).all():
        exits = ns[live, 4] - t0
        per_sm: dict[int, list[int]] = {}
        for s_id, e in zip(sm.tolist(), exits.tolist(), strict=True):
            per_sm.setdefault(s_id, []).append(e)
        for nb in sorted({len(v) for v in per_sm.values()}):
            fin = np.array([max(v) for v in per_sm.values() if len(v) == nb])
            lines.append(
                f"  SMs with {nb} block(s): {fin.size:3d}, last exit min/median/max "
                f"{fin.min()} / {int(np.median(fin))} / {fin.max()} ns"
            )
        td = ns[live, 6]
        lines.append(
            f"  tiles of warp 0 per block: min {td.min()}, median {int(np.median(td))}, max {td.max()}"
        )
    return lines


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--s", type=int, nargs="+", default=[4096, 1024])
    args = ap.parse_args()
    kern = Kernels()
    print(torch.cuda.get_device_name())
    for s in args.s:
        case = prefill_case(4, 0, "hadamard", "float16", 8, s, 4)
        for early in (False, True):
            mode = "constant_tables" if early else "plain launch"
            read_stamps(kern.lib, READER)
            us = time_graph_us(lambda i, c=case, e=early: c.run(kern, i, True, e), 4)
            torch.cuda.synchronize()
            st = read_stamps(kern.lib, READER)
            print(f"\nS={s} {mode}: {us:.2f} us per call (graph replay), last call of the replay:")
            print("\n".join(summarize(st)))
            case.run(kern, 0, True, early)
            torch.cuda.synchronize()
            print(" one call after a sync:")
            print("\n".join(summarize(read_stamps(kern.lib, READER))))


if __name__ == "__main__":
    main()
