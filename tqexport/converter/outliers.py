"""Per-(layer, kv head) outlier channels for the outlier split.

Sources, in order: calibration scores (`tqexport.calibration`: per-channel RMS of the new K/V on text, or a
JSON `{"layers": {"<layer>": {"key": [[score per channel] per kv head], "value": [...]}}}`); else the
projection weights: walking back from the new K/V tensor to the MatMul whose weight initializer has Hkv * D
(or a fused Hq * D + 2 * Hkv * D) output columns, a channel's score is its weight column's L2 norm; else the
first channels (recorded as "none").
"""

from __future__ import annotations

import numpy as np

from tqexport.graph.index import GraphIndex
from tqexport.passes.match import CacheWrite


def _projection_weight(index: GraphIndex, write: CacheWrite) -> np.ndarray | None:
    """[hidden, N] weight of the projection that produces `write.new_BHkvSD`, found within a few nodes."""
    frontier, seen = [write.new_BHkvSD], set()
    for _ in range(14):
        next_frontier = []
        for name in frontier:
            node = index.producer.get(name)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
                weight_name = node.input[1]
                transposed = node.op_type == "Gemm" and any(
                    a.name == "transB" and a.i for a in node.attribute
                )
                weight_node = index.producer.get(weight_name)
                if weight_node is not None and weight_node.op_type == "Transpose":
                    weight_name, transposed = weight_node.input[0], not transposed
                if weight_name in index.initializers:
                    weight = index.load_initializer(weight_name).astype(np.float64)
                    return weight.T if transposed else weight
                continue
            next_frontier += [n for n in node.input if n and n not in index.initializers]
        frontier = next_frontier
    return None


def channel_scores(index: GraphIndex, write: CacheWrite, num_q_heads: int | None) -> np.ndarray | None:
    """float64 [Hkv, D] per-channel scores from the projection weight, or None when it cannot be found."""
    weight = _projection_weight(index, write)
    if weight is None or weight.ndim != 2:
        return None
    hkv, d = write.num_kv_heads, write.head_dim
    columns = weight.shape[1]
    if columns == hkv * d:
        offset = 0
    elif num_q_heads is not None and columns == (num_q_heads + 2 * hkv) * d:
        offset = num_q_heads * d + (0 if write.kind == "key" else hkv * d)
    else:
        return None
    block = weight[:, offset : offset + hkv * d]
    return np.linalg.norm(block, axis=0).reshape(hkv, d)


def choose_channels(
    scores: np.ndarray | None, part_sizes: tuple[int, ...], num_kv_heads: int, head_dim: int
) -> list[list[list[int]]]:
    """Per kv head, per part, ascending channel lists: part 1 = the highest-scoring channels."""
    result = []
    for head in range(num_kv_heads):
        order = list(range(head_dim)) if scores is None else list(np.argsort(-scores[head], kind="stable"))
        parts, start = [], 0
        for size in part_sizes:
            parts.append(sorted(int(c) for c in order[start : start + size]))
            start += size
        result.append(parts)
    return result
