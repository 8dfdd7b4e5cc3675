"""Decode 16 tokens through the original and the converted model (ORT), print the logit difference."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.passes.referee import (  # noqa: E402
    OriginalRunner,
    OrtConvertedRunner,
    ort_library_available,
    teacher_forced_logits,
)

original_path, converted_path = sys.argv[1], sys.argv[2]
if not ort_library_available():
    print("skipped: the tqexport ORT custom-op library is not built (pip install -e .)")
    sys.exit(0)
ids = np.random.default_rng(0).integers(0, 48, (2, 4 + 16))
original = teacher_forced_logits(OriginalRunner(original_path), ids, [0, 2], 4, 16)
converted = teacher_forced_logits(OrtConvertedRunner(converted_path), ids, [0, 2], 4, 16)
error = np.abs(original - converted).max() / np.abs(original).max()
agree = (original.argmax(-1) == converted.argmax(-1)).mean()
print(f"max |logit diff| / max |logit| = {error:.4f}, top-1 agreement {agree:.3f}")
