"""bench/attention_gpu.py with a Sylvester-Hadamard rotation instead of its random dense one.

A model converted with rotation_kind = hadamard stores R = H_D diag(s) / sqrt(D) (docs/format.md 3.1), and the
attention kernels un-rotate such an R by a butterfly transform (bench/NOTES.md "Hadamard un-rotation");
bench/attention_gpu.py draws a dense R (np.linalg.qr of a Gaussian), which keeps them on the dense path. This
runs that bench unchanged except that its one np.linalg.qr call returns the Hadamard R (K and V alike), so
both paths are timed by the same code. Same arguments as bench/attention_gpu.py, e.g.
    python3 bench/gpu_harness/smallt_hadamard.py --skip-sdpa --cases 4:32:1024,4:1:1024
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from bench import attention_gpu  # noqa: E402


def hadamard_rotation(d: int, seed: int = 0) -> np.ndarray:
    """H_d diag(s) / sqrt(d) in float64 (Sylvester order, random signs s)."""
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    s = 2.0 * np.random.default_rng(seed).integers(0, 2, d) - 1.0
    return h * s[None, :] / np.sqrt(d)


def main() -> None:
    def qr(a: np.ndarray):  # the bench's only QR: its rotation
        return hadamard_rotation(a.shape[0]), None

    np.linalg.qr = qr
    print("rotation: Sylvester-Hadamard H_D diag(s) / sqrt(D) (bench/gpu_harness/smallt_hadamard.py)")
    attention_gpu.main()


if __name__ == "__main__":
    main()
