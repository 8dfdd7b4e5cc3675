"""True KV-cache storage of a model: bytes per token and bits per cached element, all overheads included.

Original model: every cached token costs Hkv * D * itemsize bytes per K and per V cache.
Converted model (docs/format.md sections 4, 7, 9): a compressed token costs Hkv * row_bytes (codes, QJL signs
and float16 norms included); the first W = sink_tokens + recent_window tokens of a sequence live in the
full-precision window instead. So at context length T a cache holds min(T, W) window tokens and
T - min(T, W) compressed rows; bytes per token are the total over T, and bits per element divide by the
number of K/V elements a token has in the original model (sum over caches of Hkv * D).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tqexport.errors import UnsupportedError
from tqexport.eval.cache_io import CacheLayout, CacheSlot


def _per_token_bytes(slot: CacheSlot, head_dim_hint: int | None = None) -> int:
    heads, last = slot.static_dim(1), slot.static_dim(3)
    if last is None and not slot.is_compressed:
        last = head_dim_hint  # onnxruntime-genai names D kv_cache_dim: config.json gives it
    if heads is None or last is None:
        raise UnsupportedError(
            f"{slot.past_name}: Hkv and the last dim must be static (or D given by a config.json beside "
            f"the model), got {list(slot.shape)}"
        )
    return heads * last * slot.dtype.itemsize


def window_tokens(config: dict | None) -> int:
    """W = sink_tokens + recent_window from the converter's `tqexport.config` (largest over layers)."""
    if not config:
        return 0
    candidates = [config]
    layers = config.get("layers")
    if isinstance(layers, dict):
        candidates += [v for v in layers.values() if isinstance(v, dict)]
    elif isinstance(layers, list):
        candidates += [v for v in layers if isinstance(v, dict)]
    return max(int(c.get("sink_tokens", 0) or 0) + int(c.get("recent_window", 0) or 0) for c in candidates)


@dataclass
class StorageReport:
    context_tokens: int  # T at which the window overhead is counted
    window_tokens: int  # W
    elements_per_token: int  # K and V elements of one token over all layers (original model)
    original_bytes_per_token: float
    original_bits_per_element: float
    converted_bytes_per_token: float  # at context_tokens
    converted_bits_per_element: float  # at context_tokens
    converted_bits_per_element_long: float  # T -> infinity (compressed rows only)
    compression_ratio: float  # original / converted bytes at context_tokens

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def storage_report(
    original: CacheLayout,
    converted: CacheLayout,
    config: dict | None,
    context_tokens: int,
    head_dim_hint: int | None = None,
) -> StorageReport:
    """`head_dim_hint`: D of the original's float caches where the graph leaves it symbolic."""
    elements = 0
    original_bytes = 0
    for slot in original.cache_slots:
        per_token = _per_token_bytes(slot, head_dim_hint)
        elements += per_token // slot.dtype.itemsize
        original_bytes += per_token
    wtok = window_tokens(config) if converted.window_slots else 0
    in_window = min(context_tokens, wtok)
    total = 0.0
    long_run = 0.0
    for slot in converted.cache_slots:
        row = _per_token_bytes(slot)
        total += (context_tokens - in_window) * row
        long_run += row
    for slot in converted.window_slots:
        total += in_window * _per_token_bytes(slot)
    if not converted.is_converted:  # comparing two float models: both are plain caches
        total = float(sum(_per_token_bytes(s, head_dim_hint) for s in converted.cache_slots)) * context_tokens
    per_token = total / max(context_tokens, 1)
    return StorageReport(
        context_tokens=context_tokens,
        window_tokens=wtok,
        elements_per_token=elements,
        original_bytes_per_token=float(original_bytes),
        original_bits_per_element=8.0 * original_bytes / elements,
        converted_bytes_per_token=per_token,
        converted_bits_per_element=8.0 * per_token / elements,
        converted_bits_per_element_long=8.0 * long_run / elements,
        compression_ratio=original_bytes / per_token if per_token else float("inf"),
    )
