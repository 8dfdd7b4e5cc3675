"""A converted model keeps its folder's runtime files (config, tokenizer) beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tqexport.converter import ConvertOptions, convert_model

FIXTURE = Path(__file__).resolve().parents[2] / "graphs/fixtures/optimum/llama/model.onnx"


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture graphs/fixtures/optimum/llama is not committed")
def test_config_and_tokenizer_files_are_copied(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(FIXTURE.parent, src)
    (src / "tokenizer.json").write_text('{"model": {}}')
    out = tmp_path / "out" / "model.onnx"
    convert_model(src / "model.onnx", out, ConvertOptions(), log=lambda _: None)
    assert (out.parent / "config.json").read_text() == (src / "config.json").read_text()
    assert (out.parent / "tokenizer.json").read_text() == '{"model": {}}'
