"""Run an optimum-format decoder ONNX (`text-generation-with-past`) in ONNX Runtime, carrying its KV cache.

Graph contract (what optimum's exporter writes for Llama), with B batch, S new tokens, P past tokens,
Hkv KV heads, Dh head size:
  inputs   input_ids [B,S] int64, attention_mask [B,P+S] int64, position_ids [B,S] int64,
           past_key_values.{i}.key / .value [B,Hkv,P,Dh] float32
  outputs  logits [B,S,V] float32, present.{i}.key / .value [B,Hkv,P+S,Dh] float32
A prefill is a call with P = 0; a decode step is a call with S = 1 and the previous presents as past.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."


class OrtCausalLM:
    """A batch-1 ORT session that keeps the KV cache between `prefill` and `decode` calls."""

    def __init__(self, model_path: Path, providers: list[str] | None = None, threads: int = 0) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(model_path), options, providers=providers or ["CPUExecutionProvider"]
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [name for name in inputs if name.startswith(PAST_PREFIX)]
        if not self.past_names:
            raise ValueError(
                f"{model_path}: no '{PAST_PREFIX}*' inputs; export with text-generation-with-past"
            )
        for name in ("input_ids", "attention_mask", "position_ids"):
            if name not in inputs:
                raise ValueError(f"{model_path}: input {name!r} missing; inputs are {sorted(inputs)}")
        shape = inputs[self.past_names[0]].shape  # [B, Hkv, P, Dh]
        self.kv_heads, self.head_size = int(shape[1]), int(shape[3])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.past: dict[str, np.ndarray] = {}
        self.length = 0

    def reset(self) -> None:
        self.past = {}
        self.length = 0

    def _run(self, token_ids: np.ndarray) -> np.ndarray:
        new = token_ids.shape[1]
        feeds: dict[str, np.ndarray] = {
            "input_ids": token_ids.astype(np.int64),
            "attention_mask": np.ones((1, self.length + new), dtype=np.int64),
            "position_ids": np.arange(self.length, self.length + new, dtype=np.int64)[None, :],
        }
        empty = np.zeros((1, self.kv_heads, 0, self.head_size), dtype=np.float32)
        for name in self.past_names:
            feeds[name] = self.past.get(name, empty)
        results = dict(zip(self.output_names, self.session.run(self.output_names, feeds), strict=True))
        self.past = {name: results[PRESENT_PREFIX + name[len(PAST_PREFIX) :]] for name in self.past_names}
        self.length += new
        return results["logits"][0]

    def prefill(self, token_ids: np.ndarray | list[int]) -> np.ndarray:
        """Start a new sequence; return logits [S, V] for every prompt position."""
        self.reset()
        return self._run(np.asarray(token_ids, dtype=np.int64).reshape(1, -1))

    def decode(self, token_id: int) -> np.ndarray:
        """Append one token to the cached sequence; return its logits [V]."""
        if not self.past:
            raise RuntimeError("decode() before prefill()")
        return self._run(np.array([[token_id]], dtype=np.int64))[0]
