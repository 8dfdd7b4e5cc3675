"""The TurboQuant reference codec (format.md section 5 and 6), NumPy, float64 where the contract needs it.

Shapes: x_BHSD is [B, Hkv, S, D] (new K or V); rows_BHSR is [B, Hkv, S, row_bytes] (uint8 compressed rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tqexport.codec.codebook import boundaries, build_codebook
from tqexport.codec.config import CodecConfig
from tqexport.codec.packing import (
    from_float16_bytes,
    pack_bits,
    pack_codes,
    to_float16_bytes,
    unpack_bits,
    unpack_codes,
)
from tqexport.codec.rotation import build_qjl_matrix, build_rotation


@dataclass(frozen=True)
class DecodedRows:
    """Everything stored in compressed rows, unpacked. Shapes [..., D] or [..., P]."""

    codes: np.ndarray  # int64 [..., D] (rotated coordinates, part after part)
    norms: np.ndarray  # float16 [..., P] gamma_p
    qjl_bits: np.ndarray | None  # int64 [..., D]
    residual_norms: np.ndarray | None  # float16 [..., P]


@dataclass(frozen=True)
class Codec:
    config: CodecConfig
    rotation: np.ndarray  # float32 [Hr, D, D]
    codebook: np.ndarray  # float32 [P, 256]
    qjl_matrix: np.ndarray | None  # float32 [D, D]

    @classmethod
    def build(
        cls,
        config: CodecConfig,
        num_heads: int = 1,
        channels: Sequence[Sequence[Sequence[int]]] | None = None,
    ) -> Codec:
        """Rotation per kv head when `channels` (per head, per part) is given, else one shared rotation."""
        if channels is None:
            rotation = build_rotation(config)[None]
        else:
            if len(channels) != num_heads:
                raise ValueError(f"channels lists {len(channels)} heads, expected {num_heads}")
            rotation = np.stack([build_rotation(config, ch) for ch in channels])
        qjl = build_qjl_matrix(config) if config.qjl else None
        return cls(config, rotation, build_codebook(config), qjl)

    @property
    def row_bytes(self) -> int:
        return self.config.row_bytes

    def onnx_attributes(self, prefix: str = "") -> dict[str, object]:
        return self.config.onnx_attributes(prefix)

    # --- quantize -------------------------------------------------------------------------------------------
    def quantize(self, x_BHSD: np.ndarray) -> np.ndarray:
        return quantize_rows(x_BHSD, self.config, self.rotation, self.codebook, self.qjl_matrix)

    # --- decode ---------------------------------------------------------------------------------------------
    def unpack(self, rows: np.ndarray) -> DecodedRows:
        return unpack_rows(rows, self.config)

    def dequantize_rotated(self, rows: np.ndarray) -> np.ndarray:
        """float64 [..., D] yhat in the rotated domain (float32 arithmetic of format.md section 6, upcast)."""
        return dequantize_rotated(rows, self.config, self.codebook)

    def dequantize(self, rows_BHSR: np.ndarray) -> np.ndarray:
        """float64 [B, H, S, D] xhat = R^T yhat in the original domain (no QJL term)."""
        yhat = self.dequantize_rotated(rows_BHSR)
        rot = _per_head_rotation(self.rotation, rows_BHSR.shape[1])
        return np.einsum("bhse,hed->bhsd", yhat, rot)


def _per_head_rotation(rotation: np.ndarray, num_heads: int) -> np.ndarray:
    rot = rotation.astype(np.float64)
    if rot.shape[0] == 1:
        return np.broadcast_to(rot, (num_heads, *rot.shape[1:]))
    if rot.shape[0] != num_heads:
        raise ValueError(f"rotation has {rot.shape[0]} heads, input has {num_heads}")
    return rot


def quantize_rows(
    x_BHSD: np.ndarray,
    config: CodecConfig,
    rotation: np.ndarray,
    codebook: np.ndarray,
    qjl_matrix: np.ndarray | None,
) -> np.ndarray:
    """Bit-exact reference quantizer: float [B, H, S, D] -> uint8 [B, H, S, row_bytes]."""
    if x_BHSD.ndim != 4 or x_BHSD.shape[-1] != config.head_dim:
        raise ValueError(f"x must be [B, H, S, {config.head_dim}], got {list(x_BHSD.shape)}")
    x = x_BHSD.astype(np.float64)
    rot = _per_head_rotation(rotation, x.shape[1])
    y = np.einsum("hed,bhsd->bhse", rot, x)
    code_parts, norm_parts, yhat = [], [], np.zeros_like(y)
    for p, (o, d, m) in enumerate(zip(config.part_offsets, config.part_sizes, config.mse_bits, strict=True)):
        yp = y[..., o : o + d]
        n = np.sqrt(np.sum(yp * yp, axis=-1, keepdims=True))
        u = np.divide(yp, n, out=np.zeros_like(yp), where=n > 0)
        codes = np.searchsorted(boundaries(codebook[p], m), u, side="left")
        cents = codebook[p][: 2**m].astype(np.float64)[codes]
        gamma = n[..., 0]
        if config.norm_correction:
            cnorm = np.sqrt(np.sum(cents * cents, axis=-1))
            gamma = np.divide(gamma, cnorm, out=np.zeros_like(gamma), where=gamma > 0)
        stored = np.minimum(gamma, 65504.0).astype(np.float16)
        yhat[..., o : o + d] = stored.astype(np.float64)[..., None] * cents
        code_parts.append(pack_codes(codes, m))
        norm_parts.append(gamma)
    sections = [*code_parts]
    if config.qjl:
        assert qjl_matrix is not None, "qjl=1 needs a QJL matrix"
        r = y - yhat
        z = np.einsum("ed,bhsd->bhse", qjl_matrix.astype(np.float64), r)
        sections.append(pack_bits(z > 0))
    sections.append(to_float16_bytes(np.stack(norm_parts, axis=-1)))
    if config.qjl:
        rho = [
            np.sqrt(np.sum(r[..., o : o + d] ** 2, axis=-1))
            for o, d in zip(config.part_offsets, config.part_sizes, strict=True)
        ]
        sections.append(to_float16_bytes(np.stack(rho, axis=-1)))
    rows = np.concatenate(sections, axis=-1)
    assert rows.shape[-1] == config.row_bytes
    return rows


def unpack_rows(rows: np.ndarray, config: CodecConfig) -> DecodedRows:
    lay = config.layout()
    if rows.shape[-1] != lay.row_bytes:
        raise ValueError(f"rows have {rows.shape[-1]} bytes, config says {lay.row_bytes}")
    codes = [
        unpack_codes(rows[..., co : co + m * d // 8], m, d)
        for co, m, d in zip(lay.code_offsets, lay.mse_bits, config.part_sizes, strict=True)
    ]
    p = config.num_parts
    norms = from_float16_bytes(rows[..., lay.norm_offset : lay.norm_offset + 2 * p])
    qjl_bits = rnorms = None
    if config.qjl:
        assert lay.qjl_offset is not None and lay.rnorm_offset is not None
        qjl_bits = unpack_bits(
            rows[..., lay.qjl_offset : lay.qjl_offset + config.head_dim // 8], config.head_dim
        )
        rnorms = from_float16_bytes(rows[..., lay.rnorm_offset : lay.rnorm_offset + 2 * p])
    return DecodedRows(np.concatenate(codes, axis=-1), norms, qjl_bits, rnorms)


def dequantize_rotated(rows: np.ndarray, config: CodecConfig, codebook: np.ndarray) -> np.ndarray:
    dec = unpack_rows(rows, config)
    out = np.zeros((*rows.shape[:-1], config.head_dim), dtype=np.float32)
    for p, (o, d, m) in enumerate(zip(config.part_offsets, config.part_sizes, config.mse_bits, strict=True)):
        cents = codebook[p][: 2**m].astype(np.float32)[dec.codes[..., o : o + d]]
        out[..., o : o + d] = dec.norms[..., p : p + 1].astype(np.float32) * cents
    return out.astype(np.float64)


def qjl_correction(
    q_rot: np.ndarray, rows: np.ndarray, config: CodecConfig, qjl_matrix: np.ndarray
) -> np.ndarray:
    """QJL inner-product term of rotated queries q_rot [..., D] against rows [..., T, R]: [..., T]."""
    dec = unpack_rows(rows, config)
    assert dec.qjl_bits is not None and dec.residual_norms is not None
    sq = q_rot @ qjl_matrix.astype(np.float64).T  # (Sq qr)_i
    signs = 2.0 * dec.qjl_bits - 1.0
    total: np.ndarray | float = 0.0
    for p, (o, d) in enumerate(zip(config.part_offsets, config.part_sizes, strict=True)):
        dots = np.einsum("...d,...td->...t", sq[..., o : o + d], signs[..., o : o + d])
        total = total + dec.residual_norms[..., p].astype(np.float64) * np.sqrt(np.pi / 2) / d * dots
    return np.asarray(total)
