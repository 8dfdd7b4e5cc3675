"""Accuracy metrics of converted logits against original logits (float64 inside, pure NumPy).

Arrays are logits [..., V] at the same positions for both models, and targets [...] (the next token that
teacher forcing fed). KL is KL(original || converted) = sum_v p_orig (log p_orig - log p_conv), in nats.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_divergence(logits_ref: np.ndarray, logits_test: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(test)) per position, shape [...] (nats, >= 0)."""
    log_p = log_softmax(logits_ref)
    log_q = log_softmax(logits_test)
    return np.maximum((np.exp(log_p) * (log_p - log_q)).sum(axis=-1), 0.0)


def target_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target token, shape [...]."""
    log_p = log_softmax(logits)
    return -np.take_along_axis(log_p, np.asarray(targets, dtype=np.int64)[..., None], axis=-1)[..., 0]


def perplexity(nll: np.ndarray) -> float:
    return float(math.exp(float(np.mean(nll))))


@dataclass
class StepMetrics:
    """Per-step metrics, each of shape [N]: batch mean, except the maxima (over the batch)."""

    max_abs_error: np.ndarray
    mean_abs_error: np.ndarray
    top1_agree: np.ndarray
    kl: np.ndarray
    kl_max: np.ndarray
    nll_ref: np.ndarray
    nll_test: np.ndarray


@dataclass
class SummaryMetrics:
    positions: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float
    kl_mean: float
    kl_max: float
    ppl_original: float
    ppl_converted: float
    ppl_ratio: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def step_metrics(
    logits_ref_BNV: np.ndarray, logits_test_BNV: np.ndarray, targets_BN: np.ndarray, chunk: int = 64
) -> StepMetrics:
    """Metrics per step n of logits [B, N, V]; processed `chunk` steps at a time to bound memory."""
    if logits_ref_BNV.shape != logits_test_BNV.shape:
        raise ValueError(f"logit shapes differ: {logits_ref_BNV.shape} vs {logits_test_BNV.shape}")
    if targets_BN.shape != logits_ref_BNV.shape[:-1]:
        raise ValueError(f"targets {targets_BN.shape} do not match logits {logits_ref_BNV.shape}")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in StepMetrics.__dataclass_fields__}
    for start in range(0, logits_ref_BNV.shape[1], chunk):
        ref = np.asarray(logits_ref_BNV[:, start : start + chunk], dtype=np.float64)
        test = np.asarray(logits_test_BNV[:, start : start + chunk], dtype=np.float64)
        targets = targets_BN[:, start : start + chunk]
        err = np.abs(ref - test)
        parts["max_abs_error"].append(err.max(axis=(0, 2)))
        parts["mean_abs_error"].append(err.mean(axis=(0, 2)))
        parts["top1_agree"].append((ref.argmax(-1) == test.argmax(-1)).mean(axis=0))
        kl = kl_divergence(ref, test)
        parts["kl"].append(kl.mean(axis=0))
        parts["kl_max"].append(kl.max(axis=0))
        parts["nll_ref"].append(target_nll(ref, targets).mean(axis=0))
        parts["nll_test"].append(target_nll(test, targets).mean(axis=0))
    return StepMetrics(**{k: np.concatenate(v) for k, v in parts.items()})


def summarize(steps: StepMetrics) -> SummaryMetrics:
    ppl_ref, ppl_test = perplexity(steps.nll_ref), perplexity(steps.nll_test)
    return SummaryMetrics(
        positions=int(steps.kl.shape[0]),
        max_abs_error=float(steps.max_abs_error.max()),
        mean_abs_error=float(steps.mean_abs_error.mean()),
        top1_agreement=float(steps.top1_agree.mean()),
        kl_mean=float(steps.kl.mean()),
        kl_max=float(steps.kl_max.max()),
        ppl_original=ppl_ref,
        ppl_converted=ppl_test,
        ppl_ratio=ppl_test / ppl_ref,
    )
