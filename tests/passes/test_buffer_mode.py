"""`tqexport convert --cache-mode buffer` (docs/format.md section 7 and its buffer-mode runtime note).

The buffer-mode conversion of a fixture must decode to the same logits as its concat-mode conversion (same
codecs, same tokens, same positions; only the cache storage differs): batch 2, row 1 left-padded by 3, a
6-token prefill and 32 teacher-forced steps, through tqexport.eval.DecodeSession and the ORT custom ops.
A buffer too small fails with the op's "buffer overflow" error; graphs without the inputs past_lengths is
computed from are refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tqexport.cli.main import main
from tqexport.converter import ConvertOptions, convert_model
from tqexport.errors import UnsupportedError, UsageError
from tqexport.eval.compare import compare_many
from tqexport.eval.session import BufferOverflowError, DecodeSession, buffer_capacity

catalog = pytest.importorskip("graphs.catalog")
from tests.passes.builders import TinySpec  # noqa: E402
from tests.passes.referee import (  # noqa: E402
    ConvertedRunner,
    ort_library_available,
    teacher_forced_logits,
)

needs_ort = pytest.mark.skipif(not ort_library_available(), reason="tqexport ORT custom-op library not built")

FIXTURES = {(fx.exporter, fx.arch): fx for fx in catalog.FIXTURES}
CASES = [
    ("optimum", "llama"),
    ("optimum", "gpt2"),
    ("optimum", "gemma2"),  # softcap 50 and a sliding-window layer (window 8 < 38 tokens)
    ("dynamo_sdpa_opset18", "llama"),
    ("dynamo_sdpa_opset23", "gemma2"),  # ONNX Attention op
    ("torchscript", "gpt_neox"),
    ("genai", "llama"),  # GroupQueryAttention, unfused first
]
WINDOWS = [(0, 0), (2, 4)]  # (--sink-tokens, --recent-window)
PREFILL, STEPS, PAD = 6, 32, [0, 3]


def _quiet(_line: str) -> None:
    pass


def _convert(fx, out: Path, mode: str, sinks: int, recent: int, bits: int = 4) -> Path:
    options = ConvertOptions(
        key_bits=bits, value_bits=bits, cache_mode=mode, sink_tokens=sinks, recent_window=recent
    )
    convert_model(fx.path, out, options, log=_quiet)
    return out


def _decode(path: Path, ids: np.ndarray, capacity: int | None = None) -> tuple[np.ndarray, DecodeSession]:
    """Logits [B, STEPS + 1, V]: the last prefill position, then each teacher-forced step."""
    session = DecodeSession.from_path(path, capacity=capacity)
    mask = np.ones((ids.shape[0], PREFILL), dtype=np.int64)
    for b, pad in enumerate(PAD):
        mask[b, :pad] = 0
    logits = [session.prefill(ids[:, :PREFILL], mask)[:, -1]]
    for position in range(PREFILL, PREFILL + STEPS):
        logits.append(session.step(ids[:, position]))
    return np.stack(logits, axis=1), session


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


@needs_ort
@pytest.mark.slow
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"sinks{w[0]}_recent{w[1]}")
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}/{c[1]}")
def test_buffer_mode_decodes_like_concat_mode(case, window, tmp_path: Path) -> None:
    fx = FIXTURES[case]
    sinks, recent = window
    ids = np.random.default_rng(0).integers(3, 100, (2, PREFILL + STEPS))
    concat_path = _convert(fx, tmp_path / "concat" / "model.onnx", "concat", sinks, recent)
    buffer_path = _convert(fx, tmp_path / "buffer" / "model.onnx", "buffer", sinks, recent)
    concat, concat_session = _decode(concat_path, ids)
    buffered, buffer_session = _decode(buffer_path, ids, capacity=48)
    assert np.isfinite(buffered).all()
    error = np.abs(concat - buffered).max() / np.abs(concat).max()
    assert error <= 1e-6, f"buffer vs concat: {error:.3g} x max|logit|"
    # Same bytes in use as concat mode (T = 38 tokens: min(T, W) window slots, the rest compressed rows);
    # the buffers themselves hold 48 rows.
    assert buffer_session.cache_bytes() == concat_session.cache_bytes()
    assert buffer_session.allocated_bytes() > buffer_session.cache_bytes()
    # The buffer really holds the compressed rows: rows [0, T - Ns - min(Rw, ...)) written, the tail zero.
    used = PREFILL + STEPS - min(PREFILL + STEPS, sinks + recent)
    key = buffer_session.past[buffer_session.layout.cache_slots[0].past_name]
    assert key.shape[2] == 48
    assert np.any(key[:, :, used - 1] != 0) and not np.any(key[:, :, used:])


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"sinks{w[0]}_recent{w[1]}")
def test_buffer_graph_io_metadata_and_checks(window, tmp_path: Path) -> None:
    fx = FIXTURES[("optimum", "gemma2")]
    sinks, recent = window
    path = _convert(fx, tmp_path / "model.onnx", "buffer", sinks, recent)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    inputs = {v.name: v for v in model.graph.input}
    outputs = {v.name: v for v in model.graph.output}
    original = onnx.load(str(fx.path), load_external_data=False)
    # Original I/O keep their names and order; windows (when W > 0) come after them.
    assert [v.name for v in model.graph.input][: len(original.graph.input)] == [
        v.name for v in original.graph.input
    ]
    assert [v.name for v in model.graph.output][: len(original.graph.output)] == [
        v.name for v in original.graph.output
    ]
    assert "past_lengths" not in " ".join(inputs)  # computed inside the graph
    config = json.loads({p.key: p.value for p in model.metadata_props}["tqexport.config"])
    assert config["cache_mode"] == "buffer"
    for layer, (key, _value) in enumerate(fx.cache_inputs):
        row_bytes = config["layers"][str(layer)]["key"]["row_bytes"]
        present = key.replace("past_key_values", "present")
        assert _dims(inputs[key]) == _dims(outputs[present])
        assert _dims(inputs[key])[1:] == [fx.num_kv_heads, "max_cache_len", row_bytes]
        assert inputs[key].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        if sinks + recent:
            assert _dims(inputs[f"{key}_window"])[1:] == [fx.num_kv_heads, sinks + recent, fx.head_dim]
            assert _dims(outputs[f"{present}_window"]) == _dims(inputs[f"{key}_window"])
        else:
            assert f"{key}_window" not in inputs
    tq_nodes = [n for n in model.graph.node if n.domain == "tqexport"]
    assert len(tq_nodes) == 3 * fx.num_layers
    for node in tq_nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["cache_mode"] == 1
        past_lengths_slot = 6 if node.op_type == "TQQuantize" else 11
        assert node.input[past_lengths_slot] == "tq_past_lengths"


@needs_ort
def test_buffer_overflow_fails_clearly(tmp_path: Path) -> None:
    """38 tokens need 38 compressed rows without a window: capacity 38 decodes, 37 fails on the last step."""
    fx = FIXTURES[("optimum", "llama")]
    path = _convert(fx, tmp_path / "model.onnx", "buffer", 0, 0)
    ids = np.random.default_rng(1).integers(3, 100, (2, PREFILL + STEPS))
    exact, _ = _decode(path, ids, capacity=PREFILL + STEPS)
    roomy, _ = _decode(path, ids, capacity=buffer_capacity(PREFILL + STEPS))
    assert np.array_equal(exact, roomy)
    with pytest.raises(BufferOverflowError, match="buffer overflow") as overflow:
        _decode(path, ids, capacity=PREFILL + STEPS - 1)
    assert "capacity 37 rows" in str(overflow.value)


@needs_ort
def test_buffer_session_needs_a_capacity(tmp_path: Path) -> None:
    fx = FIXTURES[("optimum", "gpt2")]
    path = _convert(fx, tmp_path / "model.onnx", "buffer", 0, 0)
    with pytest.raises(UsageError, match="needs the cache capacity"):
        DecodeSession.from_path(path).prefill(np.array([[3, 4, 5]]))
    assert buffer_capacity(38) == 64 and buffer_capacity(64) == 64 and buffer_capacity(65) == 128


def test_graph_without_attention_mask_is_refused(tmp_path: Path) -> None:
    fx = FIXTURES[("optimum", "llama")]
    model = onnx.load(str(fx.path))
    for value in model.graph.input:
        if value.name == "attention_mask":
            value.name = "mask"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == "attention_mask":
                node.input[i] = "mask"
    source = tmp_path / "in" / "model.onnx"
    source.parent.mkdir()
    onnx.save(model, str(source))
    out = tmp_path / "out.onnx"
    options = ConvertOptions(cache_mode="buffer")
    with pytest.raises(UnsupportedError, match="no 'attention_mask' input"):
        convert_model(source, out, options, log=_quiet)
    assert not out.exists()
    convert_model(source, out, ConvertOptions(), log=_quiet)  # concat mode does not need it
    assert out.exists()


@needs_ort
@pytest.mark.slow
def test_compare_and_generate_drive_buffer_models(tmp_path: Path, capsys) -> None:
    fx = FIXTURES[("optimum", "gpt2")]
    concat = _convert(fx, tmp_path / "concat" / "model.onnx", "concat", 2, 4)
    buffer = _convert(fx, tmp_path / "buffer" / "model.onnx", "buffer", 2, 4)
    ids = np.random.default_rng(2).integers(3, 100, (2, 20 + 12 + 1))
    reports = compare_many(fx.path, [concat, buffer], ids, 20, 12, progress=False)
    by_concat, by_buffer = (r.as_dict() for r in reports)
    assert by_buffer["decode"] == by_concat["decode"]
    assert by_buffer["storage"] == by_concat["storage"]
    assert by_buffer["storage"]["converted_bits_per_element_long"] < 32
    ids_text = ",".join(str(i) for i in ids[0, :5])
    outputs = {}
    for name, path in (("concat", concat), ("buffer", buffer)):
        assert main(["generate", str(path), "--ids", ids_text, "--max-new-tokens", "10", "--json"]) == 0
        outputs[name] = json.loads(capsys.readouterr().out)["new_ids"]
    assert outputs["buffer"] == outputs["concat"] and len(outputs["buffer"]) == 10
    args = ["generate", str(buffer), "--ids", ids_text, "--max-new-tokens", "10", "--capacity", "4"]
    assert main(args) == 2
    assert "buffer overflow" in capsys.readouterr().err


class _BufferReferenceRunner(ConvertedRunner):
    """The NumPy reference ops on a buffer-mode model: zeroed caches of `capacity` rows."""

    def __init__(self, model: onnx.ModelProto, capacity: int) -> None:
        super().__init__(model)
        self.capacity = capacity

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        feeds = super().empty_cache(batch)
        for name, value in self.inputs.items():
            if name in feeds and _dims(value)[2] == "max_cache_len":
                shape = list(feeds[name].shape)
                shape[2] = self.capacity
                feeds[name] = np.zeros(shape, dtype=feeds[name].dtype)
        return feeds


@pytest.mark.slow
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"sinks{w[0]}_recent{w[1]}")
def test_builder_model_buffer_mode_matches_concat_on_reference_ops(window, save_tiny, tmp_path: Path) -> None:
    """A graph that reads Shape(past cache) for its mask (past_shape_reader), with softcap and a sliding
    window, through onnx.reference and the NumPy reference ops."""
    sinks, recent = window
    source = save_tiny(TinySpec(form="eager", softcap=30.0, sliding_window=4, past_shape_reader=True))
    ids = np.random.default_rng(3).integers(3, 40, (2, PREFILL + STEPS))
    logits = {}
    for mode in ("concat", "buffer"):
        options = ConvertOptions(cache_mode=mode, sink_tokens=sinks, recent_window=recent)
        result = convert_model(source, tmp_path / f"{mode}.onnx", options, log=_quiet)
        model = onnx.load(result.output)
        runner = ConvertedRunner(model) if mode == "concat" else _BufferReferenceRunner(model, 40)
        logits[mode] = teacher_forced_logits(runner, ids, PAD, PREFILL, STEPS)
    error = np.abs(logits["concat"] - logits["buffer"]).max() / np.abs(logits["concat"]).max()
    assert error <= 1e-6, f"buffer vs concat: {error:.3g} x max|logit|"


@needs_ort
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"sinks{w[0]}_recent{w[1]}")
def test_buffer_bound_as_past_and_present_decodes_in_place(window, tmp_path: Path) -> None:
    """docs/format.md 9.1: one buffer per cache bound as both past and present with IO binding (the ops allow
    the alias) decodes to the logits of the copying decode; the buffers hold the caches afterwards."""
    import onnxruntime as ort

    from tqexport.eval.in_place import InPlaceDecoder
    from tqexport.runtime import register_with

    fx = FIXTURES[("optimum", "llama")]
    model = _convert(fx, tmp_path / "buffer.onnx", "buffer", *window)
    ids = np.random.default_rng(0).integers(3, 100, (2, PREFILL + 8))
    capacity = buffer_capacity(ids.shape[1])
    decoder = DecodeSession.from_path(model, capacity=capacity)
    copying = [decoder.prefill(ids[:, :PREFILL])[:, -1]]
    copying += [decoder.step(ids[:, t]) for t in range(PREFILL, ids.shape[1])]

    options = ort.SessionOptions()
    register_with(options)
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    in_place = InPlaceDecoder(session, capacity, "cpu")
    np.testing.assert_array_equal(in_place.teacher_forced(ids, PREFILL), np.stack(copying))
    for name, value in in_place.buffers.items():
        np.testing.assert_array_equal(value.numpy(), decoder.past[name])


@needs_ort
def test_in_place_decoder_refuses_a_concat_mode_model(tmp_path: Path) -> None:
    from tqexport.eval.in_place import InPlaceDecoder
    from tqexport.eval.ort_session import make_session

    model = _convert(FIXTURES[("optimum", "llama")], tmp_path / "concat.onnx", "concat", 0, 0)
    with pytest.raises(UsageError, match="buffer-mode"):
        InPlaceDecoder(make_session(model), capacity=64)
