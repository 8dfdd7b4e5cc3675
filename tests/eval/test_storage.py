"""Bytes per token and bits per element of compressed caches with a full-precision window."""

from __future__ import annotations

import pytest

from tqexport.eval.cache_io import CacheLayout
from tqexport.eval.storage import storage_report, window_tokens


class Arg:
    def __init__(self, name: str, type_: str, shape: tuple):
        self.name, self.type, self.shape = name, type_, shape


def layout(cache_type: str, last: int, with_window: bool = False, layers: int = 2) -> CacheLayout:
    inputs, outputs = [Arg("input_ids", "tensor(int64)", ("b", "s"))], [Arg("logits", "tensor(float)", ())]
    for layer in range(layers):
        for kind in ("key", "value"):
            names = [f"{layer}.{kind}"] + ([f"{layer}.{kind}_window"] if with_window else [])
            for suffix in names:
                is_window = suffix.endswith("_window")
                t, d = ("tensor(float16)", 64) if is_window else (cache_type, last)
                inputs.append(Arg(f"past_key_values.{suffix}", t, ("b", 3, "t", d)))
                outputs.append(Arg(f"present.{suffix}", t, ("b", 3, "t2", d)))
    return CacheLayout.from_io(inputs, outputs)


def test_window_pairs_by_name():
    lay = layout("tensor(uint8)", 36, with_window=True)
    assert len(lay.cache_slots) == 4 and len(lay.window_slots) == 4
    assert {s.present_name for s in lay.window_slots} == {
        f"present.{i}.{k}_window" for i in (0, 1) for k in ("key", "value")
    }


def test_compressed_with_window_counts_every_byte():
    # 4-bit MSE codes for D = 64: 32 bytes of codes + 2 bytes of float16 norm = 34-byte rows (format.md 4).
    original = layout("tensor(float16)", 64)
    converted = layout("tensor(uint8)", 34, with_window=True)
    config = {"format_version": 1, "sink_tokens": 4, "recent_window": 60}
    report = storage_report(original, converted, config, context_tokens=1000)
    elements = 2 * 2 * 3 * 64
    assert report.elements_per_token == elements
    assert report.original_bits_per_element == 16.0
    # 64 window tokens at 2 bytes/elem, 936 compressed tokens at 34 bytes/row, per (layer, kind, head).
    expected_bytes = (64 * 64 * 2 + 936 * 34) * 2 * 2 * 3 / 1000
    assert report.converted_bytes_per_token == pytest.approx(expected_bytes)
    assert report.converted_bits_per_element == pytest.approx(8 * expected_bytes / elements)
    assert report.converted_bits_per_element_long == pytest.approx(34 * 8 / 64)  # 4.25
    short = storage_report(original, converted, config, context_tokens=10)  # all in the window
    assert short.converted_bits_per_element == pytest.approx(16.0)


def test_window_tokens_from_per_layer_config():
    assert window_tokens(None) == 0
    assert window_tokens({"layers": [{"sink_tokens": 2, "recent_window": 8}, {"recent_window": 16}]}) == 16
