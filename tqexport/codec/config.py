"""Codec parameters of one cache (K or V of one layer) and the byte layout of one compressed row.

Mirrors docs/format.md sections 2 and 4 (and plugins/common/tq_format.h). Letters: D head dim, P parts,
d_p part size, b_p bits per coordinate (QJL bit included), m_p = b_p - qjl MSE bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FORMAT_VERSION = 1
MAX_PARTS = 4
CHANNEL_MULTIPLE = 16
CODEBOOK_STRIDE = 256

RotationName = Literal["hadamard", "dense"]
ROTATION_KIND = {"dense": 0, "hadamard": 1}


class CodecConfigError(ValueError):
    """A codec parameter breaks a rule of docs/format.md section 2."""


def segment_widths(mse_bits: int) -> tuple[int, ...]:
    """Binary decomposition of an m-bit code into segment widths, widest first (format.md section 4)."""
    return tuple(w for w in (8, 4, 2, 1) if mse_bits & w)


@dataclass(frozen=True)
class RowLayout:
    """Byte offsets inside one compressed row (format.md section 4)."""

    row_bytes: int
    mse_bits: tuple[int, ...]
    part_offsets: tuple[int, ...]
    code_offsets: tuple[int, ...]
    qjl_offset: int | None
    norm_offset: int
    rnorm_offset: int | None


@dataclass(frozen=True)
class CodecConfig:
    head_dim: int
    part_sizes: tuple[int, ...] = field(default=())
    bits: tuple[int, ...] = (4,)
    qjl: bool = False
    norm_correction: bool = False
    rotation: RotationName = "hadamard"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.part_sizes:
            object.__setattr__(self, "part_sizes", (self.head_dim,))
        object.__setattr__(self, "part_sizes", tuple(int(v) for v in self.part_sizes))
        object.__setattr__(self, "bits", tuple(int(v) for v in self.bits))
        self.validate()

    @property
    def num_parts(self) -> int:
        return len(self.part_sizes)

    def validate(self) -> None:
        if len(self.bits) != len(self.part_sizes):
            raise CodecConfigError(
                f"bits={list(self.bits)} and part_sizes={list(self.part_sizes)}: need one bit width per part"
            )
        if not 1 <= self.num_parts <= MAX_PARTS:
            raise CodecConfigError(f"number of parts={self.num_parts}: must be 1..{MAX_PARTS}")
        if self.head_dim <= 0 or self.head_dim % CHANNEL_MULTIPLE:
            raise CodecConfigError(
                f"head_dim={self.head_dim}: must be a positive multiple of {CHANNEL_MULTIPLE}"
            )
        if self.rotation not in ROTATION_KIND:
            raise CodecConfigError(f"rotation={self.rotation!r}: must be 'hadamard' or 'dense'")
        for d, b in zip(self.part_sizes, self.bits, strict=True):
            if d <= 0 or d % CHANNEL_MULTIPLE:
                raise CodecConfigError(
                    f"part_sizes[p]={d}: must be a positive multiple of {CHANNEL_MULTIPLE}"
                )
            if not 1 <= b <= 8:
                raise CodecConfigError(f"bits[p]={b}: must be in 1..8")
            if b - int(self.qjl) < 1:
                raise CodecConfigError(f"bits[p]={b}: must be >= 2 when qjl=1 (one bit is the QJL sign)")
        if sum(self.part_sizes) != self.head_dim:
            raise CodecConfigError(
                f"sum(part_sizes)={sum(self.part_sizes)}: must equal the head dim D={self.head_dim}"
            )

    @property
    def mse_bits(self) -> tuple[int, ...]:
        return tuple(b - int(self.qjl) for b in self.bits)

    @property
    def part_offsets(self) -> tuple[int, ...]:
        offsets, acc = [], 0
        for d in self.part_sizes:
            offsets.append(acc)
            acc += d
        return tuple(offsets)

    def layout(self) -> RowLayout:
        off = 0
        code_offsets = []
        for d, m in zip(self.part_sizes, self.mse_bits, strict=True):
            code_offsets.append(off)
            off += m * d // 8
        qjl_offset = None
        if self.qjl:
            qjl_offset = off
            off += self.head_dim // 8
        norm_offset = off
        off += 2 * self.num_parts
        rnorm_offset = None
        if self.qjl:
            rnorm_offset = off
            off += 2 * self.num_parts
        return RowLayout(
            row_bytes=off,
            mse_bits=self.mse_bits,
            part_offsets=self.part_offsets,
            code_offsets=tuple(code_offsets),
            qjl_offset=qjl_offset,
            norm_offset=norm_offset,
            rnorm_offset=rnorm_offset,
        )

    @property
    def row_bytes(self) -> int:
        return self.layout().row_bytes

    @property
    def bits_per_element(self) -> float:
        """Stored bits per cache element, norms included (no window/sink overhead)."""
        return 8.0 * self.row_bytes / self.head_dim

    def onnx_attributes(self, prefix: str = "") -> dict[str, object]:
        """Op attributes of docs/format.md section 8 (prefix 'k_'/'v_' for TQAttention)."""
        attrs: dict[str, object] = {
            f"{prefix}bits": list(self.bits),
            f"{prefix}part_sizes": list(self.part_sizes),
        }
        if prefix != "v_":  # values never carry QJL (format.md section 2)
            attrs[f"{prefix}qjl"] = int(self.qjl)
        if not prefix:
            attrs["norm_correction"] = int(self.norm_correction)
            attrs["rotation_kind"] = ROTATION_KIND[self.rotation]
        return attrs
