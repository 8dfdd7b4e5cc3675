"""Per-channel statistics of the new K/V on calibration text.

Writes the calibration JSON the converter reads (`tqexport/converter/outliers.py`):
`{"layers": {"<layer>": {"key": [[rms per channel] per kv head], "value": [...]}}, "max_norm": {...}, ...}`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from tqexport.calibration.runner import PrefillRunner
from tqexport.errors import NotConvertibleError
from tqexport.graph.index import GraphIndex
from tqexport.graph.model_io import load_model
from tqexport.passes.group_query_attention import unfuse_group_query_attention
from tqexport.passes.layers import ModelAnalysis, analyze

FLOAT16_HEADROOM = 65504.0 / 16  # warn when a vector norm comes within 16x of float16's largest value


@dataclass
class ChannelStats:
    rms: dict[tuple[int, str], np.ndarray]  # [Hkv, D]
    max_norm: dict[tuple[int, str], float]
    tokens: int

    def to_json(self, source: str) -> dict:
        layers: dict[str, dict[str, list]] = {}
        for (layer, kind), rms in sorted(self.rms.items()):
            layers.setdefault(str(layer), {})[kind] = rms.round(6).tolist()
        return {
            "layers": layers,
            "max_norm": {f"{layer}.{kind}": v for (layer, kind), v in sorted(self.max_norm.items())},
            "tokens": self.tokens,
            "source": source,
        }

    def norm_warnings(self) -> list[str]:
        return [
            f"layer {layer} {kind}: a vector norm of {value:.0f} on calibration text is within 16x of the "
            f"float16 norm limit 65504 (larger norms are clipped)"
            for (layer, kind), value in sorted(self.max_norm.items())
            if value > FLOAT16_HEADROOM
        ]


def analyze_model(model: onnx.ModelProto, base_dir: Path) -> ModelAnalysis:
    """Also unfuses GroupQueryAttention in place, so the new K/V of genai graphs become tensors to tap."""
    group_query_attention = unfuse_group_query_attention(model)
    analysis = analyze(GraphIndex.build(model, base_dir), group_query_attention)
    if not analysis.convertible_layers:
        reason = analysis.problem or "; ".join(f"layer {x.layer}: {x.reason()}" for x in analysis.layers)
        raise NotConvertibleError(f"calibration found no convertible layer: {reason}")
    return analysis


def capture_stats(model_path: str | Path, ids: np.ndarray) -> ChannelStats:
    """Run `ids` (a 1-D token array) through the original model; RMS and max norm of every new K/V."""
    path = Path(model_path)
    model = load_model(path)
    analysis = analyze_model(model, path.parent)
    edited = copy.deepcopy(model)
    wanted: dict[str, tuple[int, str]] = {}
    for layer in analysis.convertible_layers:
        for write in (layer.key, layer.value):
            assert write is not None
            wanted[write.new_BHkvSD] = (layer.layer, write.kind)
            edited.graph.output.append(helper.make_empty_tensor_value_info(write.new_BHkvSD))
    runner = PrefillRunner(edited, path.parent)
    try:
        outputs = runner.run(ids, outputs=list(wanted))[1:]
    finally:
        runner.close()
    rms, max_norm = {}, {}
    for name, value in zip(wanted, outputs, strict=True):
        x = value.astype(np.float64)  # [1, Hkv, S, D]
        rms[wanted[name]] = np.sqrt(np.mean(x * x, axis=(0, 2)))
        max_norm[wanted[name]] = float(np.max(np.linalg.norm(x, axis=-1)))
    return ChannelStats(rms, max_norm, int(np.asarray(ids).size))


def write_calibration(stats: ChannelStats, out_path: str | Path, source: str) -> Path:
    out = Path(out_path)
    out.write_text(json.dumps(stats.to_json(source)))
    return out
