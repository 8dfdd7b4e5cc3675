"""In-place decoding of a buffer-mode model: one buffer per cache, bound as both past and present.

A `tqexport convert --cache-mode buffer` model writes each step's new tokens into the rows of the cache it was
given (docs/format.md 9.1: the ops allow the past and present tensors to alias). With ONNX Runtime's IO
binding one OrtValue per cache, allocated once on the session's device, serves as both, so no step copies a
cache. This is how a deployment runs a buffer-mode model; `DecodeSession` feeds presents back as new inputs
instead, which is simpler and gives the same logits.

Letters: B batch, S new tokens of a step, T total tokens, V vocabulary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqexport.errors import UsageError
from tqexport.eval.session import DecodeSession, position_ids_from_mask


class InPlaceDecoder:
    """Unpadded batch decode through one buffer per cache on `device` ("cpu" or "cuda")."""

    def __init__(self, session: Any, capacity: int, device: str = "cpu", device_id: int = 0) -> None:
        import onnxruntime as ort

        self._state = DecodeSession(session, capacity=capacity)
        if not self._state.buffer_mode:
            raise UsageError(
                "in-place decoding needs a buffer-mode model (tqexport convert --cache-mode buffer)"
            )
        self.session = session
        self.layout = self._state.layout
        self.device, self.device_id = device, device_id
        self._ort = ort
        self.buffers: dict[str, Any] = {}
        self.mask_BT = np.zeros((0, 0), dtype=np.int64)

    def reset(self, batch: int) -> None:
        """Zeroed caches of the session's capacity for `batch` sequences, one device buffer each."""
        self._state.reset(batch)
        self.buffers = {
            name: self._ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id)
            for name, array in self._state.past.items()
        }
        self.mask_BT = np.zeros((batch, 0), dtype=np.int64)

    def feed(self, ids_BS: np.ndarray) -> np.ndarray:
        """Run S new tokens of every sequence; return the logits [B, S, V] (on the host)."""
        ids_BS = np.ascontiguousarray(ids_BS, dtype=np.int64)
        if ids_BS.ndim != 2 or ids_BS.shape[0] != self.mask_BT.shape[0]:
            raise ValueError(
                f"ids must be [B={self.mask_BT.shape[0]}, S] (reset first), got {list(ids_BS.shape)}"
            )
        start = self.mask_BT.shape[1]
        self.mask_BT = np.concatenate([self.mask_BT, np.ones_like(ids_BS)], axis=1)
        names = self.layout.other_inputs
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids_BS)
        if "attention_mask" in names:
            binding.bind_cpu_input("attention_mask", self.mask_BT)
        if "position_ids" in names:
            positions = position_ids_from_mask(self.mask_BT)[:, start:]
            binding.bind_cpu_input("position_ids", np.ascontiguousarray(positions))
        binding.bind_output(self.layout.logits_name, "cpu")
        for slot in self.layout.slots:
            binding.bind_ortvalue_input(slot.past_name, self.buffers[slot.past_name])
            binding.bind_ortvalue_output(slot.present_name, self.buffers[slot.past_name])
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def teacher_forced(self, ids_BT: np.ndarray, prefill: int) -> np.ndarray:
        """Prefill ids[:, :prefill], then one token per step; the last position's logits of each call,
        [T - prefill + 1, B, V]."""
        self.reset(ids_BT.shape[0])
        calls = [(0, prefill), *((t, t + 1) for t in range(prefill, ids_BT.shape[1]))]
        return np.stack([self.feed(ids_BT[:, start:stop])[:, -1, :] for start, stop in calls])
