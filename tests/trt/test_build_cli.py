"""`tqexport build`: the no-TensorRT error path, the trtexec line and the profile rules (tqexport/trt/)."""

from __future__ import annotations

import builtins
import shlex
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from tqexport.cli.main import main  # noqa: E402
from tqexport.errors import UsageError  # noqa: E402
from tqexport.trt.profiles import derive_profile, parse_dim_override  # noqa: E402
from tqexport.trt.trtexec import trtexec_command  # noqa: E402

ROW_BYTES = 66  # 4-bit codes of D = 128 (64 bytes) + one float16 norm (docs/format.md section 4)


def tiny_model(path: Path, extra_dim: str | None = None, promise: int = 0) -> Path:
    """One TQQuantize node with a windowed concat cache: the graph-input shapes `build` must profile."""
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch_size", 2, "sequence_length", 128]),
        helper.make_tensor_value_info(
            "past_key_values.0.key", TensorProto.INT8, ["batch_size", 2, "past_compressed_length", ROW_BYTES]
        ),
        helper.make_tensor_value_info(
            "past_key_values.0.key_window", TensorProto.FLOAT16, ["batch_size", 2, "past_window_length", 128]
        ),
    ]
    if extra_dim is not None:
        inputs.append(helper.make_tensor_value_info("odd", TensorProto.FLOAT, [extra_dim]))
    rotation = helper.make_tensor("rotation", TensorProto.FLOAT, [1, 128, 128], [0.0] * (128 * 128))
    codebook = helper.make_tensor("codebook", TensorProto.FLOAT, [1, 256], [0.0] * 256)
    empty = helper.make_tensor("empty", TensorProto.FLOAT, [0], [])
    node = helper.make_node(
        "TQQuantize",
        ["x", "past_key_values.0.key", "rotation", "codebook", "empty", "past_key_values.0.key_window"],
        ["present.0.key", "present.0.key_window"],
        bits=[4],
        part_sizes=[128],
        sink_tokens=4,
        recent_window=60,
        plugin_version="1",
        plugin_namespace="tqexport",
        constant_hadamard=promise,
    )
    outputs = [
        helper.make_tensor_value_info("present.0.key", TensorProto.INT8, None),
        helper.make_tensor_value_info("present.0.key_window", TensorProto.FLOAT16, None),
    ]
    graph = helper.make_graph([node], "tiny", inputs, outputs, [rotation, codebook, empty])
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.fixture
def no_tensorrt(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "tensorrt" or name.startswith("tensorrt."):
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_without_tensorrt_prints_trtexec_and_exits_7(tmp_path, capsys, no_tensorrt):
    model = tiny_model(tmp_path / "m.onnx")
    code = main(
        [
            "build",
            str(model),
            "--target",
            "h100",
            "-o",
            str(tmp_path / "m.plan"),
            "--max-batch",
            "4",
            "--max-context",
            "2048",
            "--plugin-lib",
            "/opt/tq/libtqexport_trt.so",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 7
    err_lines = [line for line in err.splitlines() if line.strip()]
    assert len(err_lines) == 1, err
    assert err_lines[0].startswith("tqexport build: error: the tensorrt Python module is not installed")
    argv = shlex.split(out.strip())
    assert argv[0] == "trtexec"
    assert f"--onnx={model}" in argv
    assert f"--saveEngine={tmp_path / 'm.plan'}" in argv
    assert "--staticPlugins=/opt/tq/libtqexport_trt.so" in argv
    assert "--stronglyTyped" in argv
    assert "--preview=+aliasedPluginIO1003" in argv
    shapes = dict(a.split("=", 1) for a in argv if "Shapes=" in a)
    # batch 1..4 (opt 4), S 1..2048 (opt 1), Tc 0..2048 (opt 1024), window 0..W=64 (opt 64)
    assert shapes["--minShapes"] == (
        "x:1x2x1x128,past_key_values.0.key:1x2x0x66,past_key_values.0.key_window:1x2x0x128"
    )
    assert shapes["--optShapes"] == (
        "x:4x2x1x128,past_key_values.0.key:4x2x1024x66,past_key_values.0.key_window:4x2x64x128"
    )
    assert shapes["--maxShapes"] == (
        "x:4x2x2048x128,past_key_values.0.key:4x2x2048x66,past_key_values.0.key_window:4x2x64x128"
    )


def test_broken_hadamard_promise_is_refused_before_anything(tmp_path, capsys):
    """docs/format.md 8.3: the plugin would trust constant_hadamard = 1; the all-zero rotation is not
    Sylvester-Hadamard, so build refuses the file (exit 6, one line) and prints no trtexec line either."""
    model = tiny_model(tmp_path / "m.onnx", promise=1)
    code = main(["build", str(model), "--target", "h100", "-o", "e.plan", "--print-trtexec"])
    out, err = capsys.readouterr()
    assert code == 6 and out == ""
    err_lines = [line for line in err.splitlines() if line.strip()]
    assert len(err_lines) == 1, err
    want = "TQQuantize '': constant_hadamard = 1 but input 2 'rotation' is not Sylvester-Hadamard"
    assert want in err_lines[0]


def test_print_trtexec_only(tmp_path, capsys):
    model = tiny_model(tmp_path / "m.onnx")
    code = main(["build", str(model), "--target", "orin", "-o", "e.plan", "--print-trtexec"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith("trtexec --onnx=")


def test_unknown_dim_name_names_input_and_dim(tmp_path, capsys, no_tensorrt):
    model = tiny_model(tmp_path / "m.onnx", extra_dim="mystery")
    code = main(["build", str(model), "--target", "thor", "-o", "e.plan"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "input 'odd' dim 0 is named 'mystery'" in err
    assert "--dim mystery=MIN:OPT:MAX" in err


def test_dim_override_fixes_unknown_dim(tmp_path):
    model = onnx.load(str(tiny_model(tmp_path / "m.onnx", extra_dim="mystery")))
    name, rng = parse_dim_override("mystery=2:3:5")
    profile = derive_profile(model, max_batch=1, max_context=16, overrides={name: rng})
    assert profile.shapes["odd"] == ([2], [3], [5])
    assert profile.shapes["x"] == ([1, 2, 1, 128], [1, 2, 1, 128], [1, 2, 16, 128])


@pytest.mark.parametrize("text", ["mystery", "a=1:2", "a=3:2:1", "a=x:1:2", "=1:1:1"])
def test_bad_dim_override_is_a_usage_error(text):
    with pytest.raises(UsageError):
        parse_dim_override(text)


def test_missing_model_exits_3(tmp_path, capsys):
    code = main(["build", str(tmp_path / "nope.onnx"), "--target", "h100", "-o", "e.plan"])
    _, err = capsys.readouterr()
    assert code == 3
    assert "no such file" in err


def test_embedded_plugin_line_uses_dynamic_plugins(tmp_path):
    model = onnx.load(str(tiny_model(tmp_path / "m.onnx")))
    profile = derive_profile(model, max_batch=1, max_context=8)
    argv = trtexec_command(Path("m.onnx"), Path("m.plan"), profile, Path("lib.so"), embed_plugin=True)
    assert "--dynamicPlugins=lib.so" in argv and "--setPluginsToSerialize=lib.so" in argv and "--vc" in argv
    assert not any(a.startswith("--staticPlugins") for a in argv)
