"""Every bad input to the ORT ops fails with a message naming the op, the input or attribute, and what was
seen vs expected: never a crash, never a silent wrong answer. One test per case; each starts from a valid case
(tests/ort/cases.py) and breaks one thing."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cases import BUFFER, empty_cache, make_codec, quantize_inputs, small_attention_case
from ort_ops import run_attention, run_quantize


def _quantize_case(**cache_attrs: int) -> tuple[dict, dict]:
    codec = make_codec(32, bits=(4,), kv_heads=2)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 32)).astype(np.float32)
    w = cache_attrs.get("sink_tokens", 0) + cache_attrs.get("recent_window", 0)
    window = (
        np.zeros((2, 2, w if cache_attrs.get("cache_mode") == BUFFER else 0, 32), np.float32) if w else None
    )
    lengths = np.array([0, 2], np.int64) if cache_attrs.get("cache_mode") == BUFFER else None
    rows = 4 if cache_attrs.get("cache_mode") == BUFFER else 0
    return quantize_inputs(x, codec, empty_cache(2, 2, codec, rows), window, lengths, **cache_attrs)


def _raises_quantize(inputs: dict, attrs: dict, pattern: str, **kwargs) -> None:
    with pytest.raises(Exception, match=pattern):
        run_quantize(inputs, attrs, **kwargs)


def _raises_attention(inputs: dict, attrs: dict, pattern: str) -> None:
    with pytest.raises(Exception, match=pattern):
        run_attention(inputs, attrs)


def test_valid_cases_run() -> None:
    """The unbroken cases pass, so each failure below is caused by the one thing it breaks."""
    run_quantize(*_quantize_case())
    run_quantize(*_quantize_case(cache_mode=BUFFER, sink_tokens=1, recent_window=2))
    run_attention(*small_attention_case())


# ------------------------------------------------------------------------------------------------ TQQuantize


@pytest.mark.parametrize(("dtype", "onnx_name"), [(np.int32, "int32"), (np.float64, "double")])
def test_quantize_x_wrong_dtype(dtype, onnx_name: str) -> None:
    inputs, attrs = _quantize_case()
    inputs["x"] = inputs["x"].astype(dtype)
    _raises_quantize(
        inputs,
        attrs,
        re.escape(f"Type 'tensor({onnx_name})' of input parameter (x) of operator (TQQuantize)"),
    )


def test_quantize_x_wrong_rank() -> None:
    inputs, attrs = _quantize_case()
    inputs["x"] = inputs["x"][0]
    _raises_quantize(
        inputs, attrs, re.escape("TQQuantize: input 'x' (0): shape [2, 3, 32], expected [B, Hkv, S, D]")
    )


def test_quantize_head_dim_not_sum_of_part_sizes() -> None:
    inputs, attrs = _quantize_case()
    inputs["x"] = inputs["x"][..., :16].copy()
    _raises_quantize(inputs, attrs, re.escape("head dim D=16 (shape [2, 2, 3, 16]) but sum('part_sizes')=32"))


@pytest.mark.parametrize("bits", [0, 9])
def test_quantize_bits_out_of_range(bits: int) -> None:
    inputs, attrs = _quantize_case()
    attrs["bits"] = [bits]
    _raises_quantize(
        inputs, attrs, re.escape(f"TQQuantize: attribute 'bits'=[{bits}]: bits[0]={bits} is out of range")
    )


def test_quantize_bits_inconsistent_with_cache_last_dim() -> None:
    inputs, attrs = _quantize_case()
    attrs["bits"] = [3]  # row_bytes 16, the cache has 18
    inputs["codebook"] = make_codec(32, bits=(3,)).codebook
    _raises_quantize(inputs, attrs, re.escape("input 'past_cache' (1): last dim (row_bytes) is 18"))


def test_quantize_qjl_needs_two_bits() -> None:
    inputs, attrs = _quantize_case()
    attrs.update(bits=[1], qjl=1)
    _raises_quantize(inputs, attrs, r"TQQuantize: attributes 'bits'=\[1\].*must be >= 2 when qjl=1")


def test_quantize_part_size_not_multiple_of_16() -> None:
    inputs, attrs = _quantize_case()
    attrs.update(bits=[4, 4], part_sizes=[24, 8])
    _raises_quantize(inputs, attrs, re.escape("part_sizes[0]=24 must be a positive multiple of 16"))


def test_quantize_bits_and_part_sizes_lengths_differ() -> None:
    inputs, attrs = _quantize_case()
    attrs.update(bits=[4, 4], part_sizes=[32])
    _raises_quantize(inputs, attrs, r"'bits'=\[4, 4\] and 'part_sizes'=\[32\] must have the same length")


def test_quantize_missing_bits_attribute() -> None:
    inputs, attrs = _quantize_case()
    del attrs["bits"]
    _raises_quantize(inputs, attrs, "required attribute 'bits'")


def test_quantize_unknown_format_version() -> None:
    inputs, attrs = _quantize_case()
    attrs["format_version"] = 2
    _raises_quantize(inputs, attrs, re.escape("attribute 'format_version'=2 is out of range [1, 1]"))


def test_quantize_bad_cache_mode() -> None:
    inputs, attrs = _quantize_case()
    attrs["cache_mode"] = 2
    _raises_quantize(inputs, attrs, re.escape("attribute 'cache_mode'=2 is out of range [0, 1]"))


def test_quantize_past_cache_batch_mismatch() -> None:
    inputs, attrs = _quantize_case()
    inputs["past_cache"] = inputs["past_cache"][:1]
    _raises_quantize(
        inputs,
        attrs,
        re.escape("input 'past_cache' (1): shape [1, 2, 0, 18], expected [B, Hkv, Tc, row_bytes]"),
    )


def test_quantize_rotation_heads_neither_one_nor_hkv() -> None:
    inputs, attrs = _quantize_case()
    inputs["rotation"] = np.repeat(inputs["rotation"], 3, axis=0)
    _raises_quantize(inputs, attrs, re.escape("Hr=3 must be 1 or Hkv=2"))


def test_quantize_codebook_wrong_shape() -> None:
    inputs, attrs = _quantize_case()
    inputs["codebook"] = inputs["codebook"][:, :128].copy()
    _raises_quantize(inputs, attrs, re.escape("input 'codebook' (3): shape [1, 128], expected [P, 256]"))


def test_quantize_qjl_without_matrix() -> None:
    codec = make_codec(32, bits=(3,), qjl=True, kv_heads=2)
    x = np.zeros((1, 2, 1, 32), np.float32)
    inputs, attrs = quantize_inputs(x, codec, empty_cache(1, 2, codec))
    inputs["qjl_matrix"] = None
    _raises_quantize(inputs, attrs, re.escape("input 'qjl_matrix' (4) is required when qjl=1 but absent"))


def test_quantize_window_attributes_without_window_input() -> None:
    inputs, attrs = _quantize_case(sink_tokens=2)
    inputs["past_window"] = None
    _raises_quantize(
        inputs, attrs, "input 'past_window' \\(5\\) is required when sink_tokens \\+ recent_window > 0"
    )


def test_quantize_window_attributes_without_window_output() -> None:
    inputs, attrs = _quantize_case(recent_window=2)
    _raises_quantize(inputs, attrs, "output 'present_window' \\(1\\) is required", with_window_output=False)


def test_quantize_concat_window_short_while_cache_nonempty() -> None:
    inputs, attrs = _quantize_case(sink_tokens=1, recent_window=2)
    inputs["past_cache"] = empty_cache(2, 2, make_codec(32), rows=3)
    inputs["past_window"] = np.zeros((2, 2, 1, 32), np.float32)
    _raises_quantize(inputs, attrs, r"Tc=3 compressed rows but input 'past_window' holds only Wd=1 < W=3")


def test_quantize_buffer_mode_without_past_lengths() -> None:
    inputs, attrs = _quantize_case(cache_mode=BUFFER)
    inputs["past_lengths"] = None
    _raises_quantize(
        inputs, attrs, re.escape("input 'past_lengths' (6) is required when cache_mode=1 (buffer)")
    )


def test_quantize_buffer_overflow() -> None:
    inputs, attrs = _quantize_case(cache_mode=BUFFER)
    inputs["past_lengths"] = np.array([0, 2], np.int64)  # 2 + 3 tokens > capacity 4
    _raises_quantize(
        inputs,
        attrs,
        r"buffer overflow: sequence 1 has past_lengths=2 \+ S=3 tokens, needing 5 "
        r"compressed rows, but input 'past_cache' has capacity 4",
    )


def test_quantize_negative_past_length() -> None:
    inputs, attrs = _quantize_case(cache_mode=BUFFER)
    inputs["past_lengths"] = np.array([-1, 0], np.int64)
    _raises_quantize(inputs, attrs, re.escape("past_lengths[0]=-1 is negative"))


def test_quantize_buffer_window_wrong_rows() -> None:
    inputs, attrs = _quantize_case(cache_mode=BUFFER, sink_tokens=1, recent_window=2)
    inputs["past_window"] = np.zeros((2, 2, 2, 32), np.float32)
    _raises_quantize(
        inputs,
        attrs,
        re.escape("input 'past_window' (5): shape [2, 2, 2, 32], expected [B, Hkv, Wd, D] = [2, 2, 3, 32]"),
    )


# ------------------------------------------------------------------------------------------------ TQAttention


@pytest.mark.parametrize(("dtype", "onnx_name"), [(np.int32, "int32"), (np.float64, "double")])
def test_attention_q_wrong_dtype(dtype, onnx_name: str) -> None:
    inputs, attrs = small_attention_case()
    inputs["q"] = inputs["q"].astype(dtype)
    _raises_attention(
        inputs,
        attrs,
        re.escape(f"Type 'tensor({onnx_name})' of input parameter (q) of operator (TQAttention)"),
    )


def test_attention_q_wrong_rank() -> None:
    inputs, attrs = small_attention_case()
    inputs["q"] = inputs["q"][:, :, 0]
    _raises_attention(
        inputs, attrs, re.escape("TQAttention: input 'q' (0): shape [2, 4, 32], expected [B, Hq, S, D]")
    )


def test_attention_head_counts_do_not_divide() -> None:
    inputs, attrs = small_attention_case(kv_heads=2, group=2)
    inputs["q"] = inputs["q"][:, :3].copy()
    _raises_attention(inputs, attrs, r"query heads Hq=3 .* is not a multiple of kv heads Hkv=2")


@pytest.mark.parametrize(("name", "value"), [("k_bits", 0), ("v_bits", 9)])
def test_attention_bits_out_of_range(name: str, value: int) -> None:
    inputs, attrs = small_attention_case()
    attrs[name] = [value]
    _raises_attention(
        inputs, attrs, re.escape(f"attribute '{name}'=[{value}]: bits[0]={value} is out of range")
    )


def test_attention_k_bits_inconsistent_with_cache() -> None:
    inputs, attrs = small_attention_case()
    attrs["k_bits"] = [2]
    _raises_attention(
        inputs, attrs, r"input 'k_cache' \(1\): last dim \(row_bytes\) is 18 .* give row_bytes=10"
    )


def test_attention_v_bits_inconsistent_with_cache() -> None:
    inputs, attrs = small_attention_case()
    attrs["v_bits"] = [4]
    _raises_attention(
        inputs, attrs, r"input 'v_cache' \(2\): last dim \(row_bytes\) is 14 .* give row_bytes=18"
    )


def test_attention_k_and_v_head_dims_differ() -> None:
    inputs, attrs = small_attention_case()
    attrs.update(v_bits=[3, 3], v_part_sizes=[32, 16])
    _raises_attention(inputs, attrs, re.escape("sum('k_part_sizes')=32 != sum('v_part_sizes')=48"))


def test_attention_missing_scale() -> None:
    inputs, attrs = small_attention_case()
    del attrs["scale"]
    _raises_attention(inputs, attrs, "required attribute 'scale'")


def test_attention_v_cache_rows_differ_from_k() -> None:
    inputs, attrs = small_attention_case()
    inputs["v_cache"] = inputs["v_cache"][:, :, :-1].copy()
    _raises_attention(
        inputs,
        attrs,
        re.escape("input 'v_cache' (2): shape [2, 2, 11, 14], expected [B, Hkv, Tc, v_row_bytes]"),
    )


def test_attention_mask_wrong_query_dim() -> None:
    inputs, attrs = small_attention_case(new_tokens=1)
    inputs["mask"] = np.zeros((2, 1, 2, 12), np.float32)
    _raises_attention(
        inputs,
        attrs,
        re.escape("input 'mask' (3): shape [2, 1, 2, 12], expected [Bm, Hm, S, Tm] = [-1, -1, 1, -1]"),
    )


@pytest.mark.parametrize("shape", [(3, 1, 1, 12), (2, 3, 1, 12)])
def test_attention_mask_batch_or_heads_not_broadcastable(shape) -> None:
    inputs, attrs = small_attention_case()
    inputs["mask"] = np.zeros(shape, np.float32)
    _raises_attention(
        inputs, attrs, r"input 'mask' \(3\): shape .*: Bm must be 1 or B=2 and Hm must be 1 or Hq=4"
    )


def test_attention_mask_wrong_rank() -> None:
    inputs, attrs = small_attention_case()
    inputs["mask"] = np.zeros((1, 12), np.float32)
    _raises_attention(inputs, attrs, re.escape("input 'mask' (3): shape [1, 12], expected [Bm, Hm, S, Tm]"))


def test_attention_mask_wrong_dtype() -> None:
    inputs, attrs = small_attention_case()
    inputs["mask"] = np.zeros((2, 1, 1, 12), np.int32)
    _raises_attention(
        inputs, attrs, re.escape("input 'mask' (3): dtype int32, expected float32, float16 or bool")
    )


def test_attention_mask_length_disagrees_with_caches() -> None:
    inputs, attrs = small_attention_case(total=12)
    inputs["mask"] = np.zeros((2, 1, 1, 13), np.float32)
    _raises_attention(
        inputs, attrs, r"concat mode needs Tc \+ Wd == T and Wd == min\(T, W\): input 'mask' gives T=Tm=13"
    )


def test_attention_qjl_keys_without_matrix() -> None:
    inputs, attrs = small_attention_case(k_qjl=True)
    inputs["k_qjl_matrix"] = None
    _raises_attention(
        inputs, attrs, re.escape("input 'k_qjl_matrix' (8) is required when k_qjl=1 but absent")
    )


def test_attention_window_attributes_without_windows() -> None:
    inputs, attrs = small_attention_case(sink_tokens=2, recent_window=2)
    inputs["v_window"] = None
    _raises_attention(
        inputs, attrs, re.escape("input 'v_window' (10) is required when sink_tokens + recent_window > 0")
    )


def test_attention_rotation_wrong_shape() -> None:
    inputs, attrs = small_attention_case()
    inputs["v_rotation"] = inputs["v_rotation"][:, :16, :16].copy()
    _raises_attention(
        inputs,
        attrs,
        re.escape("input 'v_rotation' (6): shape [1, 16, 16], expected [Hr, D, D] = [-1, 32, 32]"),
    )


def _buffer_attention_case(lengths: list[int], capacity: int, mask_tokens: int) -> tuple[dict, dict]:
    inputs, attrs = small_attention_case(total=4)
    inputs["k_cache"] = np.zeros((2, 2, capacity, inputs["k_cache"].shape[3]), np.uint8)
    inputs["v_cache"] = np.zeros((2, 2, capacity, inputs["v_cache"].shape[3]), np.uint8)
    inputs["past_lengths"] = np.array(lengths, np.int64)
    inputs["mask"] = np.zeros((2, 1, 1, mask_tokens), np.float32)
    attrs["cache_mode"] = BUFFER
    return inputs, attrs


def test_attention_buffer_valid_case_runs() -> None:
    run_attention(*_buffer_attention_case([2, 5], capacity=8, mask_tokens=6))


def test_attention_buffer_overflow() -> None:
    inputs, attrs = _buffer_attention_case([2, 9], capacity=8, mask_tokens=10)
    _raises_attention(
        inputs,
        attrs,
        r"buffer overflow: sequence 1 has past_lengths=9 \+ S=1 tokens, needing 10 "
        r"compressed rows, but input 'k_cache' has capacity 8",
    )


def test_attention_buffer_mask_too_short() -> None:
    inputs, attrs = _buffer_attention_case([2, 5], capacity=8, mask_tokens=5)
    _raises_attention(inputs, attrs, re.escape("input 'mask' shape [2, 1, 1, 5]: Tm=5 < T_b=6 of sequence 1"))


def test_attention_buffer_without_past_lengths() -> None:
    inputs, attrs = _buffer_attention_case([2, 5], capacity=8, mask_tokens=6)
    inputs["past_lengths"] = None
    _raises_attention(
        inputs, attrs, re.escape("input 'past_lengths' (11) is required when cache_mode=1 (buffer)")
    )
