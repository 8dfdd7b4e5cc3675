"""Teacher-forced comparison of an original model and its converted model through polygraphy's Comparator.

Two DecodeRunners (one per model) decode the same tokens; DecodeCompareFunc turns their logits into KL,
top-1 agreement, logit error and perplexity; storage_report adds the true cache size of each model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from polygraphy.comparator import Comparator
from polygraphy.logger import G_LOGGER

from tqexport.eval.compare_func import DecodeCompareFunc, DecodeCompareResult, Thresholds
from tqexport.eval.runners import DecodeRunner, TqSessionLoader
from tqexport.eval.storage import StorageReport, storage_report


@dataclass
class CompareReport:
    original: str
    converted: str
    batch: int
    prefill: int
    steps: int
    result: DecodeCompareResult
    storage: StorageReport
    seconds: dict[str, float]

    @property
    def passed(self) -> bool:
        return bool(self.result)

    def as_dict(self, per_step: bool = False) -> dict:
        out = {
            "original": self.original,
            "converted": self.converted,
            "batch": self.batch,
            "prefill": self.prefill,
            "steps": self.steps,
            "decode": self.result.decode.as_dict(),
            "prefill_metrics": self.result.prefill.as_dict() if self.result.prefill else None,
            "storage": self.storage.as_dict(),
            "seconds": self.seconds,
            "passed": self.passed,
            "failures": self.result.failures,
        }
        if per_step:
            out["per_step"] = {
                k: getattr(self.result.steps, k).tolist() for k in self.result.steps.__dataclass_fields__
            }
        return out


def compare_models(
    original: str | Path,
    converted: str | Path,
    ids_BT: np.ndarray,
    prefill: int,
    steps: int,
    thresholds: Thresholds | None = None,
    providers: list[str] | None = None,
    prefill_chunk: int = 0,
    progress: bool = True,
    quiet: bool = True,
    capacity: int | None = None,
) -> CompareReport:
    """Run both models on ids [B, >= prefill + steps + 1] and compare them."""
    return compare_many(
        original,
        [converted],
        ids_BT,
        prefill,
        steps,
        thresholds,
        providers,
        prefill_chunk,
        progress,
        quiet,
        capacity,
    )[0]


def compare_many(
    original: str | Path,
    converted: list[str | Path],
    ids_BT: np.ndarray,
    prefill: int,
    steps: int,
    thresholds: Thresholds | None = None,
    providers: list[str] | None = None,
    prefill_chunk: int = 0,
    progress: bool = True,
    quiet: bool = True,
    capacity: int | None = None,
) -> list[CompareReport]:
    """Decode the original once and each converted model once; compare each with the original.
    `capacity`: rows of buffer-mode caches (default prefill + steps rounded up)."""
    if quiet:
        G_LOGGER.module_severity = G_LOGGER.CRITICAL
    names = ["original"] + [
        f"converted{i}" if len(converted) > 1 else "converted" for i in range(len(converted))
    ]
    paths = [original, *converted]
    runners = [
        DecodeRunner(
            TqSessionLoader(path, providers),
            prefill,
            steps,
            name=name,
            prefill_chunk=prefill_chunk,
            progress=progress,
            capacity=capacity,
        )
        for name, path in zip(names, paths, strict=True)
    ]
    feed = {"input_ids": np.ascontiguousarray(ids_BT[:, : prefill + steps + 1], dtype=np.int64)}
    run_results = Comparator.run(runners, data_loader=[feed])
    pairs = [(0, i) for i in range(1, len(runners))]
    accuracy = Comparator.compare_accuracy(
        run_results, comparisons=pairs, compare_func=DecodeCompareFunc(thresholds)
    )
    reports = []
    for runner, path in zip(runners[1:], converted, strict=True):
        result: DecodeCompareResult = accuracy[0][("original", runner.name)][0]["logits"]
        storage = storage_report(
            runners[0].layout,
            runner.layout,
            runner.config,
            context_tokens=prefill + steps,
            head_dim_hint=runners[0].head_dim_hint,
        )
        seconds = {
            "original": float(run_results["original"][0].runtime),
            "converted": float(run_results[runner.name][0].runtime),
        }
        reports.append(
            CompareReport(
                str(original), str(path), int(ids_BT.shape[0]), prefill, steps, result, storage, seconds
            )
        )
    return reports


def format_table(report: CompareReport) -> str:
    d, s = report.result.decode, report.storage
    lines = [
        f"original : {report.original}",
        f"converted: {report.converted}",
        f"tokens   : batch {report.batch}, prefill {report.prefill}, then {report.steps} cached decode steps "
        f"({d.positions} scored positions: last prefill + each step)",
        "",
        f"{'metric':32} {'decode':>12} {'prefill':>12}",
    ]
    p = report.result.prefill
    rows = [
        ("max |logit error|", d.max_abs_error, p.max_abs_error if p else None, ".4g"),
        ("mean |logit error|", d.mean_abs_error, p.mean_abs_error if p else None, ".4g"),
        ("top-1 agreement", d.top1_agreement, p.top1_agreement if p else None, ".4f"),
        ("KL(orig || conv) mean [nats]", d.kl_mean, p.kl_mean if p else None, ".4g"),
        ("KL(orig || conv) max [nats]", d.kl_max, p.kl_max if p else None, ".4g"),
        ("perplexity original", d.ppl_original, p.ppl_original if p else None, ".4f"),
        ("perplexity converted", d.ppl_converted, p.ppl_converted if p else None, ".4f"),
        ("perplexity ratio", d.ppl_ratio, p.ppl_ratio if p else None, ".4f"),
    ]
    for label, dv, pv, fmt in rows:
        pv_text = format(pv, fmt) if pv is not None else "-"
        lines.append(f"{label:32} {format(dv, fmt):>12} {pv_text:>12}")
    orig_line = (
        f"{s.original_bytes_per_token:10.1f} bytes/token  {s.original_bits_per_element:6.3f} bits/elem"
    )
    conv_line = (
        f"{s.converted_bytes_per_token:10.1f} bytes/token  {s.converted_bits_per_element:6.3f} bits/elem"
    )
    lines += [
        "",
        f"KV storage at context {s.context_tokens} tokens (window of W = {s.window_tokens} full-precision "
        "tokens counted at that length):",
        f"  original : {orig_line}",
        f"  converted: {conv_line}  ({s.compression_ratio:.2f}x smaller; "
        f"{s.converted_bits_per_element_long:.3f} bits/elem without the window)",
        f"time: original {report.seconds['original']:.1f} s, converted {report.seconds['converted']:.1f} s",
        f"result: {'PASSED' if report.passed else 'FAILED: ' + '; '.join(report.result.failures)}",
    ]
    return "\n".join(lines)
