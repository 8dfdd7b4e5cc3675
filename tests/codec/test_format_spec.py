"""The C++ mirror (plugins/common/tq_format.h) and docs/format.md agree with the reference codec."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tqexport.codec.config import FORMAT_VERSION, CodecConfig, CodecConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [
    (parts, bits, qjl)
    for parts in [(64,), (128,), (256,), (32, 96), (64, 64), (16, 48)]
    for bits in itertools.product(range(1, 9), repeat=len(parts))
    for qjl in (0, 1)
    if len(parts) == 1 or bits[0] >= bits[1]
]

HARNESS = r"""
#include "tq_format.h"
#include <cstdio>
int main() {
  int parts, d0, d1, b0, b1, qjl;
  while (std::scanf("%d %d %d %d %d %d", &parts, &d0, &d1, &b0, &b1, &qjl) == 6) {
    tq::CodecConfig c; c.num_parts = parts; c.part_sizes[0] = d0; c.part_sizes[1] = d1;
    c.bits[0] = b0; c.bits[1] = b1; c.qjl = qjl; c.head_dim = d0 + (parts > 1 ? d1 : 0);
    char err[256];
    if (!tq::validate(c, err, sizeof err)) { std::printf("invalid\n"); continue; }
    tq::RowLayout l = tq::row_layout(c);
    std::printf("%d %d %d %d %d %d\n", l.row_bytes, l.code_offset[0], l.code_offset[1], l.qjl_offset,
                l.norm_offset, l.rnorm_offset);
  }
  std::printf("version %d\n", tq::kFormatVersion);
}
"""


def python_layout(parts: tuple[int, ...], bits: tuple[int, ...], qjl: int) -> str:
    try:
        cfg = CodecConfig(head_dim=sum(parts), part_sizes=parts, bits=bits, qjl=bool(qjl))
    except CodecConfigError:
        return "invalid"
    lay = cfg.layout()
    codes = list(lay.code_offsets) + [0] * (2 - len(lay.code_offsets))
    qo = -1 if lay.qjl_offset is None else lay.qjl_offset
    ro = -1 if lay.rnorm_offset is None else lay.rnorm_offset
    return f"{lay.row_bytes} {codes[0]} {codes[1]} {qo} {lay.norm_offset} {ro}"


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found: cannot compile the C++ format mirror")
def test_cpp_row_layout_matches_reference(tmp_path: Path) -> None:
    src = tmp_path / "h.cc"
    src.write_text(HARNESS)
    exe = tmp_path / "h"
    subprocess.run(
        ["g++", "-std=c++17", "-I", str(ROOT / "plugins/common"), str(src), "-o", str(exe)], check=True
    )
    stdin = "".join(
        f"{len(p)} {p[0]} {p[1] if len(p) > 1 else 0} {b[0]} {b[1] if len(b) > 1 else 0} {q}\n"
        for p, b, q in CONFIGS
    )
    lines = subprocess.run(
        [str(exe)], input=stdin, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines[-1] == f"version {FORMAT_VERSION}"
    expected = [python_layout(p, b, q) for p, b, q in CONFIGS]
    assert lines[:-1] == expected


def test_spec_states_the_row_bytes_formula_and_version() -> None:
    spec = (ROOT / "docs/format.md").read_text()
    assert f"format_version {FORMAT_VERSION}" in spec
    formula = "row_bytes = sum_p (m_p * d_p / 8) + qjl * (D / 8 + 2 * P) + 2 * P"
    assert formula in spec
    for parts, bits, qjl in CONFIGS:
        try:
            cfg = CodecConfig(head_dim=sum(parts), part_sizes=parts, bits=bits, qjl=bool(qjl))
        except CodecConfigError:
            continue
        mse = [b - qjl for b in bits]
        by_formula = (
            sum(m * d // 8 for m, d in zip(mse, parts, strict=True))
            + qjl * (sum(parts) // 8 + 2 * len(parts))
            + 2 * len(parts)
        )
        assert cfg.row_bytes == by_formula


def test_spec_names_ops_and_attributes_used_by_the_codec() -> None:
    spec = (ROOT / "docs/format.md").read_text()
    header = (ROOT / "plugins/common/tq_format.h").read_text()
    for name in ("TQQuantize", "TQAttention"):
        assert f"`{name}`" in spec and f'"{name}"' in header
    for attr in CodecConfig(head_dim=64).onnx_attributes():
        assert f"`{attr}`" in spec
    for attr in list(CodecConfig(head_dim=64).onnx_attributes("k_")) + list(
        CodecConfig(head_dim=64).onnx_attributes("v_")
    ):
        assert re.search(rf"`{attr}`", spec), attr
