"""Per-layer sensitivity: KL(original || model with only one cache of one layer compressed at b bits).

One edited model carries a switchable fake-quant on every new K/V (`fake_quant`), so a single ORT session
measures every (layer, K/V, bits) with one prefill of the calibration tokens each.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tqexport.calibration.capture import analyze_model
from tqexport.calibration.fake_quant import disabled_feeds, enabled_feeds, fake_quant_nodes
from tqexport.calibration.runner import PrefillRunner
from tqexport.codec import Codec, CodecConfig
from tqexport.graph.edit import toposort
from tqexport.graph.model_io import load_model

Sensitivity = dict[tuple[int, str], dict[int, float]]


def mean_kl(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over positions of KL(softmax(ref) || softmax(logits)), float64."""
    ref = ref_logits.astype(np.float64).reshape(-1, ref_logits.shape[-1])
    cur = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    ref_lp = ref - ref.max(-1, keepdims=True)
    ref_lp -= np.log(np.exp(ref_lp).sum(-1, keepdims=True))
    cur_lp = cur - cur.max(-1, keepdims=True)
    cur_lp -= np.log(np.exp(cur_lp).sum(-1, keepdims=True))
    return float(np.mean(np.sum(np.exp(ref_lp) * (ref_lp - cur_lp), axis=-1)))


def measure_sensitivity(
    model_path: str | Path,
    ids: np.ndarray,
    candidate_bits: Sequence[int] = (2, 3, 4, 5, 6),
    progress: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    path = Path(model_path)
    model = load_model(path)
    analysis = analyze_model(model, path.parent)
    edited = copy.deepcopy(model)
    producer_of = {out: n for n in edited.graph.node for out in n.output}
    caches: list[tuple[int, str, int]] = []
    for layer in analysis.convertible_layers:
        for write in (layer.key, layer.value):
            assert write is not None
            rotation = Codec.build(CodecConfig(head_dim=write.head_dim, seed=layer.layer * 2 + 1)).rotation
            out = fake_quant_nodes(
                edited.graph, write.new_BHkvSD, layer.layer, write.kind, rotation, write.elem_type
            )
            concat = producer_of[write.concat_node.output[0]]
            for slot, name in enumerate(concat.input):
                if name == write.new_BHkvSD:
                    concat.input[slot] = out
            caches.append((layer.layer, write.kind, write.head_dim))
    toposort(edited.graph)
    runner = PrefillRunner(edited, path.parent)
    try:
        base_feeds: dict[str, np.ndarray] = {}
        for layer_id, kind, head_dim in caches:
            base_feeds.update(disabled_feeds(layer_id, kind, head_dim))
        reference = runner.run(ids, base_feeds)[0]
        result: Sensitivity = {}
        total, done = len(caches) * len(candidate_bits), 0
        for layer_id, kind, head_dim in caches:
            for bits in candidate_bits:
                feeds = {**base_feeds, **enabled_feeds(layer_id, kind, head_dim, bits)}
                result.setdefault((layer_id, kind), {})[bits] = mean_kl(reference, runner.run(ids, feeds)[0])
                done += 1
                if progress is not None:
                    progress(done, total)
        return result
    finally:
        runner.close()
