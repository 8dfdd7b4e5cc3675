"""Per-layer reports of what the pass found: plain dicts (for --json) and one-line text renderings."""

from __future__ import annotations

import onnx

from tqexport.passes.layers import ModelAnalysis
from tqexport.passes.mask_window import WindowProbe
from tqexport.passes.match import LayerMatch


def _dtype(elem_type: int | None) -> str | None:
    return None if not elem_type else onnx.TensorProto.DataType.Name(elem_type).lower()


def layer_report(layer: LayerMatch, window: WindowProbe | None = None) -> dict:
    """`window`: the mask probe's finding (`tqexport inspect` runs it; conversion does not need it)."""
    report: dict = {"layer": layer.layer, "converts": layer.convertible}
    if layer.key is not None and layer.value is not None:
        report["cache"] = {
            "past_key": layer.key.past_input,
            "past_value": layer.value.past_input,
            "present_key": layer.key.present_output,
            "present_value": layer.value.present_output,
            "dtype": _dtype(layer.key.elem_type),
        }
        report["num_kv_heads"] = layer.key.num_kv_heads
        report["head_dim"] = layer.key.head_dim
    read = layer.attention
    if read is not None:
        report.update(
            {
                "attention_form": read.form,
                "num_q_heads": read.num_q_heads,
                "scale": read.scale,
                "softcap": read.softcap,
                "mask": {
                    "tensor": read.mask,
                    "terms": [list(term) for term in read.mask_terms],
                    "kind": read.mask_kind,
                    "rank": read.mask_rank,
                    "shared_with_layers": layer.mask_shared_with,
                },
                "gqa_repeat": read.gqa_repeat,
                "k_transpose": read.k_transpose,
                "path": read.nodes,
            }
        )
        if window is not None:
            report["window"] = window.describe()
            report["window_tokens"] = window.window
    if layer.contrib:
        report["group_query_attention"] = layer.contrib
        if read is not None:
            size = layer.contrib["local_window_size"]
            report["window"] = f"local_window_size={size} (in the mask)" if size > 0 else "none"
            report["window_tokens"] = size if size > 0 else None
    if layer.failure is not None:
        report["reason"] = str(layer.failure)
        if layer.form_hint:
            report["contrib_ops"] = layer.form_hint
    return report


def analysis_report(analysis: ModelAnalysis, windows: dict[int, WindowProbe] | None = None) -> dict:
    windows = windows or {}
    return {
        "problem": analysis.problem,
        "layers": [layer_report(layer, windows.get(layer.layer)) for layer in analysis.layers],
        "convertible_layers": len(analysis.convertible_layers),
        "total_layers": len(analysis.layers),
    }


def layer_line(report: dict) -> str:
    head = f"layer {report['layer']:>3}: "
    if not report["converts"]:
        return head + f"NOT convertible: {report.get('reason', '?')}"
    mask = report["mask"]
    shared = f"shared with {len(mask['shared_with_layers'])} layers" if mask["shared_with_layers"] else "own"
    return (
        head + f"{report['attention_form']}, Hq={report['num_q_heads']} Hkv={report['num_kv_heads']} "
        f"D={report['head_dim']} {report['cache']['dtype']}, scale={report['scale']:.6g}, "
        f"softcap={report['softcap']:g}, mask={mask['kind']} rank {mask['rank']} ({shared}), "
        f"gqa_repeat={report['gqa_repeat']}, cache {report['cache']['past_key']} -> "
        f"{report['cache']['present_key']}" + _window_note(report) + _contrib_note(report)
    )


def _window_note(report: dict) -> str:
    return f", window={report['window']}" if "window" in report else ""


def _contrib_note(report: dict) -> str:
    contrib = report.get("group_query_attention")
    if not contrib:
        return ""
    note = f", rotary={contrib['rotary']}"
    if contrib["sliding_window_cache"]:
        note += " (sliding_window_cache: unfused to a full-length cache)"
    return note
