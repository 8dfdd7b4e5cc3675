"""The host C++ of the plugins compiles for aarch64 (Jetson Orin / Thor), issue 5.

Runs scripts/cross_compile_aarch64.sh once (Debian's aarch64-linux-gnu-g++, -c only, one g++ per file, -O1
here) and checks its summary line for every host source the CMake build compiles, plus its check that no
aarch64 object of plugins/cpu references an AVX2 symbol. Skipped, with the reason, when the cross compiler is
absent and cannot be installed (no root or apt-get); a source whose headers (ORT, TensorRT, CUDA) are missing
is skipped with the script's reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
SCRIPT = REPO / "scripts" / "cross_compile_aarch64.sh"
NO_COMPILER = 77  # the script's exit code when no aarch64 g++ exists and none could be installed
AVX2_CHECK = "AVX2 symbol"


def host_sources() -> list[str]:
    """The labels the script prints: the same globs as plugins/CMakeLists.txt, relative to plugins/."""
    cpu = [*PLUGINS.glob("cpu/**/*.cc"), *PLUGINS.glob("cpu/**/*.cpp")]
    kernels = [*PLUGINS.glob("kernels/**/*.cc"), *PLUGINS.glob("kernels/**/*.cpp")]
    ort = [p for p in PLUGINS.glob("ort/**/*.cc") if p.name != "cuda_ops.cc"]
    trt = [
        p
        for p in [*PLUGINS.glob("trt/**/*.cpp"), *PLUGINS.glob("trt/**/*.cc")]
        if "harness" not in p.relative_to(PLUGINS).parts
    ]
    labels = [str(p.relative_to(PLUGINS)) for p in cpu + kernels + ort + trt]
    return sorted(labels) + ["ort/library.cc[cuda]", "ort/cuda_ops.cc[cuda]"]


@pytest.fixture(scope="module")
def summary() -> dict[str, str]:
    """Label -> the script's line for it (status word first)."""
    env = dict(os.environ, TQ_CROSS_OPT="-O1")
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=900)
    if run.returncode == NO_COMPILER:
        pytest.skip(f"no aarch64 cross compiler: {run.stderr.strip().splitlines()[-1]}")
    lines: dict[str, str] = {}
    for line in run.stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status not in ("ok", "FAILED", "skipped"):
            continue
        rest = rest.strip()
        label = AVX2_CHECK if AVX2_CHECK in rest else rest.split(" ")[0].rstrip(":")
        lines[label] = line
    return lines


@pytest.mark.parametrize("label", host_sources())
def test_source_compiles_for_aarch64(summary, label):
    line = summary.get(label)
    assert line is not None, f"cross_compile_aarch64.sh printed no line for {label}"
    if line.startswith("skipped"):
        pytest.skip(line)
    assert line.startswith("ok"), line


def test_no_avx2_symbol_in_aarch64_cpu_objects(summary):
    line = summary.get(AVX2_CHECK)
    assert line is not None, "cross_compile_aarch64.sh printed no AVX2 symbol check"
    if line.startswith("skipped"):
        pytest.skip(line)
    assert line.startswith("ok"), line
