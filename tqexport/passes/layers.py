"""Find every layer's cache write and attention read, anchored on the cache graph inputs.

`analyze(index)` never raises for a layer that does not match: the layer's `failure` holds the closest
near-miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tqexport.graph.index import GraphIndex
from tqexport.passes.attention_read import match_attention_read
from tqexport.passes.group_query_attention import GQA_FORM, GqaLayer
from tqexport.passes.kv_write import CacheAnchor, find_cache_anchors, match_kv_write
from tqexport.passes.match import LayerMatch, Mismatch, best_failure


@dataclass
class ModelAnalysis:
    layers: list[LayerMatch] = field(default_factory=list)
    problem: str = ""  # a model-level reason (no cache inputs at all)

    @property
    def convertible_layers(self) -> list[LayerMatch]:
        return [layer for layer in self.layers if layer.convertible]

    @property
    def all_convertible(self) -> bool:
        return not self.problem and bool(self.layers) and all(layer.convertible for layer in self.layers)


def _contrib_hint(index: GraphIndex) -> str:
    contrib = sorted(
        {
            n.op_type
            for n in index.graph.node
            if n.domain == "com.microsoft"
            and n.op_type in ("GroupQueryAttention", "MultiHeadAttention", "Attention")
        }
    )
    return ", ".join(contrib)


def analyze(index: GraphIndex, group_query_attention: Sequence[GqaLayer] = ()) -> ModelAnalysis:
    """`group_query_attention`: the records of `unfuse_group_query_attention`, run on the graph before `index`
    was built; unfused layers report that form, refused ones their reason."""
    anchors = find_cache_anchors(index)
    if not anchors:
        names = ", ".join(list(index.inputs)[:6])
        return ModelAnalysis(
            problem=f"no KV-cache graph inputs (names like past_key_values.N.key) among the "
            f"inputs [{names}]: the model has no cache to compress"
        )
    by_layer: dict[int, dict[str, CacheAnchor]] = {}
    for anchor in anchors:
        by_layer.setdefault(anchor.layer, {})[anchor.kind] = anchor
    analysis = ModelAnalysis()
    gqa = {record.layer: record for record in group_query_attention if record.layer is not None}
    for layer_id in sorted(by_layer):
        layer = _analyze_layer(index, layer_id, by_layer[layer_id])
        if layer_id in gqa:
            _note_group_query_attention(layer, gqa[layer_id])
        analysis.layers.append(layer)
    _note_shared_masks(analysis)
    return analysis


def _note_group_query_attention(layer: LayerMatch, record: GqaLayer) -> None:
    layer.contrib = record.report()
    layer.form_hint = "GroupQueryAttention"
    if record.reason:
        layer.failure = Mismatch(f"com.microsoft::GroupQueryAttention: {record.reason}", record.node, 100)
        layer.attention = None
    elif layer.attention is not None:
        layer.attention.form = GQA_FORM


def _analyze_layer(index: GraphIndex, layer_id: int, anchors: dict[str, CacheAnchor]) -> LayerMatch:
    layer = LayerMatch(layer=layer_id)
    if set(anchors) != {"key", "value"}:
        layer.failure = Mismatch(
            f"layer {layer_id} has cache inputs {sorted(anchors)}, expected key and value"
        )
        return layer
    try:
        layer.key = match_kv_write(index, anchors["key"])
        layer.value = match_kv_write(index, anchors["value"])
    except Mismatch as failure:
        layer.failure = failure
        layer.form_hint = _contrib_hint(index)
        return layer
    if (layer.key.num_kv_heads, layer.key.head_dim) != (layer.value.num_kv_heads, layer.value.head_dim):
        layer.failure = Mismatch(
            f"K cache [Hkv={layer.key.num_kv_heads}, D={layer.key.head_dim}] and V cache "
            f"[Hkv={layer.value.num_kv_heads}, D={layer.value.head_dim}] differ"
        )
        return layer
    failures: list[Mismatch] = []
    try:
        layer.attention = match_attention_read(index, layer.key, layer.value)
    except Mismatch as failure:
        failures.append(failure)
    if layer.attention is None:
        layer.failure = best_failure(failures)
        return layer
    read = layer.attention
    if read.num_q_heads is not None and read.num_q_heads % layer.key.num_kv_heads:
        layer.failure = Mismatch(
            f"Hq={read.num_q_heads} is not a multiple of Hkv={layer.key.num_kv_heads}", read.q_BHqSD, 30
        )
        layer.attention = None
    elif layer.key.head_dim % 16:
        layer.failure = Mismatch(
            f"head dim D={layer.key.head_dim} is not a multiple of 16 (format.md section 1)",
            layer.key.past_input,
            30,
        )
        layer.attention = None
    return layer


def _note_shared_masks(analysis: ModelAnalysis) -> None:
    by_mask: dict[tuple, list[int]] = {}
    for layer in analysis.layers:
        if layer.attention is not None:
            by_mask.setdefault(tuple(layer.attention.mask_terms), []).append(layer.layer)
    for layer in analysis.layers:
        if layer.attention is not None:
            layer.mask_shared_with = [
                other for other in by_mask[tuple(layer.attention.mask_terms)] if other != layer.layer
            ]
