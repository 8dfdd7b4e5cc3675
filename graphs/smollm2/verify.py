"""Check an exported decoder against its torch model: ORT prefill logits, then ORT cached decode steps.

The torch side runs the whole sequence in one uncached forward pass, so the check covers both the ONNX
arithmetic and the ONNX cache plumbing (presents fed back as past, positions, attention mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

from graphs.smollm2.ort_runner import OrtCausalLM

# ORT CPU and torch CPU differ in float32 summation order; measured ~1.3e-4 on SmolLM2 logits (|logit| ~ 20).
LOGITS_ATOL = 2e-3

SAMPLE_TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
    "considered the rightful property of some one or other of their daughters."
)


class ExportMismatchError(RuntimeError):
    """ORT logits of the exported model differ from torch beyond tolerance."""


@dataclass(frozen=True)
class VerifyResult:
    prefill_tokens: int
    decode_steps: int
    prefill_max_abs: float
    decode_max_abs: float
    top1_agree: float

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def verify_export(
    model_path: Path, torch_model: PreTrainedModel, token_ids: list[int], prefill_tokens: int
) -> VerifyResult:
    """Prefill `prefill_tokens` of `token_ids` in ORT, decode the rest one cached step at a time, compare."""
    if not 0 < prefill_tokens < len(token_ids):
        raise ValueError(f"need 0 < prefill_tokens ({prefill_tokens}) < len(token_ids) ({len(token_ids)})")
    with torch.no_grad():
        want = torch_model(torch.tensor([token_ids])).logits[0].float().numpy()
    runner = OrtCausalLM(model_path)
    got_prefill = runner.prefill(token_ids[:prefill_tokens])
    got_decode = np.stack([runner.decode(tok) for tok in token_ids[prefill_tokens:]])
    got = np.concatenate([got_prefill, got_decode])
    prefill_diff = float(np.abs(got_prefill - want[:prefill_tokens]).max())
    decode_diff = float(np.abs(got_decode - want[prefill_tokens:]).max())
    result = VerifyResult(
        prefill_tokens=prefill_tokens,
        decode_steps=len(token_ids) - prefill_tokens,
        prefill_max_abs=prefill_diff,
        decode_max_abs=decode_diff,
        top1_agree=float((got.argmax(-1) == want.argmax(-1)).mean()),
    )
    if not (prefill_diff <= LOGITS_ATOL and decode_diff <= LOGITS_ATOL):
        raise ExportMismatchError(
            f"{model_path}: ORT vs torch max |logit diff| prefill {prefill_diff:.3g}, "
            f"cached decode {decode_diff:.3g} (tolerance {LOGITS_ATOL})"
        )
    return result
