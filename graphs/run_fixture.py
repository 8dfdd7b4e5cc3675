"""Run a fixture graph in ONNX Runtime (CPU) one step at a time, with an explicit KV cache.

Needs only numpy and onnxruntime (no torch), so the pass's tests can call it on the CI machine:

    sess = open_session("graphs/fixtures/optimum/llama/model.onnx")
    past = empty_past(sess, batch=2, num_kv_heads=2, head_dim=32)
    step = run_step(sess, input_ids, attention_mask, past)          # prefill
    step = run_step(sess, next_ids, longer_mask, step.present)      # one cached decode step

Cache tensors are [B, Hkv, T, Dh]. Layers are found by name: `past_key_values.{i}.key|value`
(or `past.{i}.key|value`) in, `present.{i}.key|value` (or `present_key_values.{i}...`) out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PAST_RE = re.compile(r"^past(?:_key_values)?[._](\d+)[._](key|value)$")
_PRESENT_RE = re.compile(r"^present(?:_key_values)?[._](\d+)[._](key|value)$")
_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


@dataclass
class StepResult:
    """Outputs of one step: logits [B, S, V] and the flat present cache [k0, v0, k1, v1, ...]."""

    logits: np.ndarray
    present: list[np.ndarray]


def open_session(model_path: str | Path, threads: int = 1):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def _layer_order(names: list[str], pattern: re.Pattern[str]) -> list[str]:
    found = {(int(m.group(1)), m.group(2)): n for n in names if (m := pattern.match(n))}
    layers = sorted({layer for layer, _ in found})
    return [found[(layer, kind)] for layer in layers for kind in ("key", "value")]


def cache_input_names(session) -> list[str]:
    """Past-cache input names in layer order: [k0, v0, k1, v1, ...]."""
    return _layer_order([i.name for i in session.get_inputs()], _PAST_RE)


def cache_output_names(session) -> list[str]:
    """Present-cache output names in layer order: [k0, v0, k1, v1, ...]."""
    return _layer_order([o.name for o in session.get_outputs()], _PRESENT_RE)


def position_ids_from_mask(attention_mask: np.ndarray, num_new: int) -> np.ndarray:
    """Positions of the last `num_new` tokens for a left-padded mask (pads get position 1, as HF does)."""
    pos = np.cumsum(attention_mask.astype(np.int64), axis=-1) - 1
    pos = np.where(attention_mask == 0, 1, pos)
    return pos[:, -num_new:]


def empty_past(
    session, batch: int, num_kv_heads: int, head_dim: int, buffer_len: int | None = None
) -> list[np.ndarray]:
    """An empty past cache with the dtype the graph declares.

    buffer_len None: T = 0, and each step's present (T grown by S) is fed back as the next past.
    buffer_len N: a preallocated [B, Hkv, N, Dh] zero buffer, for graphs whose present aliases
    the past buffer (onnxruntime-genai's `past_present_share_buffer`; GroupQueryAttention then
    reads the valid length from attention_mask, and a sliding-window layer needs N >= window).
    """
    types = {i.name: i.type for i in session.get_inputs()}
    length = 0 if buffer_len is None else buffer_len
    return [
        np.zeros((batch, num_kv_heads, length, head_dim), dtype=_ORT_TO_NUMPY[types[name]])
        for name in cache_input_names(session)
    ]


def run_step(
    session,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    past: list[np.ndarray],
    position_ids: np.ndarray | None = None,
) -> StepResult:
    """One forward step. attention_mask covers past + new tokens ([B, T_past + S]).

    position_ids are derived from the mask when the graph wants them and none are given.
    """
    inputs = {i.name: i for i in session.get_inputs()}
    feeds: dict[str, np.ndarray] = {}
    cast = {name: _ORT_TO_NUMPY.get(meta.type, np.int64) for name, meta in inputs.items()}
    feeds["input_ids"] = input_ids.astype(cast["input_ids"])
    if "attention_mask" in inputs:
        feeds["attention_mask"] = attention_mask.astype(cast["attention_mask"])
    if "position_ids" in inputs:
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask, input_ids.shape[1])
        feeds["position_ids"] = position_ids.astype(cast["position_ids"])
    past_names = cache_input_names(session)
    if len(past) != len(past_names):
        raise ValueError(f"graph has {len(past_names)} past inputs, got {len(past)} tensors")
    feeds.update(dict(zip(past_names, past, strict=True)))
    missing = sorted(set(inputs) - set(feeds))
    if missing:
        raise ValueError(f"run_step does not know how to feed inputs {missing}")
    out_names = ["logits", *cache_output_names(session)]
    results = session.run(out_names, feeds)
    return StepResult(logits=results[0], present=list(results[1:]))


def teacher_forced_decode(
    session,
    tokens: np.ndarray,
    pad_mask: np.ndarray,
    prefill_len: int,
    num_kv_heads: int,
    head_dim: int,
    buffer_len: int | None = None,
) -> list[np.ndarray]:
    """Prefill tokens[:, :prefill_len], then feed the rest one token at a time.

    tokens [B, N] int, pad_mask [B, N] (0 on left padding). Returns logits per step:
    [B, prefill_len, V] first, then [B, 1, V] for each decode step. buffer_len: see empty_past.
    """
    batch, total = tokens.shape
    past = empty_past(session, batch, num_kv_heads, head_dim, buffer_len)
    logits: list[np.ndarray] = []
    step = run_step(session, tokens[:, :prefill_len], pad_mask[:, :prefill_len], past)
    logits.append(step.logits)
    for t in range(prefill_len, total):
        step = run_step(session, tokens[:, t : t + 1], pad_mask[:, : t + 1], step.present)
        logits.append(step.logits)
    return logits
