"""The compare function given to polygraphy's Comparator.compare_accuracy for decode runs.

It maps two IterationResults of DecodeRunner (original first, converted second) to
{"logits": DecodeCompareResult}; the result is truthy when every threshold passes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from tqexport.eval.metrics import StepMetrics, SummaryMetrics, step_metrics, summarize


@dataclass(frozen=True)
class Thresholds:
    max_kl: float | None = None  # on the mean KL(original || converted) over decode steps
    min_top1: float | None = None  # on the top-1 agreement rate over decode steps
    max_ppl_ratio: float | None = None  # on ppl(converted) / ppl(original) over decode steps

    def failures(self, summary: SummaryMetrics) -> list[str]:
        failed = []
        if self.max_kl is not None and not summary.kl_mean <= self.max_kl:
            failed.append(f"KL mean {summary.kl_mean:.4g} > max-kl {self.max_kl:g}")
        if self.min_top1 is not None and not summary.top1_agreement >= self.min_top1:
            failed.append(f"top-1 agreement {summary.top1_agreement:.4f} < min-top1 {self.min_top1:g}")
        if self.max_ppl_ratio is not None and not summary.ppl_ratio <= self.max_ppl_ratio:
            failed.append(f"ppl ratio {summary.ppl_ratio:.4f} > max-ppl-ratio {self.max_ppl_ratio:g}")
        return failed


@dataclass
class DecodeCompareResult:
    steps: StepMetrics
    decode: SummaryMetrics
    prefill: SummaryMetrics | None
    failures: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.failures


class DecodeCompareFunc:
    """(IterationResult original, IterationResult converted) -> OrderedDict[str, DecodeCompareResult]."""

    def __init__(self, thresholds: Thresholds | None = None):
        self.thresholds = thresholds or Thresholds()

    def __call__(self, original, converted) -> OrderedDict[str, DecodeCompareResult]:
        targets = np.asarray(original["targets"])
        if not np.array_equal(targets, np.asarray(converted["targets"])):
            raise ValueError("the two runners were fed different tokens")
        steps = step_metrics(np.asarray(original["logits"]), np.asarray(converted["logits"]), targets)
        decode = summarize(steps)
        prefill = None
        if "prefill_logits" in original and "prefill_logits" in converted:
            prefill = summarize(
                step_metrics(
                    np.asarray(original["prefill_logits"]),
                    np.asarray(converted["prefill_logits"]),
                    np.asarray(original["prefill_targets"]),
                )
            )
        result = DecodeCompareResult(steps, decode, prefill, self.thresholds.failures(decode))
        return OrderedDict(logits=result)
