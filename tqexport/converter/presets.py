"""Bit-width presets and the outlier split for fractional bit widths.

An integer width b is one part of D channels at b bits. A fractional width x.5 uses the outlier split
(docs/format.md section 2, P = 2): a quarter of the channels (the outliers, part 1) at floor(x) + 2 bits
and the
rest at floor(x) bits, so the mean is x.5 (2.5 = 1/4 * 4 + 3/4 * 2). When D / 4 is not a multiple of 16,
half the
channels at floor(x) + 1 and half at floor(x) (needs D % 32 == 0). Bits include the QJL bit when qjl is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tqexport.errors import UsageError

PRESETS: dict[str, tuple[float, float]] = {
    "2.5": (2.5, 2.5),
    "3": (3.0, 3.0),
    "3.5": (3.5, 3.5),
    "4": (4.0, 4.0),
    "k4v2.5": (4.0, 2.5),
    "8": (8.0, 8.0),
}


@dataclass(frozen=True)
class PartSplit:
    part_sizes: tuple[int, ...]
    bits: tuple[int, ...]

    @property
    def is_split(self) -> bool:
        return len(self.part_sizes) > 1

    @property
    def mean_bits(self) -> float:
        return sum(d * b for d, b in zip(self.part_sizes, self.bits, strict=True)) / sum(self.part_sizes)


def resolve_preset(name: str) -> tuple[float, float]:
    key = name.removeprefix("tq")
    if key not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[key]


def part_split(bits: float, head_dim: int) -> PartSplit:
    """Parts and bits for a (possibly fractional) bit width at head dim D."""
    if bits == int(bits):
        return PartSplit((head_dim,), (int(bits),))
    low = math.floor(bits)
    if bits - low != 0.5:
        raise UsageError(f"bit width {bits}: only whole numbers and x.5 are supported")
    if head_dim % 64 == 0:
        outliers = head_dim // 4
        return PartSplit((outliers, head_dim - outliers), (low + 2, low))
    if head_dim % 32 == 0:
        return PartSplit((head_dim // 2, head_dim // 2), (low + 1, low))
    raise UsageError(f"bit width {bits} needs the outlier split, which needs D % 32 == 0; D={head_dim}")
