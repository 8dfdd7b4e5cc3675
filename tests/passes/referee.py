"""Run original and converted tiny models: ORT for the original, onnx.reference + the NumPy reference ops
(`tqexport.codec.reference_ops`) for the converted one, so tests need no native library.

`teacher_forced_logits` runs a batch-2, left-padded prefill and then one token per step through the cache.
"""

from __future__ import annotations

import json
from typing import Any

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


class _GraphRunner:
    """Shared by both runners: the graph's `inputs` / `output_names` and a `session` with run(None, feeds)."""

    inputs: dict[str, onnx.ValueInfoProto]
    output_names: list[str]
    session: Any  # onnx ReferenceEvaluator or ort.InferenceSession

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        feeds = {}
        for name, value in self.inputs.items():
            if name in ("input_ids", "attention_mask", "position_ids"):
                continue
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
            dims[0] = batch
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            feeds[name] = np.zeros(dims, dtype=dtype)
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))


class ConvertedRunner(_GraphRunner):
    def __init__(self, model: onnx.ModelProto, reference: bool = True) -> None:
        self.model = model
        if reference:
            self.session = ReferenceEvaluator(model, new_ops=[TQQuantize, TQAttention])
        self.config = json.loads({p.key: p.value for p in model.metadata_props}["tqexport.config"])
        self.inputs = {v.name: v for v in model.graph.input}
        self.output_names = [o.name for o in model.graph.output]


class OriginalRunner(_GraphRunner):
    def __init__(self, model: onnx.ModelProto | str) -> None:
        source = model if isinstance(model, str) else model.SerializeToString()
        self.session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        if isinstance(model, str):
            model = onnx.load(model, load_external_data=False)
        self.inputs = {v.name: v for v in model.graph.input}
        self.output_names = [o.name for o in model.graph.output]


def _positions(mask: np.ndarray) -> np.ndarray:
    positions = np.cumsum(mask, axis=-1) - 1
    return np.where(mask == 0, 1, positions).astype(np.int64)


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
    wants_positions = "position_ids" in runner.inputs
    feeds = {"input_ids": token_ids[:, :prefill], "attention_mask": mask, **runner.empty_cache(batch)}
    if wants_positions:
        feeds["position_ids"] = _positions(mask)
    collected = []
    for step in range(steps + 1):
        outputs = runner.run(feeds)
        collected.append(outputs["logits"][:, -1])
        if step == steps:
            break
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        feeds = {"input_ids": token_ids[:, prefill + step : prefill + step + 1], "attention_mask": mask}
        if wants_positions:
            feeds["position_ids"] = _positions(mask)[:, -1:]
        for name in runner.inputs:
            if name in ("input_ids", "attention_mask", "position_ids"):
                continue
            feeds[name] = outputs[_present_name(name, runner.output_names)]
    return np.stack(collected, axis=1)


def right_padded_logits(
    runner, token_ids: np.ndarray, lengths: list[int], prefill: int, steps: int
) -> np.ndarray:
    """GroupQueryAttention's own padding convention: row b's lengths[b] tokens come first in the prefill
    (right padding), then each step appends one token per row (token_ids[b, lengths[b] + step]) and a 1 to
    the mask. Returns logits [B, steps + 1, V]: each row's last real prefill position, then each step."""
    batch = token_ids.shape[0]
    mask = np.zeros((batch, prefill), dtype=np.int64)
    prompt = np.zeros((batch, prefill), dtype=token_ids.dtype)
    for b, length in enumerate(lengths):
        mask[b, :length] = 1
        prompt[b, :length] = token_ids[b, :length]
    outputs = runner.run({"input_ids": prompt, "attention_mask": mask, **runner.empty_cache(batch)})
    collected = [outputs["logits"][np.arange(batch), np.asarray(lengths) - 1]]
    for step in range(steps):
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        tokens = np.stack([token_ids[b, length + step] for b, length in enumerate(lengths)])[:, None]
        feeds = {"input_ids": tokens, "attention_mask": mask}
        for name in runner.inputs:
            if name not in ("input_ids", "attention_mask"):
                feeds[name] = outputs[_present_name(name, runner.output_names)]
        outputs = runner.run(feeds)
        collected.append(outputs["logits"][:, -1])
    return np.stack(collected, axis=1)


class GqaOriginalRunner(OriginalRunner):
    """An onnxruntime-genai original (GroupQueryAttention): its cache inputs declare D as a symbol, so the
    empty past gets `head_dim`; layers with sliding_window_cache=1 take a window-sized cache, so theirs gets
    `local_window_size` slots (ORT refuses a smaller capacity) and is fed back like any other."""

    def __init__(self, path: str, head_dim: int) -> None:
        super().__init__(path)
        self.head_dim = head_dim
        model = onnx.load(path, load_external_data=False)
        self.capacity: dict[str, int] = {}
        for node in model.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "GroupQueryAttention" and attrs.get("sliding_window_cache", 0):
                for name in node.input[3:5]:
                    self.capacity[name] = int(attrs["local_window_size"])

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        feeds = super().empty_cache(batch)
        for name, cache in feeds.items():
            shape = [*cache.shape[:2], self.capacity.get(name, 0), self.head_dim]
            feeds[name] = np.zeros(shape, dtype=cache.dtype)
        return feeds


def _present_name(past: str, outputs: list[str]) -> str:
    for prefix in ("present", "present_key_values"):
        for old in ("past_key_values", "past"):
            if past.startswith(old + "."):
                candidate = prefix + past[len(old) :]
                if candidate in outputs:
                    return candidate
    raise KeyError(f"no present output pairs with {past}")


class OrtConvertedRunner(ConvertedRunner):
    """The converted model in ONNX Runtime with the tqexport custom-op library (helper "build")."""

    def __init__(self, path: str) -> None:
        from tqexport.runtime import register_with

        super().__init__(onnx.load(path, load_external_data=False), reference=False)
        options = ort.SessionOptions()
        register_with(options)
        self.ort_session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.ort_session.run(None, feeds), strict=True))


def ort_library_available() -> bool:
    try:
        from tqexport.runtime import ort_library_path

        ort_library_path()
    except Exception:  # noqa: BLE001 - any failure means: not available
        return False
    return True
