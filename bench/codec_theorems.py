"""Print the measured TurboQuant distortions of the reference codec (D = 128) next to the paper's values.

Run: python bench/codec_theorems.py   (CPU only; ~30 s). The same quantities are asserted in tests/codec.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "codec"))

from test_theorems import GAUSSIAN_LIMIT_MSE, _mse_distortion, _prod_estimates  # noqa: E402

D = 128
PAPER_PROD_VARIANCE = {1: 1.57, 2: 0.56, 3: 0.18, 4: 0.047}  # times 1/D, for ||y|| = 1


def main() -> None:
    rng = np.random.default_rng(0)
    head = ("bits", "mse (ours)", "mse (paper)", "prod var*D", "paper", "prod bias/SE")
    print(f"{head[0]:>4} {head[1]:>11} {head[2]:>11} {head[3]:>11} {head[4]:>7} {head[5]:>12}")
    for bits in (1, 2, 3, 4):
        mse = _mse_distortion(bits, rng)
        var_d, bias_se = float("nan"), float("nan")
        if bits >= 2:  # the format stores at least one MSE bit beside the QJL bit
            est, true, y_sq = _prod_estimates(bits, 100_000, rng)
            err = est - true
            var_d = err.var(ddof=1) / y_sq * D
            bias_se = err.mean() / (err.std(ddof=1) / np.sqrt(err.size))
        print(
            f"{bits:>4} {mse:>11.4f} {GAUSSIAN_LIMIT_MSE[bits]:>11.4f} {var_d:>11.3f} "
            f"{PAPER_PROD_VARIANCE[bits]:>7.3f} {bias_se:>12.2f}"
        )


if __name__ == "__main__":
    main()
