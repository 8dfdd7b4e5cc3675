"""One prefill of calibration tokens through an ONNX decoder, with extra feeds and extra outputs.

Used by capture (extra outputs: the new K/V tensors) and sensitivity (extra feeds: fake-quant switches).
The model gets empty past caches, all-ones attention mask and positions 0..S-1.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tqexport.eval.cache_io import CacheLayout
from tqexport.eval.ort_session import make_session
from tqexport.graph.model_io import save_model


class PrefillRunner:
    """Holds a session of a (possibly edited) model and runs prefills of token ids [1, S]."""

    def __init__(self, model: onnx.ModelProto, source_dir: Path, providers: Sequence[str] | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="tqexport-calib-")
        path = save_model(model, Path(self._tmp.name) / "model.onnx", source_dir)
        self.session: Any = make_session(path, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        cache_inputs = [i for i in inputs if not i.name.startswith("tqcal.")]
        self.layout = CacheLayout.from_io(cache_inputs, outputs)
        self.input_names = {i.name for i in inputs}

    def close(self) -> None:
        self.session = None
        self._tmp.cleanup()

    def run(
        self, ids: np.ndarray, extra_feeds: dict[str, np.ndarray] | None = None, outputs: Sequence[str] = ()
    ) -> list[np.ndarray]:
        """Logits [1, S, V] followed by the requested extra outputs."""
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        feeds: dict[str, np.ndarray] = {"input_ids": ids, **self.layout.empty_past(1)}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = np.ones_like(ids)
        if "position_ids" in self.input_names:
            feeds["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None]
        for name in self.input_names:
            if "past_lengths" in name:
                feeds[name] = np.zeros(1, np.int64)
        feeds.update(extra_feeds or {})
        return self.session.run([self.layout.logits_name, *outputs], feeds)
