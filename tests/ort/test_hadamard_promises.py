"""The constant-Hadamard promise attributes (docs/format.md 8.3) on the ORT ops: a promise that holds changes
nothing in the outputs; one that does not (rotation fed at run time, not Hadamard-structured, codebook not
constant, a value other than 0/1) refuses the node at session creation, naming the attribute and what failed.
CPU here; the CUDA provider's rows carry the `gpu` marker (skipped with a reason without a CUDA device)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cases import empty_cache, make_codec, quantize_inputs, small_attention_case
from ort_ops import CPU, CUDA, run_attention, run_quantize

PROVIDERS = [CPU, pytest.param(CUDA, marks=pytest.mark.gpu)]
Q_CONSTANTS = ("rotation", "codebook")
A_CONSTANTS = ("k_rotation", "k_codebook", "v_rotation", "v_codebook")


def _quantize_case(rotation: str = "hadamard") -> tuple[dict, dict]:
    codec = make_codec(64, bits=(4,), kv_heads=2, rotation=rotation)
    x = np.random.default_rng(3).standard_normal((2, 2, 5, 64)).astype(np.float32)
    return quantize_inputs(x, codec, empty_cache(2, 2, codec, 0))


def _flip_one_bit(rotation: np.ndarray) -> np.ndarray:
    broken = rotation.copy()
    broken.reshape(-1)[5 * 64 + 7] = np.nextafter(broken.reshape(-1)[5 * 64 + 7], np.float32(2.0))
    return broken


@pytest.mark.parametrize("provider", PROVIDERS)
def test_quantize_promise_that_holds_changes_no_byte(provider: str) -> None:
    inputs, attrs = _quantize_case()
    plain, _ = run_quantize(inputs, attrs, provider=provider, constants=Q_CONSTANTS)
    promise = {**attrs, "constant_hadamard": 1}
    promised, _ = run_quantize(inputs, promise, provider=provider, constants=Q_CONSTANTS)
    assert plain.shape == (2, 2, 5, 34)
    np.testing.assert_array_equal(promised, plain)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("case", "constants", "why"),
    [
        ("hadamard", ("codebook",), "input 2 'rotation' is a constant Sylvester-Hadamard rotation "
         "(docs/format.md 8.3), but it is not a constant initializer"),
        ("dense", Q_CONSTANTS, "but it is not Sylvester-Hadamard-structured"),
        ("one bit off", Q_CONSTANTS, "but it is not Sylvester-Hadamard-structured"),
        ("hadamard", ("rotation",), "but input 3 'codebook' is not a constant initializer"),
    ],
)  # fmt: skip
def test_quantize_promise_that_does_not_hold_is_refused(
    provider: str, case: str, constants: tuple, why: str
) -> None:
    inputs, attrs = _quantize_case("dense" if case == "dense" else "hadamard")
    if case == "one bit off":
        inputs["rotation"] = _flip_one_bit(inputs["rotation"])
    head = re.escape("TQQuantize: attribute 'constant_hadamard' = 1 promises")
    with pytest.raises(Exception, match=head) as e:
        run_quantize(inputs, {**attrs, "constant_hadamard": 1}, provider=provider, constants=constants)
    assert why in str(e.value)


def test_quantize_promise_value_out_of_range() -> None:
    inputs, attrs = _quantize_case()
    with pytest.raises(Exception, match=re.escape("'constant_hadamard'")):
        run_quantize(inputs, {**attrs, "constant_hadamard": 2}, constants=Q_CONSTANTS)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_attention_promises_that_hold_change_nothing(provider: str) -> None:
    inputs, attrs = small_attention_case(head_dim=64)
    plain = run_attention(inputs, attrs, provider=provider, constants=A_CONSTANTS)
    promised = run_attention(
        inputs,
        {**attrs, "k_constant_hadamard": 1, "v_constant_hadamard": 1},
        provider=provider,
        constants=A_CONSTANTS,
    )
    assert np.isfinite(plain).all() and np.abs(plain).max() > 0.1
    np.testing.assert_array_equal(promised, plain)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("side", ["k", "v"])
def test_attention_promise_on_a_broken_rotation_is_refused(provider: str, side: str) -> None:
    inputs, attrs = small_attention_case(head_dim=64)
    inputs[f"{side}_rotation"] = _flip_one_bit(inputs[f"{side}_rotation"])
    slot = 4 if side == "k" else 6
    promise = {**attrs, f"{side}_constant_hadamard": 1}
    head = re.escape(f"TQAttention: attribute '{side}_constant_hadamard' = 1")
    with pytest.raises(Exception, match=head) as e:
        run_attention(inputs, promise, provider=provider, constants=A_CONSTANTS)
    assert f"input {slot} '{side}_rotation'" in str(e.value)
    assert "not Sylvester-Hadamard-structured" in str(e.value)


def test_attention_promise_on_a_fed_rotation_is_refused() -> None:
    inputs, attrs = small_attention_case(head_dim=64)
    with pytest.raises(Exception, match="it is not a constant initializer"):
        run_attention(inputs, {**attrs, "v_constant_hadamard": 1}, constants=("k_rotation",))
