"""Bit widths per (layer, K/V) under an average-bits budget, every overhead counted.

A width is a bit width or a part spec (tqexport.converter.presets: "3", "2.5", "16@5+48@2"). Cost of a cache
at width w, at context L with W = sinks + window full-precision tokens of `window_bits`:
((L - W) * row_bytes(w) * 8 + W * window_bits * D) / (L * D) bits per element (norms included in row_bytes).
The budget bounds the mean cost over all caches.

Allocation minimizes the sum of the measured sensitivities (KL when only that cache is compressed at that
width) subject to the budget, exactly: a multiple-choice knapsack solved by dynamic programming over the
added cost. Costs are rational (row bytes over L * D), so they are scaled to integers without rounding and
the budget is never exceeded. Ties go to the cheaper width, then the earlier cache, so results are
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from tqexport.codec import CodecConfig
from tqexport.converter.presets import Width, part_split, width_label
from tqexport.errors import UsageError

Key = tuple[int, str]


@dataclass(frozen=True)
class StorageModel:
    head_dim: int
    context: int
    sink_tokens: int = 0
    recent_window: int = 0
    window_bits: int = 16

    def row_bytes(self, width: Width) -> int:
        split = part_split(width, self.head_dim)
        return CodecConfig(head_dim=self.head_dim, part_sizes=split.part_sizes, bits=split.bits).row_bytes

    def exact_cost(self, width: Width) -> Fraction:
        w = min(self.context, self.sink_tokens + self.recent_window)
        stored = (self.context - w) * self.row_bytes(width) * 8 + w * self.window_bits * self.head_dim
        return Fraction(stored, self.context * self.head_dim)

    def cost(self, width: Width) -> float:
        return float(self.exact_cost(width))


def mean_cost(choice: Mapping[Key, Width], storage: Mapping[Key, StorageModel]) -> float:
    return float(sum(storage[k].exact_cost(b) for k, b in choice.items()) / len(choice))


def allocate(
    sensitivity: Mapping[Key, Mapping[Width, float]],
    storage: Mapping[Key, StorageModel],
    budget: float,
    candidates: Sequence[Width] | None = None,
) -> dict[Key, str]:
    """The width label per cache with the least total sensitivity whose mean cost is within `budget`."""
    keys = sorted(sensitivity)
    if not keys:
        raise UsageError("no caches to allocate bits to")
    allowed = None if candidates is None else {width_label(c) for c in candidates}
    options: dict[Key, list[tuple[Fraction, str, float]]] = {}
    for k in keys:
        curve = {width_label(w): float(v) for w, v in sensitivity[k].items()}
        labels = [w for w in curve if allowed is None or w in allowed]
        if not labels:
            raise UsageError(f"cache {k}: no sensitivity measured for any candidate width")
        # cheapest first; equal costs in label order, so ties resolve the same way every run
        options[k] = sorted((storage[k].exact_cost(w), w, curve[w]) for w in labels)
    floor = sum(opts[0][0] for opts in options.values())
    # 1e-9 absorbs float rounding of a budget given as a float cost; real costs differ by >= 1 / (L * D)
    limit = (Fraction(budget) + Fraction(1, 10**9)) * len(keys)
    if floor > limit:
        cheapest = {options[k][0][1] for k in keys}
        raise UsageError(
            f"--bits-budget {budget}: even the cheapest candidate ({', '.join(sorted(cheapest))}) costs "
            f"{float(floor) / len(keys):.3f} bits per element with norms, sinks and window counted"
        )
    # integer weights: added cost over the cheapest option, on a common denominator, divided by their gcd
    added = {k: [c - options[k][0][0] for c, _, _ in options[k]] for k in keys}
    denominator = math.lcm(*(a.denominator for k in keys for a in added[k]), (limit - floor).denominator)
    scaled = {k: [int(a * denominator) for a in added[k]] for k in keys}
    unit = math.gcd(*(w for k in keys for w in scaled[k])) or 1
    weights = {k: [w // unit for w in scaled[k]] for k in keys}
    capacity = int((limit - floor) * denominator // unit)
    capacity = min(capacity, sum(max(weights[k]) for k in keys))
    # best[c]: least total sensitivity of the caches so far with added weight <= c
    best = np.zeros(capacity + 1)
    picks = []
    for k in keys:
        new = np.full(capacity + 1, np.inf)
        pick = np.zeros(capacity + 1, dtype=np.int64)
        for i, ((_, _, sens), w) in enumerate(zip(options[k], weights[k], strict=True)):
            if w > capacity:
                continue
            candidate = np.full(capacity + 1, np.inf)
            candidate[w:] = best[: capacity + 1 - w] + sens
            better = candidate < new
            new[better], pick[better] = candidate[better], i
        best = new
        picks.append(pick)
    choice: dict[Key, str] = {}
    c = capacity
    for k, pick in zip(reversed(keys), reversed(picks), strict=True):
        i = int(pick[c])
        choice[k] = options[k][i][1]
        c -= weights[k][i]
    return dict(sorted(choice.items()))
