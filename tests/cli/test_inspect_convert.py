"""The inspect/convert/plugins subcommands through `tqexport.cli.main.main`: output, exit codes, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tests.passes.builders import TinySpec, build_tiny_llm, build_vision_model
from tqexport.cli.main import main


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(build_tiny_llm(TinySpec(form="sdpa", softcap=30.0)), path)
    return path


def test_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in ("inspect", "convert", "plugins", "generate", "compare", "build"):
        assert name in out


def test_inspect_text_and_json(tiny: Path, capsys) -> None:
    assert main(["inspect", str(tiny)]) == 0
    text = capsys.readouterr().out
    assert "2 of 2 layers convert" in text and "decomposed-sdpa" in text and "softcap=30" in text
    assert main(["inspect", str(tiny), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["convertible_layers"] == 2
    assert report["layers"][0]["cache"]["past_key"] == "past_key_values.0.key"
    assert report["layers"][0]["num_q_heads"] == 4 and report["layers"][0]["head_dim"] == 32


def test_convert_prints_layers_and_counts(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "tq.onnx"
    assert main(["convert", str(tiny), "-o", str(out), "--preset", "4", "--seed", "7"]) == 0
    text = capsys.readouterr().out
    assert "layer   0: decomposed-sdpa -> TQQuantize x2 + TQAttention" in text
    assert "pass counts: {'attention_read': 2, 'kv_write': 4" in text
    config = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["tqexport.config"])
    assert config["base_seed"] == 7


def test_convert_refuses_a_vision_model_with_exit_code_4(tmp_path: Path, capsys) -> None:
    source = tmp_path / "vision.onnx"
    onnx.save(build_vision_model(), source)
    out = tmp_path / "never.onnx"
    assert main(["convert", str(source), "-o", str(out)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("tqexport convert: error: no KV-cache graph inputs")
    assert "Traceback" not in err and not out.exists()


def test_buffer_mode_converts_and_missing_file_exit_codes(tiny: Path, tmp_path: Path, capsys) -> None:
    assert main(["convert", str(tiny), "-o", str(tmp_path / "o.onnx"), "--cache-mode", "buffer"]) == 0
    assert main(["inspect", str(tmp_path / "missing.onnx")]) == 3
    err = capsys.readouterr().err
    assert "no such model file" in err


def test_inspect_prints_the_near_miss(tmp_path: Path, capsys) -> None:
    model = build_tiny_llm(TinySpec(num_layers=1))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    softmax.attribute[0].i = 1
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    assert main(["inspect", str(path)]) == 0
    assert "layer   0: NOT convertible: Softmax axis 1 is not the last axis" in capsys.readouterr().out


def test_plugins_prints_a_path_or_explains(capsys) -> None:
    code = main(["plugins", "--ort"])
    captured = capsys.readouterr()
    if code == 0:
        assert Path(captured.out.strip()).is_file()
    else:
        assert code == 7 and captured.err.startswith("tqexport plugins: error:")
