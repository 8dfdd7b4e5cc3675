"""KL, top-1 and perplexity on hand-made logits, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tqexport.eval.metrics import kl_divergence, perplexity, step_metrics, summarize, target_nll


def test_kl_of_two_coins():
    # p = (0.5, 0.5), q = (0.75, 0.25): KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3)
    ref = np.log(np.array([0.5, 0.5]))
    test = np.log(np.array([0.75, 0.25]))
    assert kl_divergence(ref, test) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert kl_divergence(ref, ref) == 0.0


def test_kl_ignores_a_constant_shift_of_logits():
    logits = np.array([[1.0, -2.0, 0.5, 3.0]])
    assert kl_divergence(logits, logits + 100.0)[0] == pytest.approx(0.0, abs=1e-12)


def test_nll_and_perplexity_of_a_uniform_model():
    logits = np.zeros((4, 10))  # uniform over 10 tokens: nll = ln 10, ppl = 10
    nll = target_nll(logits, np.array([0, 3, 9, 2]))
    np.testing.assert_allclose(nll, math.log(10))
    assert perplexity(nll) == pytest.approx(10.0)


def test_step_metrics_and_summary():
    ref = np.array([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])  # [B=1, N=2, V=3]
    test = np.array([[[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])  # step 0 equal, step 1 top-1 moved
    targets = np.array([[0, 1]])
    steps = step_metrics(ref, test, targets)
    np.testing.assert_array_equal(steps.top1_agree, [1.0, 0.0])
    np.testing.assert_array_equal(steps.max_abs_error, [0.0, 2.0])
    np.testing.assert_allclose(steps.mean_abs_error, [0.0, 4.0 / 3.0])
    assert steps.kl[0] == 0.0 and steps.kl[1] > 0.0
    # log-softmax of (2, 0, 0) at its max: 2 - ln(e^2 + 2); at a 0: -ln(e^2 + 2)
    big = math.log(math.exp(2) + 2)
    np.testing.assert_allclose(steps.nll_ref, [big - 2, big - 2])
    np.testing.assert_allclose(steps.nll_test, [big - 2, big])
    summary = summarize(steps)
    assert summary.top1_agreement == 0.5
    assert summary.ppl_original == pytest.approx(math.exp(big - 2))
    assert summary.ppl_converted == pytest.approx(math.exp(big - 1))
    assert summary.ppl_ratio == pytest.approx(math.e)
    assert summary.kl_max == pytest.approx(steps.kl[1])


def test_chunking_does_not_change_metrics():
    rng = np.random.default_rng(0)
    ref, test = rng.standard_normal((2, 2, 37, 11))
    targets = rng.integers(0, 11, (2, 37))
    a, b = step_metrics(ref, test, targets, chunk=5), step_metrics(ref, test, targets, chunk=64)
    for name in a.__dataclass_fields__:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        step_metrics(np.zeros((1, 2, 3)), np.zeros((1, 2, 4)), np.zeros((1, 2), dtype=np.int64))
