"""The codec of one cache (K or V of one layer) at a bit width: parts, seed, outlier channels, rotation.

One function shared by the converter and by calibration, so the sensitivity measured for a width is the
sensitivity of the codec the converter will build for it (same seed, same channels, same codebook).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tqexport.codec import Codec, CodecConfig
from tqexport.converter.outliers import choose_channels
from tqexport.converter.presets import PartSplit, Width, part_split
from tqexport.errors import UsageError


def derive_seed(base_seed: int, layer: int, kind: str) -> int:
    """Per-layer, per-cache seed: stable, independent streams from one --seed."""
    state = np.random.SeedSequence([base_seed, layer, 0 if kind == "key" else 1]).generate_state(1, np.uint32)
    return int(state[0] & 0x7FFFFFFF)


@dataclass(frozen=True)
class CacheCodec:
    codec: Codec
    split: PartSplit
    channels: list[list[list[int]]] | None  # per kv head, per part (None: one part)
    channel_source: str


def build_cache_codec(
    width: Width,
    layer: int,
    kind: str,
    head_dim: int,
    num_kv_heads: int,
    *,
    qjl: bool = False,
    norm_correction: bool = False,
    rotation: str = "hadamard",
    base_seed: int = 0,
    scores_HD: np.ndarray | None = None,
    fallback_scores: Callable[[], np.ndarray | None] | None = None,
    fallback_source: str = "projection-weight-column-norms",
) -> CacheCodec:
    """Outlier channels of a split come from `scores_HD` [Hkv, D] (calibration), else `fallback_scores()`,
    else the first channels."""
    split = part_split(width, head_dim)
    use_qjl = qjl and kind == "key"
    if use_qjl and min(split.bits) < 2:
        raise UsageError(f"--qjl needs >= 2 bits per part (one is the QJL sign); {kind} bits {split.bits}")
    config = CodecConfig(
        head_dim=head_dim,
        part_sizes=split.part_sizes,
        bits=split.bits,
        qjl=use_qjl,
        norm_correction=norm_correction,
        rotation=rotation,  # type: ignore[arg-type]
        seed=derive_seed(base_seed, layer, kind),
    )
    if not split.is_split:
        return CacheCodec(Codec.build(config), split, None, "n/a (one part)")
    scores, source = scores_HD, "calibration"
    if scores is None and fallback_scores is not None:
        scores, source = fallback_scores(), fallback_source
    if scores is None:
        source = "none (first channels)"
    elif np.shape(scores) != (num_kv_heads, head_dim):
        raise UsageError(
            f"layer {layer} {kind}: channel scores shape {np.shape(scores)}, expected "
            f"[Hkv={num_kv_heads}, D={head_dim}]"
        )
    channels = choose_channels(scores, split.part_sizes, num_kv_heads, head_dim)
    return CacheCodec(Codec.build(config, num_heads=num_kv_heads, channels=channels), split, channels, source)
