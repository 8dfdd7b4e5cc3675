"""Polygraphy runners for stateful decoding, and the session loader that registers our custom ops.

Polygraphy's Comparator feeds each runner one feed dict per iteration and compares the output dicts. A
cached decode is stateful (each step feeds the runner's own present caches back as past), so one plain
OnnxrtRunner.infer per step cannot express it: the data loader cannot know each runner's caches. Instead,
DecodeRunner takes the whole teacher-forced token sequence as one feed dict (`input_ids` [B, P + N + 1]) and
runs the decode loop inside `infer`: prefill P tokens, then N single-token steps. It returns
- `logits` [B, N + 1, V]: the last prefill position and each step (they predict tokens P .. P + N),
- `targets` [B, N + 1]: those tokens, for perplexity,
- `prefill_logits` [B, P - 1, V] and `prefill_targets` (when keep_prefill): the rest of the prefill.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from polygraphy.datatype import DataType

from tqexport.eval.cache_io import CacheLayout
from tqexport.eval.ort_session import make_session
from tqexport.eval.session import DecodeSession, buffer_capacity, head_dim_from_config


class TqSessionLoader:
    """Callable returning an onnxruntime InferenceSession with the tqexport custom ops registered
    (the same role as polygraphy's SessionFromOnnx, usable by OnnxrtRunner and DecodeRunner)."""

    def __init__(self, model_path: str | Path, providers: Sequence[str] | None = None):
        self.model_path = str(model_path)
        self.providers = list(providers) if providers else None

    def __call__(self):
        return make_session(self.model_path, self.providers)


class DecodeRunner(BaseRunner):
    """Teacher-forced cached decode of one token sequence per iteration (see module docstring)."""

    def __init__(
        self,
        session_loader: TqSessionLoader,
        prefill: int,
        steps: int,
        name: str | None = None,
        prefill_chunk: int = 0,
        keep_prefill: bool = True,
        progress: bool = True,
        capacity: int | None = None,
    ):
        super().__init__(name=name, prefix="tq-decode-runner")
        if prefill < 1 or steps < 0:
            raise ValueError(f"need prefill >= 1 and steps >= 0, got prefill={prefill}, steps={steps}")
        self.session_loader = session_loader
        self.prefill = prefill
        self.steps = steps
        self.prefill_chunk = prefill_chunk
        self.keep_prefill = keep_prefill
        self.progress = progress
        # buffer-mode caches: rows allocated per cache (default: prefill + steps rounded up to 64)
        self.capacity = capacity or buffer_capacity(prefill + steps)
        self.decode: DecodeSession | None = None
        self.layout: CacheLayout | None = None  # kept after deactivation, for storage accounting
        self.config: dict | None = None  # the converted model's tqexport.config metadata, if any
        self.head_dim_hint: int | None = None  # D from a config.json beside the model (genai: symbolic D)

    @property
    def tokens_needed(self) -> int:
        return self.prefill + self.steps + 1

    def activate_impl(self) -> None:
        folder = Path(self.session_loader.model_path).parent
        self.head_dim_hint = head_dim_from_config(folder)
        self.decode = DecodeSession(self.session_loader(), self.head_dim_hint, self.capacity)
        self.layout, self.config = self.decode.layout, self.decode.config

    def get_input_metadata_impl(self) -> TensorMetadata:
        return TensorMetadata().add("input_ids", dtype=DataType.INT64, shape=["batch", self.tokens_needed])

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        assert self.decode is not None
        ids = np.asarray(feed_dict["input_ids"], dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < self.tokens_needed:
            raise ValueError(
                f"{self.name}: input_ids must be [B, >= {self.tokens_needed}], got {list(ids.shape)}"
            )
        start = time.time()
        prefill_logits = self.decode.prefill(ids[:, : self.prefill], chunk=self.prefill_chunk)
        step_logits = [prefill_logits[:, -1, :]]
        positions = range(self.prefill, self.prefill + self.steps)
        if self.progress:
            from tqdm import tqdm

            positions = tqdm(positions, desc=f"{self.name} decode", unit="tok", leave=False, disable=None)
        for position in positions:
            step_logits.append(self.decode.step(ids[:, position]))
        self.inference_time = time.time() - start
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        out["logits"] = np.stack(step_logits, axis=1)
        out["targets"] = ids[:, self.prefill : self.prefill + self.steps + 1]
        if self.keep_prefill and self.prefill > 1:
            out["prefill_logits"] = prefill_logits[:, :-1, :]
            out["prefill_targets"] = ids[:, 1 : self.prefill]
        out["cache_bytes"] = np.array(self.decode.cache_bytes(), dtype=np.int64)
        return out

    def deactivate_impl(self) -> None:
        self.decode = None
