"""Per-layer sensitivity: KL(original || model with only one cache of one layer compressed at width w).

One edited model carries a fake-quant on every new K/V (`fake_quant`) whose codec is a run-time input, so a
single ORT session measures every (layer, K/V, width). The codec of each width is the one the converter
builds (`build_cache_codec`: same seeds, outlier channels and norm correction).

`SensitivitySetup` says how the calibration text is run, so the measurement can mirror the converted
cache: the ids are cut into sequences of `sequence_tokens` (0: one sequence); in each, the first
`sink_tokens` and the last `recent_window` tokens stay exact (the cache keeps those in float16) and KL is
averaged over the scored positions: the last `recent_window` positions when there is a window (queries that
read an exact recent window and a compressed past, as in decode), else every position.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tqexport.calibration.capture import analyze_model
from tqexport.calibration.fake_quant import codec_feeds, disabled_feeds, fake_quant_nodes
from tqexport.calibration.runner import PrefillRunner
from tqexport.converter.cache_codec import build_cache_codec
from tqexport.converter.presets import Width, width_label
from tqexport.errors import UsageError
from tqexport.graph.edit import toposort
from tqexport.graph.model_io import load_model

Sensitivity = dict[tuple[int, str], dict[str, float]]


@dataclass(frozen=True)
class SensitivitySetup:
    norm_correction: bool = False
    sink_tokens: int = 0
    recent_window: int = 0
    sequence_tokens: int = 0
    base_seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def positions(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(quantized [length] bool, scored [length] bool) for one sequence."""
        quantized = np.ones(length, bool)
        quantized[: self.sink_tokens] = False
        scored = np.ones(length, bool)
        if self.recent_window:
            if length <= self.sink_tokens + self.recent_window:
                raise UsageError(
                    f"calibration sequences of {length} tokens leave nothing to compress behind "
                    f"{self.sink_tokens} sinks and a {self.recent_window}-token window; use longer sequences"
                )
            quantized[length - self.recent_window :] = False
            scored[: length - self.recent_window] = False
        return quantized, scored


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def mean_kl(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over positions of KL(softmax(ref) || softmax(logits)), float64."""
    ref_lp, cur_lp = log_softmax(ref_logits), log_softmax(logits)
    return float(np.mean(np.sum(np.exp(ref_lp) * (ref_lp - cur_lp), axis=-1)))


def _sequences(ids: np.ndarray, sequence_tokens: int) -> list[np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if sequence_tokens <= 0 or sequence_tokens >= ids.size:
        return [ids]
    count = ids.size // sequence_tokens
    return [ids[i * sequence_tokens : (i + 1) * sequence_tokens] for i in range(count)]


def measure_sensitivity(
    model_path: str | Path,
    ids: np.ndarray,
    widths: Sequence[Width] = (2, 3, 4, 5, 6),
    progress: Callable[[int, int], None] | None = None,
    setup: SensitivitySetup | None = None,
    channel_scores: dict | None = None,
) -> Sensitivity:
    """`channel_scores`: the calibration JSON's {"<layer>": {"key": [[...]], ...}} (split widths)."""
    setup = setup or SensitivitySetup()
    path = Path(model_path)
    model = load_model(path)
    analysis = analyze_model(model, path.parent)
    edited = copy.deepcopy(model)
    producer_of = {out: n for n in edited.graph.node for out in n.output}
    caches = []
    for layer in analysis.convertible_layers:
        for write in (layer.key, layer.value):
            assert write is not None
            out = fake_quant_nodes(edited.graph, write.new_BHkvSD, layer.layer, write.kind, write.elem_type)
            concat = producer_of[write.concat_node.output[0]]
            for slot, name in enumerate(concat.input):
                if name == write.new_BHkvSD:
                    concat.input[slot] = out
            caches.append(write)
    toposort(edited.graph)
    sequences = _sequences(ids, setup.sequence_tokens)
    masks = [setup.positions(seq.size) for seq in sequences]
    runner = PrefillRunner(edited, path.parent)
    try:
        base_feeds: dict[str, np.ndarray] = {}
        for write in caches:
            base_feeds.update(disabled_feeds(write.layer, write.kind, write.head_dim))
        references = [
            log_softmax(runner.run(seq, base_feeds)[0][0][scored])
            for seq, (_, scored) in zip(sequences, masks, strict=True)
        ]
        result: Sensitivity = {}
        labels = [width_label(w) for w in widths]
        total, done = len(caches) * len(labels), 0
        for write in caches:
            scores = (channel_scores or {}).get(str(write.layer), {}).get(write.kind)
            for label in labels:
                codec = build_cache_codec(
                    label,
                    write.layer,
                    write.kind,
                    write.head_dim,
                    write.num_kv_heads,
                    norm_correction=setup.norm_correction,
                    base_seed=setup.base_seed,
                    scores_HD=None if scores is None else np.asarray(scores, dtype=np.float64),
                ).codec
                kls = []
                for seq, (quantized, scored), ref_lp in zip(sequences, masks, references, strict=True):
                    feeds = {**base_feeds, **codec_feeds(write.layer, write.kind, codec, quantized)}
                    cur_lp = log_softmax(runner.run(seq, feeds)[0][0][scored])
                    kls.append(np.sum(np.exp(ref_lp) * (ref_lp - cur_lp), axis=-1))
                result.setdefault((write.layer, write.kind), {})[label] = float(np.mean(np.concatenate(kls)))
                done += 1
                if progress is not None:
                    progress(done, total)
        return result
    finally:
        runner.close()
