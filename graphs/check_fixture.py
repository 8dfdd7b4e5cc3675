"""Compare a fixture's ORT CPU logits with the torch model it came from.

Batch 2 with left padding (row 1 has 4 pad tokens), a 10-token prefill, then 4 cached decode
steps, teacher-forced. 14 tokens in all, so Gemma2's window of 8 is crossed in prefill and decode.
Only positions that hold a real token are compared (pad rows may legitimately differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from graphs.flat_cache import make_dynamic_cache
from graphs.run_fixture import open_session, position_ids_from_mask, teacher_forced_decode
from graphs.tiny_models import VOCAB

PREFILL = 10
DECODE_STEPS = 4
PAD_ROW1 = 4


@dataclass
class CheckResult:
    max_abs_diff: float  # over real-token logits of all steps
    max_abs_logit: float  # scale of the logits, for reading the diff
    argmax_agree: bool

    def ok(self, tol: float = 1e-4) -> bool:
        return self.max_abs_diff <= tol and self.argmax_agree


def check_inputs(seed: int = 7, pad_row1: int = PAD_ROW1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    total = PREFILL + DECODE_STEPS
    tokens = rng.integers(3, VOCAB, size=(2, total)).astype(np.int64)
    mask = np.ones((2, total), dtype=np.int64)
    mask[1, :pad_row1] = 0
    tokens[1, :pad_row1] = 0
    return tokens, mask


def torch_decode(model: torch.nn.Module, tokens: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """The same teacher-forced schedule in torch, with a full-length DynamicCache."""
    steps = [(0, PREFILL)] + [(t, t + 1) for t in range(PREFILL, tokens.shape[1])]
    cache = make_dynamic_cache([])
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start, end in steps:
            m = mask[:, :end]
            result = model(
                input_ids=torch.from_numpy(tokens[:, start:end]),
                attention_mask=torch.from_numpy(m),
                position_ids=torch.from_numpy(position_ids_from_mask(m, end - start)),
                past_key_values=cache,
                use_cache=True,
            )
            cache = result.past_key_values
            out.append(result.logits.float().numpy())
    return out


def compare(
    model: torch.nn.Module,
    onnx_path: Path,
    num_kv_heads: int,
    head_dim: int,
    pad_row1: int = PAD_ROW1,
    buffer_len: int | None = None,
) -> CheckResult:
    tokens, mask = check_inputs(pad_row1=pad_row1)
    ref = torch_decode(model, tokens, mask)
    session = open_session(onnx_path)
    got = teacher_forced_decode(session, tokens, mask, PREFILL, num_kv_heads, head_dim, buffer_len)
    worst, scale, agree = 0.0, 0.0, True
    offsets = [0] + list(range(PREFILL, tokens.shape[1]))
    for r, g, start in zip(ref, got, offsets, strict=True):
        if r.shape != g.shape:
            raise ValueError(f"logits shape {g.shape} from ORT vs {r.shape} from torch")
        real = mask[:, start : start + r.shape[1]].astype(bool)
        diff = np.abs(r - g)[real]
        worst = max(worst, float(diff.max()))
        scale = max(scale, float(np.abs(r[real]).max()))
        agree = agree and bool((r.argmax(-1)[real] == g.argmax(-1)[real]).all())
    return CheckResult(max_abs_diff=worst, max_abs_logit=scale, argmax_agree=agree)
