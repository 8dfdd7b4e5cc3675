"""`tqexport calibrate` writes the JSON that `convert --calibration` reads, sensitivities included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "graphs/fixtures/optimum/llama/model.onnx"


def _tq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tqexport", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture graphs/fixtures/optimum/llama is not committed")
def test_calibrate_then_convert_under_budget(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(str(i) for i in np.random.default_rng(3).integers(3, 150, 80)))
    cal = tmp_path / "cal.json"
    done = _tq(
        "calibrate", str(FIXTURE), "--text", str(ids), "-o", str(cal), "--sensitivity", "--bits", "2", "4"
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(cal.read_text())
    assert set(data["layers"]) == {"0", "1"}
    assert np.asarray(data["layers"]["0"]["key"]).shape == (2, 32)  # [Hkv, D] channel RMS
    assert set(data["sensitivity"]) == {"0.key", "0.value", "1.key", "1.value"}
    out = tmp_path / "m.onnx"
    done = _tq("convert", str(FIXTURE), "-o", str(out), "--calibration", str(cal), "--bits-budget", "3.0")
    assert done.returncode == 0, done.stderr
    assert out.exists()


def test_calibrate_rejects_bad_bits(tmp_path: Path) -> None:
    done = _tq("calibrate", str(FIXTURE), "--text", "x", "-o", str(tmp_path / "c.json"), "--bits", "9")
    assert done.returncode != 0
    assert "--bits" in done.stderr + done.stdout
