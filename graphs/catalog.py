"""The catalog of committed fixture graphs: what each one is, and which exports failed and why.

Reads graphs/fixtures/manifest.json (written by graphs.build_tiny); needs no torch or onnx, so the
pass's tests use it on the CI machine:

    from graphs.catalog import FIXTURES, fixtures
    for fx in fixtures(exporter="optimum"):
        fx.path, fx.cache_inputs[0]   # Path(.../model.onnx), ("past_key_values.0.key", "...value")

Letters as in docs/format.md: B batch, Hkv KV heads, T cached length, Dh head dim; every cache
tensor here is [B, Hkv, T, Dh] float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GRAPHS = Path(__file__).resolve().parent
REPO = GRAPHS.parent
MANIFEST = GRAPHS / "fixtures" / "manifest.json"

# Per-architecture facts (mirrors graphs/tiny_models.py without importing transformers).
_ARCH_KV_HEADS = {
    "llama": 2,
    "qwen2": 2,
    "mistral": 2,
    "phi3": 2,
    "gemma2": 2,
    "gpt2": 4,
    "gpt_neox": 4,
    "opt": 4,
}
_ARCH_SOFTCAP = {"gemma2": 50.0}
_ARCH_WINDOW = {"gemma2": 8}  # layer 0 only (layer_types = [sliding, full])

# What the attention read looks like in each exporter's graph (layer 0, past key -> scores).
# README.md has the full op sequences per exporter and architecture.
ATTENTION_FORMS: dict[str, str] = {
    "optimum": "decomposed: Concat(axis=-2) [-> Unsqueeze/Expand/Reshape GQA repeat] -> Transpose(0,1,3,2) "
    "-> Mul(sqrt(scale)) on K and on Q -> MatMul -> Add(mask) -> Softmax -> MatMul(V)",
    "dynamo_sdpa_opset18": "decomposed sdpa: Concat(axis=-2) [-> GQA repeat] -> Reshape 3D "
    "-> Transpose(0,2,1) -> Reshape 4D -> Mul(sqrt(scale)) -> MatMul -> Add(mask) -> Softmax -> MatMul(V)",
    "dynamo_eager_opset18": "HF eager: Concat(axis=-2) [-> GQA repeat] -> Transpose(0,1,3,2) -> MatMul "
    "-> Mul(scale) -> Add(mask) -> Softmax -> MatMul(V)",
    "dynamo_sdpa_opset23": "ONNX Attention (opset 23) fed by Concat(axis=-2) [-> GQA repeat]; "
    "mask is a bool/float attn_mask input; RotaryEmbedding op for RoPE archs",
    "torchscript": "as optimum (same legacy exporter): Concat(axis=-2) -> ... -> Transpose(0,1,3,2) "
    "-> Mul(sqrt(scale)) -> MatMul -> Add(mask) -> Softmax -> MatMul(V)",
    "genai": "fused com.microsoft.GroupQueryAttention (packed QKV input, past/present in and out, "
    "do_rotary=1 with cos/sin caches, seqlens_k from ReduceSum(attention_mask)-1)",
}


@dataclass(frozen=True)
class Fixture:
    """One committed, checked fixture graph."""

    path: Path  # .../model.onnx (weights may sit beside it in model.onnx.data)
    exporter: str
    arch: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    cache_inputs: tuple[tuple[str, str], ...]  # per layer (key, value), [B, Hkv, T_past, Dh]
    cache_outputs: tuple[tuple[str, str], ...]  # per layer (key, value), [B, Hkv, T_past + S, Dh]
    inputs: tuple[str, ...]
    has_softcap: bool
    softcap: float | None
    sliding_window: int | None
    dtype: str
    opsets: dict[str, int]
    attention_form: str
    key_path: tuple[str, ...]  # ops from layer 0's past key to the attention scores
    value_path: tuple[str, ...]  # ops from layer 0's past value to its consumer MatMul/attention
    verified: bool  # ORT logits match torch within tolerance (unpadded batch)
    max_abs_diff: float  # ORT vs torch logits, teacher-forced decode, batch 2, no padding
    max_abs_diff_left_pad: float | None  # same with row 1 left-padded by 4 (None: ORT errored)
    left_padding_ok: bool  # False: only unpadded batches reproduce torch (see note)
    shared_buffer_len: int | None  # genai: past is a preallocated [B, Hkv, N, Dh] buffer
    note: str

    @property
    def has_position_ids(self) -> bool:
        return "position_ids" in self.inputs

    @property
    def config_path(self) -> Path:
        return self.path.parent / "config.json"


@dataclass(frozen=True)
class FailedExport:
    exporter: str
    arch: str
    reason: str


@dataclass(frozen=True)
class NegativeFixture:
    name: str
    path: Path
    why_refused: str


def _load() -> tuple[list[Fixture], list[FailedExport], list[Fixture], list[NegativeFixture]]:
    if not MANIFEST.exists():
        return [], [], [], []
    data = json.loads(MANIFEST.read_text())
    committed: list[Fixture] = []
    failed: list[FailedExport] = []
    scratch: list[Fixture] = []
    for r in data["fixtures"]:
        if not r["ok"]:
            failed.append(FailedExport(r["exporter"], r["arch"], r["reason"]))
        if r.get("max_abs_diff_no_pad") is None:  # never ran in ORT: nothing to offer
            continue
        fx = Fixture(
            path=REPO / r["path"],
            exporter=r["exporter"],
            arch=r["arch"],
            num_layers=data["num_layers"],
            num_heads=data["num_heads"],
            num_kv_heads=_ARCH_KV_HEADS[r["arch"]],
            head_dim=data["head_dim"],
            cache_inputs=tuple((k, v) for k, v in r["cache_inputs"]),
            cache_outputs=tuple((k, v) for k, v in r["cache_outputs"]),
            inputs=tuple(r["inputs"]),
            has_softcap=r["arch"] in _ARCH_SOFTCAP,
            softcap=_ARCH_SOFTCAP.get(r["arch"]),
            sliding_window=_ARCH_WINDOW.get(r["arch"]),
            dtype=r["cache_dtype"],
            opsets=r["opsets"],
            attention_form=ATTENTION_FORMS[r["exporter"]],
            key_path=tuple(r["key_path"]),
            value_path=tuple(r["value_path"]),
            verified=bool(r["ok"]),
            max_abs_diff=r["max_abs_diff_no_pad"],
            max_abs_diff_left_pad=r["max_abs_diff"],
            left_padding_ok=bool(r["left_padding_ok"]),
            shared_buffer_len=r.get("shared_buffer_len"),
            note=r["reason"],
        )
        (committed if r.get("committed") else scratch).append(fx)
    negatives = [
        NegativeFixture(n["name"], REPO / n["path"] / "model.onnx", n["why_refused"])
        for n in data.get("negatives", [])
        if n["ok"]
    ]
    return committed, failed, scratch, negatives


FIXTURES, FAILED, UNCOMMITTED, NEGATIVES = _load()


def fixtures(
    exporter: str | None = None,
    arch: str | None = None,
    left_padding_ok: bool | None = None,
    verified: bool | None = True,
) -> list[Fixture]:
    """Committed fixtures, filtered; by default only those that match torch (verified)."""
    return [
        f
        for f in FIXTURES
        if (exporter is None or f.exporter == exporter)
        and (arch is None or f.arch == arch)
        and (left_padding_ok is None or f.left_padding_ok == left_padding_ok)
        and (verified is None or f.verified == verified)
    ]


def fixture(exporter: str, arch: str) -> Fixture:
    found = fixtures(exporter, arch, verified=None)
    if not found:
        raise KeyError(f"no committed fixture {exporter}/{arch}; see graphs/README.md for the matrix")
    return found[0]
