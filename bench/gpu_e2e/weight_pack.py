"""Lossless compact storage of float32 weights that were dequantized from GGUF blocks (numpy only).

SmolLM2's export (graphs/smollm2) dequantizes a Q4_1 GGUF: within each 32-value block of a GGUF row every
float32 is fl32(d * q + m) with float16 d, m and a 4-bit q (Q4_1), or d * q with float16 d and an int8 q
(Q8_0, the embedding). Those float32s are stored again here as the block parameters plus codes, which is
5.1x (Q4_1) or 3.8x (Q8_0) smaller, and decoded with the same float32 arithmetic as gguf-py's `dequantize`,
so the bytes come back exactly. Nothing is assumed to hold: the encoder finds d, m, q per block from the
values and keeps as exceptions (raw float32) the blocks whose decode is not bit-identical.

A tensor's encoding is one of:
- `q4_1`, `q8_0`: blocks of 32 along the flattened tensor, or along its transpose (`transpose`: an ONNX
  MatMul weight is [in, out], the GGUF row is [out][in]); arrays d, m (Q4_1), codes, exception indices/values;
- `transpose_of`: the transpose of an earlier tensor (the tied lm_head of the embedding); no arrays;
- `float16`: every value is a float16 exactly; `float32`: raw.

Each array is zlib-compressed on its own; `encode_tensor` returns the arrays and `decode_tensor` inverts it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

BLOCK = 32
# Candidate float16 scales around the estimate (max - min) / 15 or absmax / 127, in float16 ulps: the stored
# scale was rounded from the unrounded one, and fl32(d * 15 + m) loses a little of it again.
SCALE_ULP_OFFSETS = (0, 1, -1, 2, -2, 3, -3)
ZLIB_LEVEL = 6


@dataclass
class EncodedTensor:
    """One tensor: its encoding, parameters, and named arrays (dtype + values) to store."""

    encoding: str
    shape: tuple[int, ...]
    params: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def stored_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def _blocks(values: np.ndarray, transpose: bool) -> np.ndarray | None:
    """View of the tensor as [nb, 32] blocks (along the transpose when asked), or None if it does not tile."""
    matrix = values.T if transpose else values
    if transpose and values.ndim != 2:
        return None
    if matrix.size % BLOCK or (matrix.ndim and matrix.shape[-1] % BLOCK):
        return None
    return np.ascontiguousarray(matrix).reshape(-1, BLOCK)


def _unblock(blocks: np.ndarray, shape: tuple[int, ...], transpose: bool) -> np.ndarray:
    if transpose:
        return np.ascontiguousarray(blocks.reshape(shape[::-1]).T)
    return blocks.reshape(shape)


def dequantize_q4_1(d: np.ndarray, m: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[nb, 32] float32 from float16 d, m [nb] and uint8 codes [nb, 32], as gguf-py computes it."""
    return d.astype(np.float32)[:, None] * codes.astype(np.float32) + m.astype(np.float32)[:, None]


def dequantize_q8_0(d: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[nb, 32] float32 from float16 d [nb] and int8 codes [nb, 32], as gguf-py computes it."""
    return d.astype(np.float32)[:, None] * codes.astype(np.float32)


def _same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per block: every float32 bit pattern equal (so -0.0 != 0.0 and NaNs compare by payload)."""
    return (a.view(np.uint32) == b.view(np.uint32)).all(axis=1)


def _scale_candidates(estimate: np.ndarray) -> list[np.ndarray]:
    """Float16 scales at SCALE_ULP_OFFSETS ulps from the (non-negative, finite) float16 estimate."""
    bits = estimate.astype(np.float16).view(np.uint16).astype(np.int32)
    return [np.clip(bits + k, 0, 0x7BFF).astype(np.uint16).view(np.float16) for k in SCALE_ULP_OFFSETS]


def _solve_q4_1(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per block d, m (float16), codes (uint8 [nb, 32]) and whether they decode to the exact bits."""
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    m = low.astype(np.float16)
    m32 = m.astype(np.float32)
    offset = blocks - m32[:, None]
    d = np.zeros(len(blocks), np.float16)
    codes = np.zeros(blocks.shape, np.uint8)
    solved = np.zeros(len(blocks), bool)
    with np.errstate(all="ignore"):
        estimate = np.nan_to_num((high - m32) / np.float32(15), nan=0.0, posinf=0.0, neginf=0.0)
        for scale in _scale_candidates(np.maximum(estimate, 0)):
            todo = ~solved
            s32 = scale[todo].astype(np.float32)[:, None]
            q = np.where(s32 > 0, np.rint(offset[todo] / np.where(s32 > 0, s32, 1)), 0)
            q = np.clip(np.nan_to_num(q), 0, 15).astype(np.uint8)
            ok = _same_bits(dequantize_q4_1(scale[todo], m[todo], q), blocks[todo])
            rows = np.flatnonzero(todo)[ok]
            d[rows], codes[rows], solved[rows] = scale[todo][ok], q[ok], True
    return d, m, codes, solved


def _solve_q8_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block d (float16), codes (int8 [nb, 32]) and whether they decode to the exact bits."""
    absmax = np.abs(blocks).max(axis=1)
    d = np.zeros(len(blocks), np.float16)
    codes = np.zeros(blocks.shape, np.int8)
    solved = np.zeros(len(blocks), bool)
    with np.errstate(all="ignore"):
        estimate = np.nan_to_num(absmax / np.float32(127), nan=0.0, posinf=0.0, neginf=0.0)
        for scale in _scale_candidates(estimate):
            todo = ~solved
            s32 = scale[todo].astype(np.float32)[:, None]
            q = np.where(s32 > 0, np.rint(blocks[todo] / np.where(s32 > 0, s32, 1)), 0)
            q = np.clip(np.nan_to_num(q), -128, 127).astype(np.int8)
            ok = _same_bits(dequantize_q8_0(scale[todo], q), blocks[todo])
            rows = np.flatnonzero(todo)[ok]
            d[rows], codes[rows], solved[rows] = scale[todo][ok], q[ok], True
    return d, codes, solved


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 codes in 0..15 (even count) -> bytes, element 2i in the low nibble of byte i."""
    flat = codes.reshape(-1)
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    out = np.empty(packed.size * 2, np.uint8)
    out[0::2], out[1::2] = packed & 0x0F, packed >> 4
    return out


def _block_encoding(values: np.ndarray, kind: str, transpose: bool) -> EncodedTensor | None:
    blocks = _blocks(values, transpose)
    if blocks is None:
        return None
    if kind == "q4_1":
        d, m, codes, solved = _solve_q4_1(blocks)
        arrays = {"d": d, "m": m, "codes": pack_nibbles(codes)}
    else:
        d, codes, solved = _solve_q8_0(blocks)
        arrays = {"d": d, "codes": codes.reshape(-1)}
    exceptions = np.flatnonzero(~solved)
    arrays["exception_blocks"] = exceptions.astype(np.int64)
    arrays["exception_values"] = blocks[exceptions].reshape(-1)
    return EncodedTensor(kind, tuple(values.shape), {"transpose": transpose}, arrays)


def encode_tensor(values: np.ndarray, earlier: dict[str, np.ndarray] | None = None) -> EncodedTensor:
    """The smallest lossless encoding of a float32 tensor (`earlier`: name -> tensor, for `transpose_of`)."""
    if values.dtype != np.float32:
        raise TypeError(f"encode_tensor takes float32, got {values.dtype}")
    shape = tuple(values.shape)
    bits = values.view(np.uint32)
    if values.ndim == 2:
        for name, other in (earlier or {}).items():
            if other.shape != shape[::-1] or not np.array_equal(other[:, 0].view(np.uint32), bits[0]):
                continue  # the first row settles almost every candidate
            if np.array_equal(other.view(np.uint32).T, bits):
                return EncodedTensor("transpose_of", shape, {"source": name})
    options = [EncodedTensor("float32", shape, arrays={"values": values.reshape(-1)})]
    as_half = values.astype(np.float16)
    if np.array_equal(as_half.astype(np.float32).view(np.uint32), bits):
        options.append(EncodedTensor("float16", shape, arrays={"values": as_half.reshape(-1)}))
    if values.size >= BLOCK:
        for kind in ("q4_1", "q8_0"):
            for transpose in (False, True):
                encoded = _block_encoding(values, kind, transpose)
                if encoded is not None:
                    options.append(encoded)
                    if not len(encoded.arrays["exception_blocks"]):
                        break  # both layouts rarely fit; the first exact one is it
    return min(options, key=EncodedTensor.stored_bytes)


def decode_tensor(encoded: EncodedTensor, earlier: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """float32 values of an EncodedTensor (`earlier`: the decoded tensors it may refer to)."""
    shape, arrays = encoded.shape, encoded.arrays
    if encoded.encoding == "transpose_of":
        return np.ascontiguousarray((earlier or {})[encoded.params["source"]].T)
    if encoded.encoding in ("float32", "float16"):
        return arrays["values"].astype(np.float32).reshape(shape)
    count = int(np.prod(shape))
    if encoded.encoding == "q4_1":
        codes = unpack_nibbles(arrays["codes"]).reshape(-1, BLOCK)
        blocks = dequantize_q4_1(arrays["d"], arrays["m"], codes)
    elif encoded.encoding == "q8_0":
        blocks = dequantize_q8_0(arrays["d"], arrays["codes"].reshape(-1, BLOCK))
    else:
        raise ValueError(f"unknown weight encoding {encoded.encoding!r}")
    if blocks.size != count:
        raise ValueError(f"{encoded.encoding}: {blocks.size} decoded values for shape {shape}")
    blocks[arrays["exception_blocks"]] = arrays["exception_values"].reshape(-1, BLOCK)
    return _unblock(blocks, shape, encoded.params["transpose"])


def compress(array: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(array).tobytes(), ZLIB_LEVEL)


def decompress(payload: bytes, dtype: str, count: int) -> np.ndarray:
    array = np.frombuffer(zlib.decompress(payload), dtype=np.dtype(dtype))
    if array.size != count:
        raise ValueError(f"decompressed {array.size} {dtype} values, expected {count}")
    return array
