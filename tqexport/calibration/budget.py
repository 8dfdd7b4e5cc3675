"""Bit widths per (layer, K/V) under an average-bits budget, every overhead counted.

Cost of a cache at b bits, at context L with W = sinks + window full-precision tokens of `window_bits`:
((L - W) * row_bytes(b) * 8 + W * window_bits * D) / (L * D) bits per element (norms included in row_bytes).
The budget bounds the mean cost over all caches. Allocation is greedy marginal analysis on the measured
sensitivities: start every cache at the cheapest candidate, then repeatedly take the upgrade with the largest
KL drop per added bit that still fits, considering every higher candidate (the curves need not be convex).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tqexport.codec import CodecConfig
from tqexport.errors import UsageError

Key = tuple[int, str]


@dataclass(frozen=True)
class StorageModel:
    head_dim: int
    context: int
    sink_tokens: int = 0
    recent_window: int = 0
    window_bits: int = 16

    def cost(self, bits: int) -> float:
        row = CodecConfig(head_dim=self.head_dim, bits=(bits,)).row_bytes * 8
        w = min(self.context, self.sink_tokens + self.recent_window)
        return ((self.context - w) * row + w * self.window_bits * self.head_dim) / (
            self.context * self.head_dim
        )


def mean_cost(choice: Mapping[Key, int], storage: Mapping[Key, StorageModel]) -> float:
    return sum(storage[k].cost(b) for k, b in choice.items()) / len(choice)


def allocate(
    sensitivity: Mapping[Key, Mapping[int, float]],
    storage: Mapping[Key, StorageModel],
    budget: float,
    candidates: Sequence[int] | None = None,
) -> dict[Key, int]:
    keys = sorted(sensitivity)
    if not keys:
        raise UsageError("no caches to allocate bits to")

    def options(key: Key) -> list[int]:
        have = sorted(sensitivity[key])
        return [b for b in have if candidates is None or b in candidates]

    choice = {k: options(k)[0] for k in keys}
    floor = mean_cost(choice, storage)
    if floor > budget + 1e-9:
        raise UsageError(
            f"--bits-budget {budget}: even the cheapest candidate ({min(choice.values())} bits) costs "
            f"{floor:.3f} bits per element with norms, sinks and window counted"
        )
    total = floor * len(keys)
    limit = budget * len(keys)
    while True:
        best: tuple[float, Key, int] | None = None
        for k in keys:
            cur = choice[k]
            for b in options(k):
                if b <= cur:
                    continue
                added = storage[k].cost(b) - storage[k].cost(cur)
                gain = sensitivity[k][cur] - sensitivity[k][b]
                if added <= 0 or gain <= 0 or total + added > limit + 1e-9:
                    continue
                rate = gain / added
                if best is None or rate > best[0]:
                    best = (rate, k, b)
        if best is None:
            return choice
        _, k, b = best
        total += storage[k].cost(b) - storage[k].cost(choice[k])
        choice[k] = b
