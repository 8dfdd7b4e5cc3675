"""Where one decode-attention call's time goes, phase by phase (timing builds only).

    TQ_EXTRA_FLAGS=-DTQ_STAMPS=1 bash bench/gpu_harness/smallt_build.sh stamps . minimal
    TQ_KERNELS_LIB=build/gpu_stamps/libtq_kernels_harness.so \\
        python3 bench/gpu_harness/chain_stamps.py [--cases bits:B:T,...]

With -DTQ_STAMPS=1 thread 0 of every decode-kernel and reduce-kernel block records the global timer at
numbered points (plugins/kernels/tq_device.cuh `stamp`; slots below). Same inputs as smallt_sweep.py (Hq 32,
Hkv 8, D 128, fp16 q, float mask, Hadamard R promised). For each case: the graph-replay time per call (bench
timer), then the stamps of the last call of that replay, in ns after the first decode block's entry: min /
median / max over blocks. Never asserts; the stamps cost a few stores per block, so times read a little high.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.attention_gpu import HKV, HQ, D, hadamard_rotation  # noqa: E402
from bench.gpu_harness.capi import Kernels  # noqa: E402
from bench.gpu_harness.cases import decode_case  # noqa: E402
from bench.gpu_harness.timing import time_graph_us  # noqa: E402

BLOCKS, SLOTS = 4096, 16
REDUCE0 = 2048
DECODE_SLOTS = {  # slot: name, in chain order
    0: "entry",
    11: "split range known",
    12: "stage layout",
    8: "prologue copies issued",
    1: "tables filled, before q rotation",
    2: "q rotated (barrier)",
    3: "tile 0 arrived",
    4: "loop done (barrier)",
    5: "warps merged (barrier)",
    6: "o written / partials written",
    13: "cluster: partials sent (copies issued)",
    14: "cluster: partials arrived (reducers)",
    7: "output written (one split)",
}
REDUCE_SLOTS = ("entry", "after pdl_wait", "split weights", "output written")


def read_stamps(lib: ctypes.CDLL, reader: str = "tq_stamps_read") -> np.ndarray:
    """The stamps of one translation unit's kernels ([BLOCKS, 2 SLOTS]: ns, then SM clocks), cleared after;
    reader: its extern "C" function (attention.cu's tq_stamps_read, quantize.cu's tq_quant_stamps_read)."""
    fn = getattr(lib, reader)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    buf = (ctypes.c_ulonglong * (BLOCKS * 2 * SLOTS))()
    rc = fn(buf, BLOCKS * 2 * SLOTS, 1)
    if rc != 0:
        raise RuntimeError(f"{reader}: cuda error {rc}")
    return np.frombuffer(buf, dtype=np.uint64).reshape(BLOCKS, 2 * SLOTS).astype(np.int64)


def summarize(st: np.ndarray, decode_blocks: int, reduce_blocks: int) -> list[str]:
    dec = st[:decode_blocks, :SLOTS]
    entry = dec[:, 0]
    live = entry > 0
    t0 = entry[live].min()
    lines = []

    def row(name: str, vals: np.ndarray) -> None:
        v = vals[vals > 0] - t0
        if v.size:
            lines.append(
                f"  {name:<36s} {np.min(v):8d} {int(np.median(v)):8d} {np.max(v):8d}   ({v.size} blocks)"
            )

    lines.append(f"  {'decode kernel, ns after first entry':<36s} {'min':>8s} {'median':>8s} {'max':>8s}")
    for s, name in DECODE_SLOTS.items():
        row(name, dec[live, s])
    red = st[REDUCE0 : REDUCE0 + reduce_blocks, :SLOTS]
    for s, name in enumerate(REDUCE_SLOTS):
        row("reduce: " + name, red[:, s])
    clk = st[:decode_blocks, SLOTS:][live]
    cyc = []
    order = list(DECODE_SLOTS)
    for a, b in zip(order, order[1:], strict=False):
        ok = (clk[:, a] > 0) & (clk[:, b] > 0) & (dec[live, b] > 0)
        if ok.any():
            cyc.append(f"{a}->{b} {int(np.median(clk[ok, b] - clk[ok, a]))}")
    lines.append("  decode block phases, SM cycles (median): " + ", ".join(cyc))
    return lines


def run_case(kern: Kernels, rot, bits: int, b: int, t: int) -> None:
    import torch

    c = decode_case(bits, b, t)

    def call(i: int) -> None:
        kern.attention(
            c.codec, c.codec, c.q[i], c.k_cache[i], c.v_cache[i], c.mask, rot, c.codebook, rot, c.codebook,
            scale=0.088, out=c.out, k_hadamard=True, v_hadamard=True,
        )  # fmt: skip

    read_stamps(kern.lib)
    us = time_graph_us(call, c.copies)
    torch.cuda.synchronize()
    graph_st = read_stamps(kern.lib)
    call(0)
    torch.cuda.synchronize()
    single_st = read_stamps(kern.lib)
    nblocks = int((graph_st[:REDUCE0, 0] > 0).sum())
    nred = int((graph_st[REDUCE0:, 0] > 0).sum())
    print(f"\n{bits}-bit B={b} T={t}: {us:.2f} us per call (graph replay); {nblocks} decode, {nred} reduce")
    print(" last call of the graph replay:")
    print("\n".join(summarize(graph_st, REDUCE0, nred)))
    print(" one call after a sync:")
    print("\n".join(summarize(single_st, REDUCE0, nred)))


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="4:1:128,4:1:1024,3:1:1024,4:8:1024,4:1:4096")
    args = ap.parse_args()
    kern = Kernels()
    rot = torch.from_numpy(hadamard_rotation(D)[None]).float().cuda()
    print(f"{torch.cuda.get_device_name()}; Hq={HQ} Hkv={HKV} D={D}; hadamard R promised; stamps build")
    for case in args.cases.split(","):
        bits, b, t = (int(x) for x in case.split(":"))
        run_case(kern, rot, bits, b, t)


if __name__ == "__main__":
    main()
