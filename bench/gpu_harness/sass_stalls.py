"""Summarize an ncu per-SASS-line CSV (device_profile.sh writes ncu_<case>_sass.csv): instruction mix by
opcode, stall reasons, and the most-stalled lines.

    python3 bench/gpu_harness/sass_stalls.py OUT/ncu_3_32_32768_sass.csv [--top 20]
"""

from __future__ import annotations

import argparse
import collections
import csv

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def number(row: list[str], col: int) -> float:
    try:
        return float(row[col].replace(",", ""))
    except (ValueError, IndexError):
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    rows = list(csv.reader(open(args.csv, newline="")))
    starts = [i for i, r in enumerate(rows) if r and r[0] == "Kernel Name"]
    for k, start in enumerate(starts):  # one section per profiled kernel launch
        stop = starts[k + 1] if k + 1 < len(starts) else len(rows)
        header = rows[start + 1]
        col = {name: i for i, name in enumerate(header)}
        data = [r for r in rows[start + 2 : stop] if len(r) == len(header)]
        stalls = [n for n in header if n.startswith("stall_") and "Not Issued" not in n]
        executed = sum(number(r, col[EXECUTED]) for r in data) or 1.0
        samples = sum(number(r, col[SAMPLES]) for r in data) or 1.0
        by_op: collections.Counter[str] = collections.Counter()
        op_samples: collections.Counter[str] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        for r in data:
            words = r[col["Source"]].split()
            op = words[1] if words and words[0].startswith("@") and len(words) > 1 else (words or ["?"])[0]
            op = op.split(".")[0]
            by_op[op] += number(r, col[EXECUTED])
            op_samples[op] += number(r, col[SAMPLES])
            for s in stalls:
                reasons[s] += number(r, col[s])
        print(f"{rows[start][1][:100]}\n  warp instructions {executed:.4g}, stall samples {samples:.0f}")
        print("  opcode      % executed  % samples")
        for op, n in by_op.most_common(args.top):
            print(f"  {op:10s} {100 * n / executed:9.1f} {100 * op_samples[op] / samples:10.1f}")
        total = sum(reasons.values()) or 1.0
        print(
            "  stall reasons: "
            + ", ".join(f"{s[6:]} {100 * n / total:.1f}%" for s, n in reasons.most_common(8))
        )
        print("  most-stalled lines:")
        for r in sorted(data, key=lambda r: -number(r, col[SAMPLES]))[: args.top // 2]:
            why = max(stalls, key=lambda s: number(r, col[s]))
            share = 100 * number(r, col[SAMPLES]) / samples
            print(f"    {r[col['Address']]} {r[col['Source']][:56]:56s} {share:5.2f}% {why[6:]}")


if __name__ == "__main__":
    main()
