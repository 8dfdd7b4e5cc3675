"""Run original and converted tiny models: ORT for the original, onnx.reference + the NumPy reference ops
(`tqexport.codec.reference_ops`) for the converted one, so tests need no native library.

`teacher_forced_logits` runs a batch-2, left-padded prefill and then one token per step through the cache.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from tqexport.codec import reference_ops


class TQQuantize(OpRun):
    op_domain = "tqexport"

    def _run(
        self,
        x,
        past_cache,
        rotation,
        codebook,
        qjl_matrix=None,
        past_window=None,
        past_lengths=None,
        **_ignored,
    ):
        attrs = {
            name: getattr(self, name)
            for name in (
                "bits",
                "part_sizes",
                "qjl",
                "norm_correction",
                "rotation_kind",
                "cache_mode",
                "sink_tokens",
                "recent_window",
                "format_version",
            )
        }
        attrs = {
            k: (list(v) if isinstance(v, (list, tuple, np.ndarray)) else int(v)) for k, v in attrs.items()
        }
        cache, window = reference_ops.tq_quantize(
            x, past_cache, rotation, codebook, qjl_matrix, past_window, past_lengths, **attrs
        )
        return (cache,) if window is None else (cache, window.astype(x.dtype))


class TQAttention(OpRun):
    op_domain = "tqexport"

    def _run(
        self,
        q,
        k_cache,
        v_cache,
        mask,
        k_rotation,
        k_codebook,
        v_rotation,
        v_codebook,
        k_qjl_matrix=None,
        k_window=None,
        v_window=None,
        past_lengths=None,
        **_ignored,
    ):
        attrs = {}
        for name in ("k_bits", "k_part_sizes", "v_bits", "v_part_sizes"):
            attrs[name] = list(getattr(self, name))
        for name in ("k_qjl", "cache_mode", "sink_tokens", "recent_window", "format_version"):
            attrs[name] = int(getattr(self, name))
        attrs["scale"] = float(self.scale)
        attrs["softcap"] = float(self.softcap)
        out = reference_ops.tq_attention(
            q,
            k_cache,
            v_cache,
            mask,
            k_rotation,
            k_codebook,
            v_rotation,
            v_codebook,
            k_qjl_matrix,
            k_window,
            v_window,
            past_lengths,
            **attrs,
        )
        return (out.astype(q.dtype),)


class ConvertedRunner:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.session = ReferenceEvaluator(model, new_ops=[TQQuantize, TQAttention])
        self.config = json.loads({p.key: p.value for p in model.metadata_props}["tqexport.config"])
        self.inputs = {v.name: v for v in model.graph.input}
        self.output_names = [o.name for o in model.graph.output]

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        feeds = {}
        for name, value in self.inputs.items():
            if name in ("input_ids", "attention_mask"):
                continue
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
            dims[0] = batch
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            feeds[name] = np.zeros(dims, dtype=dtype)
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))


class OriginalRunner:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.inputs = {v.name: v for v in model.graph.input}
        self.output_names = [o.name for o in model.graph.output]

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        feeds = {}
        for name, value in self.inputs.items():
            if name in ("input_ids", "attention_mask"):
                continue
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
            dims[0] = batch
            feeds[name] = np.zeros(dims, dtype=np.float32)
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))


def teacher_forced_logits(
    runner, token_ids: np.ndarray, pad: list[int], prefill: int, steps: int
) -> np.ndarray:
    """token_ids [B, prefill + steps]; sequence b has pad[b] left-padding positions in its prefill.

    Returns logits [B, steps + 1, V]: the last prefill position, then each decode step.
    """
    batch = token_ids.shape[0]
    mask = np.ones((batch, prefill), dtype=np.int64)
    for b, p in enumerate(pad):
        mask[b, :p] = 0
    feeds = {"input_ids": token_ids[:, :prefill], "attention_mask": mask, **runner.empty_cache(batch)}
    collected = []
    for step in range(steps + 1):
        outputs = runner.run(feeds)
        collected.append(outputs["logits"][:, -1])
        if step == steps:
            break
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        feeds = {"input_ids": token_ids[:, prefill + step : prefill + step + 1], "attention_mask": mask}
        for name in runner.inputs:
            if name in ("input_ids", "attention_mask"):
                continue
            present = name.replace("past_key_values", "present")
            feeds[name] = outputs[present]
    return np.stack(collected, axis=1)
