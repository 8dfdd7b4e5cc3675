"""Models whose weights exceed 2 GiB convert without loading the weights: the embedding table is a sparse
external file (2.2 GiB on disk, almost no blocks), the converter only rewrites names and edges."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tests.passes.builders import TinySpec, build_tiny_llm
from tqexport.converter import ConvertOptions, convert_model
from tqexport.graph.model_io import copy_sparse, external_data_locations

HIDDEN = 64
BIG_VOCAB = (2**31 + 2**27) // (HIDDEN * 4)  # 2.125 GiB of float32


def _big_model(folder: Path) -> Path:
    spec = TinySpec(hidden=HIDDEN, num_layers=1)
    model = build_tiny_llm(spec)
    gather = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids")
    table = next(t for t in model.graph.initializer if t.name == gather.input[0])
    table.ClearField("raw_data")
    table.ClearField("float_data")
    del table.dims[:]
    table.dims.extend([BIG_VOCAB, HIDDEN])
    table.data_location = TensorProto.EXTERNAL
    size = BIG_VOCAB * HIDDEN * 4
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(size))):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    with open(folder / "weights.bin", "wb") as handle:
        handle.truncate(size)  # sparse: no blocks allocated
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.slow
def test_over_2gib_model_converts_without_loading_weights(tmp_path: Path) -> None:
    source_dir, out_dir = tmp_path / "src", tmp_path / "out"
    source_dir.mkdir()
    source = _big_model(source_dir)
    assert (source_dir / "weights.bin").stat().st_size > 2**31
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = convert_model(source, out_dir / "converted.onnx", ConvertOptions(), log=lambda _l: None)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 512, f"peak RSS grew by {grown_mib:.0f} MiB: weights were loaded"
    model = onnx.load(result.output, load_external_data=False)
    assert external_data_locations(model) == {"converted.onnx.data"}
    copied = out_dir / "converted.onnx.data"
    assert copied.stat().st_size == (source_dir / "weights.bin").stat().st_size
    assert copied.stat().st_blocks * 512 < 2**20, "the copy must stay sparse"
    assert result.counts["attention_read"] == 1


def test_copy_sparse_keeps_data_and_holes(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    payload = np.arange(4096, dtype=np.uint8).tobytes()
    with open(source, "wb") as handle:
        handle.seek(64 << 20)
        handle.write(payload)
        handle.truncate(128 << 20)
    target = tmp_path / "b.bin"
    copy_sparse(source, target)
    assert target.stat().st_size == source.stat().st_size
    with open(target, "rb") as handle:
        handle.seek(64 << 20)
        assert handle.read(len(payload)) == payload
        handle.seek(0)
        assert handle.read(4096) == bytes(4096)
    assert target.stat().st_blocks * 512 < (1 << 20) or os.name != "posix"
