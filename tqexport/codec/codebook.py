"""Lloyd-Max codebooks for one coordinate of a uniformly random unit vector in d dimensions.

The coordinate density is f(x) proportional to (1 - x^2)^((d - 3) / 2) on [-1, 1] (format.md section 3.2).
With t = (1 + x) / 2 it is a Beta(a + 1, a + 1) law, a = (d - 3) / 2, so cell masses come from the regularized
incomplete beta function and first moments in closed form. The Lloyd fixed point is solved in float64 on the
positive half (the codebook is symmetric).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy import linalg, special

from tqexport.codec.config import CODEBOOK_STRIDE, CodecConfig


def _cell_centroids(edges: np.ndarray, a: float) -> np.ndarray:
    """Conditional means of x over the cells [edges[i], edges[i+1]] with 0 <= edges <= 1."""
    lo, hi = edges[:-1], edges[1:]
    # mass on [lo, hi] as upper-tail incomplete betas (accurate in the tails)
    mass = special.betainc(a + 1, a + 1, (1 - lo) / 2) - special.betainc(a + 1, a + 1, (1 - hi) / 2)
    # first moment: int x (1-x^2)^a dx = [(1-lo^2)^(a+1) - (1-hi^2)^(a+1)] / (2(a+1)), over Z = int (1-x^2)^a
    log_z = _log_density_norm(a)
    with np.errstate(divide="ignore"):
        first = (np.power(1 - lo**2, a + 1) - np.power(1 - hi**2, a + 1)) / (2 * (a + 1))
    moment = first / np.exp(log_z)
    out = np.where(mass > 0, moment / np.where(mass > 0, mass, 1.0), (lo + hi) / 2)
    return out


def _log_density_norm(a: float) -> float:
    return (2 * a + 1) * np.log(2.0) + special.betaln(a + 1, a + 1)


def _density(x: np.ndarray, a: float) -> np.ndarray:
    return np.power(1 - x**2, a) / np.exp(_log_density_norm(a))


def _half_edges(pos: np.ndarray) -> np.ndarray:
    return np.concatenate(([0.0], (pos[:-1] + pos[1:]) / 2, [1.0]))


@cache
def lloyd_max_centroids(dim: int, bits: int, max_iter: int = 200, tol: float = 1e-15) -> np.ndarray:
    """Ascending float64 centroids (2**bits of them) of the Lloyd-Max quantizer for dimension `dim`.

    Solves the Lloyd fixed point c = centroid(cells(c)) by Newton's method (its Jacobian is tridiagonal),
    from the high-resolution start where the point density is proportional to f^(1/3) (a symmetric Beta law).
    """
    if dim < 2:
        raise ValueError(f"dim={dim}: need at least 2")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits}: must be in 1..8")
    a = (dim - 3) / 2.0
    half = 2 ** (bits - 1)
    a3 = a / 3.0
    probs = 0.5 + (np.arange(half) + 0.5) / (2 * half)
    pos = 2 * special.betaincinv(a3 + 1, a3 + 1, probs) - 1
    for _ in range(max_iter):
        edges = _half_edges(pos)
        g = _cell_centroids(edges, a)
        resid = g - pos
        if np.max(np.abs(resid)) < tol:
            break
        lo, hi = edges[:-1], edges[1:]
        mass = special.betainc(a + 1, a + 1, (1 - lo) / 2) - special.betainc(a + 1, a + 1, (1 - hi) / 2)
        dlo = _density(lo, a) * (g - lo) / mass
        dhi = _density(hi, a) * (hi - g) / mass
        dlo[0] = 0.0  # edge 0 is the symmetry point, fixed
        dhi[-1] = 0.0  # edge at 1 is fixed
        band = np.zeros((3, half))
        band[0, 1:] = dhi[:-1] / 2  # super-diagonal J[i, i+1]
        band[1] = (dlo + dhi) / 2 - 1.0  # diagonal of J - I
        band[2, :-1] = dlo[1:] / 2  # sub-diagonal J[i+1, i]
        step = linalg.solve_banded((1, 1), band, -resid)
        new = pos + step
        if np.any(np.diff(new) <= 0) or new[0] <= 0 or new[-1] >= 1:
            new = g  # a plain Lloyd step when Newton would break the ordering
        pos = new
    return np.concatenate((-pos[::-1], pos))


def codebook_row(dim: int, mse_bits: int) -> np.ndarray:
    """One float32 row of the codebook tensor: 2**m centroids then zeros, length 256."""
    row = np.zeros(CODEBOOK_STRIDE, dtype=np.float32)
    row[: 2**mse_bits] = lloyd_max_centroids(dim, mse_bits).astype(np.float32)
    return row


def build_codebook(config: CodecConfig) -> np.ndarray:
    """float32 [P, 256] codebook tensor for a codec config."""
    return np.stack([codebook_row(d, m) for d, m in zip(config.part_sizes, config.mse_bits, strict=True)])


def boundaries(codebook_row_f32: np.ndarray, mse_bits: int) -> np.ndarray:
    """float64 cell boundaries beta_j = (c[j-1] + c[j]) / 2 from the stored float32 centroids."""
    c = codebook_row_f32[: 2**mse_bits].astype(np.float64)
    return (c[:-1] + c[1:]) / 2
