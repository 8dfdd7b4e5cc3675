"""Per-row table of an A/B timing (bench/gpu_harness/ab_shapes.sh): each build's two rounds and its change
against the first build (mean of the rounds).  python3 ab_table.py OUT SET LIB[@VAR=VALUE,...]...
python3 ab_table.py --name SPEC prints the log name of one build spec."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROW = re.compile(r"^\s+(\S+)\s+(\d+)\s+(\d+)\s+([\d.]+)")


def rows(path: Path) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        m = ROW.match(line)
        if m:
            out[(m.group(1), m.group(2), m.group(3))] = float(m.group(4))
    return out


def spec_name(spec: str) -> str:
    """Log name of a build spec LIB[@VAR=VALUE,...]: the library's folder, then the settings."""
    lib, _, envs = spec.partition("@")
    name = Path(lib).parent.name
    return f"{name}_{re.sub('[=,]', '', envs)}" if envs else name


def main() -> None:
    if sys.argv[1] == "--name":
        print(spec_name(sys.argv[2]))
        return
    out, tag, libs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    names = [spec_name(lib) for lib in libs]
    runs = {n: [rows(out / f"ab_{tag}_{n}_{r}.log") for r in (1, 2)] for n in names}
    base = names[0]
    print("bits B T | " + " | ".join(f"{n} r1 r2" for n in names) + " | " + " | ".join(names[1:]))
    for key in runs[base][0]:
        cells, means = [], []
        for n in names:
            vals = [r.get(key, float("nan")) for r in runs[n]]
            cells.append(" ".join(f"{v:.1f}" for v in vals))
            means.append(sum(vals) / 2)
        change = " | ".join(f"{100 * (m / means[0] - 1):+.1f}%" for m in means[1:])
        print(f"{' '.join(key)} | " + " | ".join(cells) + f" | {change}")


if __name__ == "__main__":
    main()
