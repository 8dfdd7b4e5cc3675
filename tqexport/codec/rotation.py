"""Seeded rotations and QJL matrices (format.md sections 3.1 and 3.3).

The stored rotation of a kv head is R = blockdiag(R_1, ..., R_P) * Pi: Pi lists part 1's channels, then
part 2's, so part p lands at rotated coordinates [o_p, o_p + d_p). Blocks are randomized Hadamard
(power-of-two sizes, when asked) or Haar-random dense orthogonal matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tqexport.codec.config import CodecConfig


def sylvester_hadamard(d: int) -> np.ndarray:
    """Unnormalized Sylvester Hadamard matrix H_d (d a power of two), float64."""
    if d < 1 or d & (d - 1):
        raise ValueError(f"Hadamard size {d} is not a power of two")
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    return h


def _rng(seed: int, part: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, part, stream]))


def rotation_block(d: int, kind: str, seed: int, part: int) -> np.ndarray:
    """float64 d x d orthogonal block for part `part` (0-based)."""
    rng = _rng(seed, part, 0)
    if kind == "hadamard" and d & (d - 1) == 0:
        signs = 2 * rng.integers(0, 2, d) - 1
        return sylvester_hadamard(d) * signs[None, :] / np.sqrt(d)
    g = rng.standard_normal((d, d))
    q, u = np.linalg.qr(g)
    return q * np.sign(np.diag(u))[None, :]


def default_channels(config: CodecConfig) -> list[np.ndarray]:
    """Part channels when no outlier choice is given: consecutive ranges."""
    return [np.arange(o, o + d) for o, d in zip(config.part_offsets, config.part_sizes, strict=True)]


def build_rotation(config: CodecConfig, channels: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """float32 [D, D] rotation for one kv head; `channels` lists each part's original channel indices."""
    chans = default_channels(config) if channels is None else [np.sort(np.asarray(c)) for c in channels]
    d_total = config.head_dim
    flat = np.concatenate(chans)
    if sorted(flat.tolist()) != list(range(d_total)) or [len(c) for c in chans] != list(config.part_sizes):
        raise ValueError(
            f"channels {[len(c) for c in chans]} must partition 0..{d_total - 1} "
            f"with sizes {list(config.part_sizes)}"
        )
    rot = np.zeros((d_total, d_total))
    for p, (o, d, ch) in enumerate(zip(config.part_offsets, config.part_sizes, chans, strict=True)):
        rot[o : o + d, ch] = rotation_block(d, config.rotation, config.seed, p)
    return rot.astype(np.float32)


def build_qjl_matrix(config: CodecConfig) -> np.ndarray:
    """float32 [D, D] block-diagonal Gaussian QJL matrix in rotated coordinates."""
    s = np.zeros((config.head_dim, config.head_dim))
    for p, (o, d) in enumerate(zip(config.part_offsets, config.part_sizes, strict=True)):
        s[o : o + d, o : o + d] = _rng(config.seed, p, 1).standard_normal((d, d))
    return s.astype(np.float32)
