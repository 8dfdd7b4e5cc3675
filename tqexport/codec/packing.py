"""Bit packing of code segments (format.md section 4) and float16 norm storage."""

from __future__ import annotations

import numpy as np

from tqexport.codec.config import segment_widths

FLOAT16_MAX = 65504.0


def pack_codes(codes: np.ndarray, mse_bits: int) -> np.ndarray:
    """codes [..., d] (values < 2**m) -> uint8 [..., m * d / 8], segments widest first, fields LSB first."""
    codes = codes.astype(np.uint32)
    d = codes.shape[-1]
    out = []
    shift = 0
    for w in segment_widths(mse_bits):
        field = (codes >> shift) & ((1 << w) - 1)
        per_byte = 8 // w
        grouped = field.reshape(*codes.shape[:-1], d // per_byte, per_byte)
        weights = (np.arange(per_byte, dtype=np.uint32) * w)[None, :]
        out.append(np.sum(grouped << weights, axis=-1).astype(np.uint8))
        shift += w
    return np.concatenate(out, axis=-1)


def unpack_codes(data: np.ndarray, mse_bits: int, d: int) -> np.ndarray:
    """Inverse of pack_codes: uint8 [..., m * d / 8] -> int64 codes [..., d]."""
    codes = np.zeros((*data.shape[:-1], d), dtype=np.int64)
    off = 0
    shift = 0
    for w in segment_widths(mse_bits):
        nbytes = d * w // 8
        seg = data[..., off : off + nbytes].astype(np.int64)
        per_byte = 8 // w
        fields = (seg[..., :, None] >> (np.arange(per_byte) * w)) & ((1 << w) - 1)
        codes |= fields.reshape(*data.shape[:-1], d) << shift
        off += nbytes
        shift += w
    return codes


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """bool/0-1 [..., n] -> uint8 [..., n / 8], bit i at bit (i mod 8) of byte i // 8."""
    return pack_codes(bits.astype(np.uint32), 1)


def unpack_bits(data: np.ndarray, n: int) -> np.ndarray:
    return unpack_codes(data, 1, n)


def to_float16_bytes(values: np.ndarray) -> np.ndarray:
    """float64 [..., k] -> uint8 [..., 2k]: float16, nearest-even directly from float64, saturating."""
    half = np.minimum(values, FLOAT16_MAX).astype(np.float16)
    return half.view(np.uint8).reshape(*values.shape[:-1], 2 * values.shape[-1])


def from_float16_bytes(data: np.ndarray) -> np.ndarray:
    """uint8 [..., 2k] -> float16 [..., k]."""
    return np.ascontiguousarray(data).view(np.float16)
