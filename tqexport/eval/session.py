"""A decode session: prefill, then single-token steps, feeding each step's present caches back as past.

Runs original models (float KV caches) and converted ones (compressed uint8 caches and their windows,
docs/format.md sections 7 and 9) through the same loop. Sequences are left-padded: `attention_mask` is
[B, T] over all tokens so far (0 = padding), `position_ids` is cumsum(mask) - 1 (1 on padding, as
transformers does), and `past_lengths` (a model input named so) is the number of tokens already stored.

Buffer cache mode (`tqexport convert --cache-mode buffer`, docs/format.md section 7): the converted graph
computes past_lengths itself; the session starts from zeroed caches of a fixed capacity (rows for compressed
tokens) and feeds each present back as past, exactly as in concat mode.

Letters: B batch, S new tokens of a step, T total tokens, V vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tqexport.errors import UsageError
from tqexport.eval.cache_io import CacheLayout, CacheLayoutError
from tqexport.eval.ort_session import make_session, tqexport_config
from tqexport.eval.storage import window_tokens

KNOWN_INPUTS = ("input_ids", "attention_mask", "position_ids")
CAPACITY_MULTIPLE = 64


def buffer_capacity(tokens: int, multiple: int = CAPACITY_MULTIPLE) -> int:
    """Default capacity of a buffer-mode cache that must hold `tokens` tokens: rounded up to `multiple`."""
    return max(multiple, -(-tokens // multiple) * multiple)


def position_ids_from_mask(mask_BT: np.ndarray) -> np.ndarray:
    """cumsum(mask) - 1 along T, with padded positions set to 1."""
    positions = np.cumsum(mask_BT, axis=1, dtype=np.int64) - 1
    positions[mask_BT == 0] = 1
    return positions


def head_dim_from_config(folder: Path) -> int | None:
    """Head dim from a Hugging Face config.json next to the model (head_dim, else hidden_size / heads)."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(config.get("head_dim"), int):
        return config["head_dim"]
    hidden = config.get("hidden_size") or config.get("n_embd")
    heads = config.get("num_attention_heads") or config.get("n_head")
    return hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None


class BufferOverflowError(UsageError):
    """A buffer-mode cache was allocated with fewer rows than the tokens fed need (the op refuses it)."""


def _op_message(error: str) -> str:
    """The op's own message out of an ONNX Runtime error text."""
    marker = "Status Message: "
    text = error[error.index(marker) + len(marker) :] if marker in error else error
    return text.strip().splitlines()[0] if text.strip() else error


class DecodeSession:
    """Stateful wrapper around one InferenceSession of a decoder with a KV cache."""

    def __init__(self, session: Any, head_dim_hint: int | None = None, capacity: int | None = None):
        self.session = session
        self.head_dim_hint = head_dim_hint
        self.capacity = capacity  # buffer mode: compressed rows per cache (prefill/reset may override)
        self.layout = CacheLayout.from_io(session.get_inputs(), session.get_outputs())
        self.config = tqexport_config(session)
        self.buffer_mode = (self.config or {}).get("cache_mode") == "buffer"
        self._lengths_input = None
        for name in self.layout.other_inputs:
            if name in KNOWN_INPUTS:
                continue
            if "past_lengths" in name:
                self._lengths_input = name
                continue
            raise CacheLayoutError(
                f"model input {name!r} is not one the decode session knows how to feed "
                f"(knows {list(KNOWN_INPUTS)}, past/present caches and *past_lengths)"
            )
        if "input_ids" not in self.layout.other_inputs:
            raise CacheLayoutError("model has no input_ids input")
        if not self.layout.slots:
            raise CacheLayoutError(
                f"model has no past_key_values.* cache inputs (inputs: {list(self.layout.other_inputs)}); "
                "a decode session needs a KV cache"
            )
        self.past: dict[str, np.ndarray] = {}
        self.mask_BT = np.zeros((0, 0), dtype=np.int64)

    @classmethod
    def from_path(
        cls, model_path: str | Path, providers: Sequence[str] | None = None, capacity: int | None = None
    ) -> DecodeSession:
        folder = Path(model_path).parent
        return cls(make_session(model_path, providers), head_dim_from_config(folder), capacity)

    @property
    def batch(self) -> int:
        return self.mask_BT.shape[0]

    @property
    def length(self) -> int:
        """Tokens seen so far (padding included)."""
        return self.mask_BT.shape[1]

    def reset(self, batch: int, capacity: int | None = None) -> None:
        """Empty caches for `batch` sequences; buffer mode: zeroed buffers of `capacity` (else
        self.capacity) rows."""
        capacity = capacity or self.capacity
        if self.buffer_mode and not capacity:
            raise UsageError(
                "a buffer-mode model needs the cache capacity (DecodeSession(capacity=...) or "
                "prefill(..., capacity=...)); buffer_capacity(prompt + new tokens) is a safe choice"
            )
        self.past = self.layout.empty_past(batch, self.head_dim_hint, capacity if self.buffer_mode else None)
        self.mask_BT = np.zeros((batch, 0), dtype=np.int64)

    def feed(self, ids_BS: np.ndarray, mask_BS: np.ndarray | None = None) -> np.ndarray:
        """Run S new tokens (a prefill chunk or one decode step); return the logits, [B, S, V]."""
        ids_BS = np.asarray(ids_BS, dtype=np.int64)
        if ids_BS.ndim != 2 or ids_BS.shape[0] != self.batch:
            raise ValueError(f"ids must be [B={self.batch}, S], got {list(ids_BS.shape)}")
        mask_BS = np.ones_like(ids_BS) if mask_BS is None else np.asarray(mask_BS, dtype=np.int64)
        past_length = self.length
        mask_BT = np.concatenate([self.mask_BT, mask_BS], axis=1)
        feeds: dict[str, np.ndarray] = {"input_ids": ids_BS, **self.past}
        names = self.layout.other_inputs
        if "attention_mask" in names:
            feeds["attention_mask"] = mask_BT
        if "position_ids" in names:
            feeds["position_ids"] = position_ids_from_mask(mask_BT)[:, past_length:]
        if self._lengths_input:
            feeds[self._lengths_input] = np.full((self.batch,), past_length, dtype=np.int64)
        wanted = [self.layout.logits_name] + [slot.present_name for slot in self.layout.slots]
        try:
            outputs = self.session.run(wanted, feeds)
        except Exception as exc:
            if self.buffer_mode and "buffer overflow" in str(exc):
                raise BufferOverflowError(
                    f"the cache buffers are too small for {mask_BT.shape[1]} tokens (capacity "
                    f"{self._capacity_in_use()} rows; allocate more, e.g. --capacity): "
                    f"{_op_message(str(exc))}"
                ) from exc
            raise
        self.mask_BT = mask_BT
        self.past = {slot.past_name: out for slot, out in zip(self.layout.slots, outputs[1:], strict=True)}
        return outputs[0]

    def prefill(
        self,
        ids_BP: np.ndarray,
        mask_BP: np.ndarray | None = None,
        chunk: int = 0,
        capacity: int | None = None,
    ) -> np.ndarray:
        """Start sequences from a left-padded prompt; `chunk` > 0 splits it; `capacity` sizes buffer-mode
        caches (default self.capacity). Returns logits [B, P, V]."""
        ids_BP = np.asarray(ids_BP, dtype=np.int64)
        self.reset(ids_BP.shape[0], capacity)
        mask_BP = np.ones_like(ids_BP) if mask_BP is None else np.asarray(mask_BP, dtype=np.int64)
        size = chunk if chunk > 0 else ids_BP.shape[1]
        pieces = [
            self.feed(ids_BP[:, i : i + size], mask_BP[:, i : i + size])
            for i in range(0, ids_BP.shape[1], size)
        ]
        return np.concatenate(pieces, axis=1)

    def step(self, ids_B: np.ndarray) -> np.ndarray:
        """One decode step of one token per sequence; returns logits [B, V] of that token."""
        logits = self.feed(np.asarray(ids_B, dtype=np.int64).reshape(self.batch, 1))
        return logits[:, -1, :]

    def cache_bytes(self) -> int:
        """Bytes the past caches and windows hold for the tokens seen so far. Buffer mode counts the rows
        and window slots in use (T tokens: min(T, W) window slots, T - min(T, W) compressed rows, as concat
        mode stores them), not the allocated capacity (allocated_bytes)."""
        if not self.buffer_mode:
            return self.allocated_bytes()
        in_window = min(self.length, window_tokens(self.config))
        total = 0
        for slot in self.layout.slots:
            array = self.past[slot.past_name]
            rows = in_window if slot.is_window else self.length - in_window
            total += array.nbytes // max(array.shape[2], 1) * rows
        return total

    def _capacity_in_use(self) -> int:
        caches = [self.past[slot.past_name] for slot in self.layout.cache_slots]
        return int(caches[0].shape[2]) if caches else 0

    def allocated_bytes(self) -> int:
        """Bytes of the past tensors as allocated (buffer mode: the full capacity)."""
        return sum(array.nbytes for array in self.past.values())
