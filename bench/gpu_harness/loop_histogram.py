"""Opcode histogram of a decode kernel's tile loop, from `cuobjdump -sass` text.

The loop is the innermost backward branch that encloses every HMMA of the function (the tile loop of
tq_attention_decode_kernel). Used for the static instruction counts in bench/NOTES.md.

    cuobjdump -sass build/gpu_NAME/libtq_kernels_harness.so > /tmp/sass.txt
    python3 bench/gpu_harness/loop_histogram.py /tmp/sass.txt ILi3ELi3ELi0ELb0ELb0ELi4ELi128EE

The second argument is any substring of the mangled function name (here: K 3-bit, V 3-bit, float mask, no
soft-cap, G <= 8, 4 warps, D = 128); every matching function is reported.
"""

from __future__ import annotations

import collections
import re
import sys

_INSTR = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"BRA.*?0x([0-9a-f]+)")
_PRED = re.compile(r"^@!?U?P\w+\s+")


def parse_function(text: str) -> list[tuple[int, str]]:
    """(address, instruction) pairs of one function's SASS."""
    out = []
    for line in text.split("\n"):
        m = _INSTR.match(line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    return out


def tile_loop(instrs: list[tuple[int, str]]) -> tuple[int, int] | None:
    """Address range of the innermost backward branch enclosing every HMMA, or None."""
    hmma = [a for a, t in instrs if "HMMA" in t]
    if not hmma:
        return None
    best: tuple[int, int] | None = None
    for addr, text in instrs:
        m = _BRANCH.search(text)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target <= hmma[0] and addr >= hmma[-1] and (best is None or target > best[0]):
            best = (target, addr)
    return best


def histogram(instrs: list[tuple[int, str]], lo: int, hi: int) -> collections.Counter[str]:
    ops: collections.Counter[str] = collections.Counter()
    for addr, text in instrs:
        if lo <= addr <= hi:
            ops[_PRED.sub("", text).split()[0].split(".")[0]] += 1
    return ops


def main() -> None:
    path, want = sys.argv[1], sys.argv[2]
    for chunk in open(path).read().split("Function : ")[1:]:
        name = chunk.split("\n", 1)[0].strip()
        if want not in name:
            continue
        instrs = parse_function(chunk)
        loop = tile_loop(instrs)
        if loop is None:
            print(f"{name}: no HMMA loop")
            continue
        ops = histogram(instrs, *loop)
        print(f"{name}: loop {loop[0]:#x}..{loop[1]:#x}, {sum(ops.values())} instructions")
        print("  " + ", ".join(f"{op} {n}" for op, n in ops.most_common(16)))


if __name__ == "__main__":
    main()
