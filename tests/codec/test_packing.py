"""Segment packing and float16 norm storage (format.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from tqexport.codec.config import CodecConfig, segment_widths
from tqexport.codec.packing import pack_codes, to_float16_bytes, unpack_codes


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, (7, 64))
    packed = pack_codes(codes, bits)
    assert packed.shape == (7, 64 * bits // 8)
    assert np.array_equal(unpack_codes(packed, bits, 64), codes)


def test_segments_are_binary_decomposition_widest_first() -> None:
    assert [segment_widths(m) for m in range(1, 9)] == [
        (1,),
        (2,),
        (2, 1),
        (4,),
        (4, 1),
        (4, 2),
        (4, 2, 1),
        (8,),
    ]


def test_four_bit_codes_are_nibbles_low_first() -> None:
    codes = np.array([[0x3, 0xA] + [0] * 14])
    assert pack_codes(codes, 4)[0, 0] == 0xA3


def test_three_bit_codes_are_two_bit_then_one_bit_segment() -> None:
    codes = np.zeros((1, 16), dtype=np.int64)
    codes[0, 0] = 0b101  # low 2 bits 01 -> segment 1 byte 0 bits 0-1; bit 2 -> segment 2 (offset 4) bit 0
    codes[0, 5] = 0b110  # low bits 10 -> byte 1 bits 2-3; high bit -> segment 2 byte 0 bit 5
    packed = pack_codes(codes, 3)
    assert packed.shape == (1, 6)
    assert list(packed[0]) == [0b01, 0b10 << 2, 0, 0, 0b100001, 0]


def test_float16_norms_round_directly_from_float64_and_saturate() -> None:
    # 1 + 2^-11 + 2^-40 lies just above a float16 midpoint: direct rounding goes up, via float32 it would not
    vals = np.array([[1.0 + 2**-11 + 2**-40, 1e6]])
    half = to_float16_bytes(vals).view(np.float16)
    assert half[0, 0] == np.float16(1.0 + 2**-10)
    assert half[0, 1] == np.float16(65504.0)


@pytest.mark.parametrize(
    ("parts", "bits", "qjl", "row_bytes"),
    [
        ((128,), (4,), False, 66),
        ((128,), (3,), False, 50),
        ((64,), (4,), False, 34),
        ((128,), (4,), True, 48 + 16 + 2 + 2),
        ((32, 96), (3, 2), False, 12 + 24 + 4),
        ((256,), (8,), False, 258),
    ],
)
def test_row_bytes_formula(parts: tuple[int, ...], bits: tuple[int, ...], qjl: bool, row_bytes: int) -> None:
    cfg = CodecConfig(head_dim=sum(parts), part_sizes=parts, bits=bits, qjl=qjl)
    assert cfg.row_bytes == row_bytes
