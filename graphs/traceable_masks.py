"""Attention-mask builders without torch.vmap, for the legacy TorchScript exporter.

transformers >= 4.53 builds its 4D masks with torch.vmap, which torch.jit tracing cannot record
("RuntimeError: unordered_map::at"). The mask functions it composes (causal, sliding window,
and_masks) are plain index comparisons, so calling them on broadcast index grids
[Q, 1] x [1, KV] gives the same boolean mask. `broadcast_masks()` registers these builders for
"sdpa" and "eager" while a trace runs and restores the originals afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def _padding_mask(attention_mask: torch.Tensor | None, kv_length: int, kv_offset: int) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    return attention_mask[:, kv_offset : kv_offset + kv_length].bool()


def broadcast_bool_mask(
    batch_size: int,
    cache_position: torch.Tensor,
    kv_length: int,
    kv_offset: int = 0,
    mask_function: Callable[..., Any] | None = None,
    attention_mask: torch.Tensor | None = None,
    **_: Any,
) -> torch.Tensor:
    """[B, 1, Q, KV] bool mask, True where a query may attend to a key."""
    from transformers.masking_utils import causal_mask_function

    fn = mask_function or causal_mask_function
    q_idx = cache_position[:, None]
    kv_idx = (torch.arange(kv_length, device=cache_position.device) + kv_offset)[None, :]
    allowed = fn(None, None, q_idx, kv_idx)
    allowed = allowed[None, None, :, :].expand(batch_size, 1, -1, -1)
    padding = _padding_mask(attention_mask, kv_length, kv_offset)
    if padding is not None:
        allowed = allowed & padding[:, None, None, :]
    return allowed


def broadcast_eager_mask(*args: Any, dtype: torch.dtype = torch.float32, **kwargs: Any) -> torch.Tensor:
    """Additive float mask: 0 where allowed, dtype's minimum where not (as HF's eager_mask)."""
    allowed = broadcast_bool_mask(*args, **kwargs)
    zero = torch.tensor(0.0, dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


@contextmanager
def broadcast_masks() -> Iterator[None]:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    saved = {k: ALL_MASK_ATTENTION_FUNCTIONS[k] for k in ("sdpa", "eager")}
    ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa", broadcast_bool_mask)
    ALL_MASK_ATTENTION_FUNCTIONS.register("eager", broadcast_eager_mask)
    try:
        yield
    finally:
        for k, fn in saved.items():
            ALL_MASK_ATTENTION_FUNCTIONS.register(k, fn)
