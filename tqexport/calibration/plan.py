"""What `tqexport convert` asks of calibration: outlier scores and, under a budget, bits per layer.

`--calibration FILE` is either a JSON of channel scores (`{"layers": ...}`, e.g. written by an earlier run) or
plain text: then the first `tokens` tokens (tokenizer from the model's folder, or whitespace-separated ids
when the file holds only integers) are run through the original model. A JSON's sensitivities are keyed by
width label ("3", "16@5+48@2"); its "sensitivity_setup" records how they were measured (norm correction,
sinks, window, sequence length).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tqexport.calibration.budget import StorageModel, allocate, mean_cost
from tqexport.calibration.capture import capture_stats
from tqexport.calibration.sensitivity import SensitivitySetup, measure_sensitivity
from tqexport.converter.presets import Width, width_label
from tqexport.errors import UsageError

DEFAULT_CANDIDATES: tuple[Width, ...] = (2, 3, 4, 5, 6)


@dataclass
class CalibrationResult:
    scores: dict  # the converter's {"<layer>": {"key": [[...]], "value": [[...]]}}
    source: str
    notes: list[str] = field(default_factory=list)
    layer_bits: dict[int, tuple[str, str]] | None = None
    allocation: dict | None = None


def _is_scores_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and "layers" in data else None


def calibration_ids(model_path: Path, text_path: Path, tokens: int) -> np.ndarray:
    text = text_path.read_text(errors="replace")
    words = text.split()
    if words and all(w.lstrip("-").isdigit() for w in words[:1000]):
        ids = np.array([int(w) for w in words], dtype=np.int64)
    else:
        from tqexport.eval.tokens import Tokenizer

        ids = Tokenizer.for_model(model_path).encode(text)
    if ids.size < 16:
        raise UsageError(
            f"--calibration {text_path}: only {ids.size} tokens; give at least 16 (ideally 256+)"
        )
    return ids[:tokens]


def plan_calibration(
    model_path: str | Path,
    calibration: str | Path,
    tokens: int = 256,
    bits_budget: float | None = None,
    storage: Callable[[int, int], StorageModel] | None = None,
    candidates: tuple[Width, ...] | None = None,
    log: Callable[[str], None] = print,
    setup: SensitivitySetup | None = None,
) -> CalibrationResult:
    """`storage(layer_head_dim, _)` gives the storage model of a cache (context, sinks, window).

    `candidates`: widths the allocation may choose (default: every width the JSON measured, or
    DEFAULT_CANDIDATES when measuring from text, with `setup`)."""
    cal_path = Path(calibration)
    if not cal_path.is_file():
        raise UsageError(f"--calibration {cal_path}: no such file")
    scores_json = _is_scores_json(cal_path)
    if scores_json is not None:
        result = CalibrationResult(scores_json["layers"], f"scores from {cal_path.name}")
        sens = scores_json.get("sensitivity")
        if bits_budget is not None and not sens:
            raise UsageError(
                "--bits-budget needs sensitivities: give calibration text (or a JSON with 'sensitivity')"
            )
        sensitivity = (
            {
                (int(k.split(".")[0]), k.split(".")[1]): {width_label(b): v for b, v in c.items()}
                for k, c in sens.items()
            }
            if sens
            else None
        )
        if sens and bits_budget is not None and setup is not None:
            note = _setup_mismatch(scores_json.get("sensitivity_setup"), setup, cal_path.name)
            if note:
                result.notes.append(note)
    else:
        ids = calibration_ids(Path(model_path), cal_path, tokens)
        log(f"calibration: {ids.size} tokens of {cal_path.name} through the original model")
        stats = capture_stats(model_path, ids)
        result = CalibrationResult(stats.to_json(cal_path.name)["layers"], f"text {cal_path.name}")
        result.notes.extend(stats.norm_warnings())
        sensitivity = None
        if bits_budget is not None:
            widths = candidates or DEFAULT_CANDIDATES
            log(f"calibration: per-layer sensitivity for widths {[width_label(w) for w in widths]}")
            sensitivity = measure_sensitivity(
                model_path, ids, widths, _progress_printer(log), setup, result.scores
            )
    if bits_budget is None:
        return result
    assert sensitivity is not None
    head_dims = {(layer, kind): len(result.scores[str(layer)][kind][0]) for layer, kind in sensitivity}
    models = {k: (storage or _default_storage)(head_dims[k], 0) for k in sensitivity}
    choice = allocate(sensitivity, models, bits_budget, candidates)
    layer_bits: dict[int, tuple[str, str]] = {}
    for (layer, kind), bits in choice.items():
        k, v = layer_bits.get(layer, ("", ""))
        layer_bits[layer] = (bits, v) if kind == "key" else (k, bits)
    result.layer_bits = layer_bits
    result.allocation = {
        "budget": bits_budget,
        "achieved_bits_per_element": round(mean_cost(choice, models), 4),
        "context": next(iter(models.values())).context,
        "predicted_kl_sum": round(sum(sensitivity[k][b] for k, b in choice.items()), 6),
        "sensitivity": {f"{layer}.{kind}": curve for (layer, kind), curve in sorted(sensitivity.items())},
    }
    log(
        f"calibration: bits per layer under budget {bits_budget}: "
        + " ".join(f"{layer}:K{k}V{v}" for layer, (k, v) in sorted(layer_bits.items()))
        + f" (mean {result.allocation['achieved_bits_per_element']} bits/element at context "
        f"{result.allocation['context']}, overheads included)"
    )
    return result


def calibrate_to_json(
    model_path: str | Path,
    text_path: str | Path,
    tokens: int = 256,
    sensitivity: bool = False,
    candidates: tuple[Width, ...] = DEFAULT_CANDIDATES,
    log: Callable[[str], None] = print,
    setup: SensitivitySetup | None = None,
) -> dict:
    """The JSON `--calibration` accepts: channel scores, max norms and optionally sensitivities."""
    ids = calibration_ids(Path(model_path), Path(text_path), tokens)
    log(f"calibration: {ids.size} tokens of {Path(text_path).name} through the original model")
    stats = capture_stats(model_path, ids)
    data = stats.to_json(Path(text_path).name)
    data["warnings"] = stats.norm_warnings()
    if sensitivity:
        setup = setup or SensitivitySetup()
        log(f"calibration: per-layer sensitivity for widths {[width_label(w) for w in candidates]}")
        sens = measure_sensitivity(model_path, ids, candidates, _progress_printer(log), setup, data["layers"])
        data["sensitivity"] = {f"{layer}.{kind}": curve for (layer, kind), curve in sorted(sens.items())}
        data["sensitivity_setup"] = setup.as_dict()
    return data


def _setup_mismatch(measured: dict | None, setup: SensitivitySetup, name: str) -> str | None:
    """A note when the JSON's sensitivities were measured with other codec/window options than convert's."""
    fields = ("norm_correction", "sink_tokens", "recent_window", "base_seed")
    wanted = {f: setup.as_dict()[f] for f in fields}
    got = {f: (measured or {}).get(f) for f in fields}
    if got == wanted:
        return None
    return (
        f"sensitivities in {name} were measured with {got if measured else 'no recorded setup'}, not this "
        f"conversion's {wanted} (re-run `tqexport calibrate` with matching options)"
    )


def _default_storage(head_dim: int, _: int) -> StorageModel:
    return StorageModel(head_dim=head_dim, context=2048)


def _progress_printer(log: Callable[[str], None]) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            log(f"calibration: sensitivity {done}/{total}")

    return report
