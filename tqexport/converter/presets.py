"""Bit-width presets, the outlier split for fractional bit widths, and explicit part specs.

An integer width b is one part of D channels at b bits. A fractional width x.5 uses the outlier split
(docs/format.md section 2, P = 2): a quarter of the channels (the outliers, part 1) at floor(x) + 2 bits
and the
rest at floor(x) bits, so the mean is x.5 (2.5 = 1/4 * 4 + 3/4 * 2). When D / 4 is not a multiple of 16,
half the
channels at floor(x) + 1 and half at floor(x) (needs D % 32 == 0). Bits include the QJL bit when qjl is on.

A part spec names the parts directly: "16@5+48@2" is 16 channels at 5 bits (the 16 with the largest
calibration scores: part 1 holds the outliers) and the other 48 at 2 bits; any split format.md section 2
allows (at most 4 parts, each a multiple of 16 channels, summing to D). Each part stores its own float16
norm, so "16@5+48@2" costs (16 * 5 + 48 * 2 + 2 * 16) / 64 = 3.25 stored bits per element at D = 64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tqexport.errors import UsageError

Width = float | str  # a bit width (x or x.5) or a part spec "16@5+48@2"

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


def parse_width(text: str) -> Width:
    """A CLI width: a number (float) or a part spec (normalized string); raises UsageError otherwise."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    spec_parts(text)
    return text.replace(" ", "")


def spec_parts(spec: str) -> list[tuple[int, int]]:
    parts = []
    for item in spec.replace(" ", "").split("+"):
        size, sep, bits = item.partition("@")
        if not sep or not size.isdigit() or not bits.isdigit():
            raise UsageError(
                f"width {spec!r}: give a number (4, 2.5) or parts as CHANNELS@BITS joined by '+', "
                "e.g. 16@5+48@2"
            )
        parts.append((int(size), int(bits)))
    return parts


def width_label(width: Width) -> str:
    """Canonical text of a width: '3' for 3.0, '2.5', or the spec itself."""
    if isinstance(width, str):
        parsed = parse_width(width)
        if isinstance(parsed, str):
            return parsed
        width = parsed
    return str(int(width)) if float(width).is_integer() else str(float(width))


def part_split(bits: Width, head_dim: int) -> PartSplit:
    """Parts and bits for a (possibly fractional) bit width or a part spec at head dim D."""
    if isinstance(bits, str):
        parsed = parse_width(bits)
        if isinstance(parsed, str):
            return _spec_split(parsed, head_dim)
        bits = parsed
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


def _spec_split(spec: str, head_dim: int) -> PartSplit:
    parts = spec_parts(spec)
    sizes, widths = tuple(d for d, _ in parts), tuple(b for _, b in parts)
    if sum(sizes) != head_dim or any(d <= 0 or d % 16 for d in sizes) or len(parts) > 4:
        raise UsageError(
            f"width {spec!r}: at most 4 parts, each a positive multiple of 16 channels, "
            f"summing to D={head_dim}"
        )
    if any(not 1 <= b <= 8 for b in widths):
        raise UsageError(f"width {spec!r}: bits per part must be in 1..8")
    return PartSplit(sizes, widths)
