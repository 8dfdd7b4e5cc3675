"""What a matched layer looks like, and how a failed match explains itself.

Letters (docs/format.md): B batch, Hq query heads, Hkv kv heads, G = Hq / Hkv, S new tokens, T total tokens,
D head dim. Tensor names in the match records carry their layout (`new_key_BHkvSD`, `q_BHqSD`).

A matcher raises `Mismatch(reason, where, progress)`; `progress` counts how many pattern steps had matched, so
`tqexport inspect` can print the closest near-miss among the alternatives it tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import onnx

from tqexport.graph.index import node_label

CacheKind = Literal["key", "value"]
MaskKind = Literal["additive", "bool", "bool_inverted", "combined"]


class Mismatch(Exception):  # noqa: N818 - it is a match result, not an error the user sees directly
    """A pattern step that did not hold: why, at which node or tensor, after how many matched steps."""

    def __init__(self, reason: str, where: str = "", progress: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where
        self.progress = progress

    def __str__(self) -> str:
        return f"{self.reason} (at {self.where})" if self.where else self.reason

    @staticmethod
    def at_node(reason: str, node: onnx.NodeProto, progress: int = 0) -> Mismatch:
        return Mismatch(reason, node_label(node), progress)


@dataclass
class CacheWrite:
    """`present = Concat(past, new, axis=2)` for one cache (K or V) of one layer."""

    layer: int
    kind: CacheKind
    past_input: str  # graph input [B, Hkv, T_past, D]
    present_output: str  # graph output [B, Hkv, T, D]
    concat_output: str  # the Concat's output (== present_output unless Identity nodes sit between)
    concat_node: onnx.NodeProto
    new_BHkvSD: str  # this step's post-RoPE K or V
    num_kv_heads: int
    head_dim: int
    elem_type: int
    past_shape_uses: list[onnx.NodeProto] = field(default_factory=list)
    present_shape_uses: list[onnx.NodeProto] = field(default_factory=list)


@dataclass
class AttentionRead:
    """Scores, mask, softmax and the V product that read one layer's caches."""

    form: str  # "decomposed-sdpa", "eager", "onnx-attention"
    q_BHqSD: str
    out_BHqSD: str
    mask: str
    mask_kind: MaskKind
    mask_rank: int | None
    scale: float
    softcap: float
    num_q_heads: int | None
    out_elem_type: int | None
    q_elem_type: int | None
    nodes: list[str] = field(default_factory=list)  # op types along the matched path, for reports
    gqa_repeat: bool = False
    k_transpose: str = ""
    shape_reads: list = field(default_factory=list)  # attention_read.ShapeRead
    mask_terms: list[tuple[str, str]] = field(default_factory=list)  # every mask before Softmax, in order


@dataclass
class LayerMatch:
    layer: int
    key: CacheWrite | None = None
    value: CacheWrite | None = None
    attention: AttentionRead | None = None
    failure: Mismatch | None = None
    form_hint: str = ""  # e.g. "GroupQueryAttention" when a contrib op owns the cache
    mask_shared_with: list[int] = field(default_factory=list)
    contrib: dict = field(default_factory=dict)  # the unfused (or refused) contrib op's attributes

    @property
    def convertible(self) -> bool:
        return self.failure is None and None not in (self.key, self.value, self.attention)

    def reason(self) -> str:
        return "" if self.failure is None else str(self.failure)


def best_failure(failures: list[Mismatch]) -> Mismatch:
    """The alternative that got furthest: the closest near-miss."""
    return max(failures, key=lambda failure: failure.progress)
