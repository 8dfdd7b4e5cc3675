"""The lossless weight pack that carries SmolLM2's real weights to the device (bench/gpu_e2e).

Oracle: the bytes. Synthetic tensors are made the way the real ones were (llama.cpp's reference Q4_1 / Q8_0
quantizer, then gguf-py's float32 dequantization, in ONNX's [in, out] MatMul layout); each must encode to the
expected block format and decode to the identical float32 bit patterns. The stream path (encode, split into
parts, unpack) runs through the device's unpacker, which must also refuse a corrupt or missing part.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gpu_e2e.pack_real_weights import CALL_LIMIT, MIB, encode_stream, plan_calls  # noqa: E402
from bench.gpu_e2e.unpack_real_weights import MANIFEST_FORMAT, PackError, sha256_of, unpack  # noqa: E402
from bench.gpu_e2e.weight_pack import decode_tensor, encode_tensor  # noqa: E402


def quantize_q4_1(rows: np.ndarray) -> np.ndarray:
    """llama.cpp's quantize_row_q4_1_ref then gguf-py's dequantize, per 32-block of each row (float32 out)."""
    blocks = rows.astype(np.float32).reshape(-1, 32)
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    d = (high - low) / np.float32(15)
    inverse = np.divide(1, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, ((blocks - low[:, None]) * inverse[:, None] + np.float32(0.5)).astype(np.int8))
    d16, m16 = d.astype(np.float16).astype(np.float32), low.astype(np.float16).astype(np.float32)
    return (d16[:, None] * q.astype(np.float32) + m16[:, None]).reshape(rows.shape)


def quantize_q8_0(rows: np.ndarray) -> np.ndarray:
    blocks = rows.astype(np.float32).reshape(-1, 32)
    d = np.abs(blocks).max(axis=1) / np.float32(127)
    inverse = np.divide(1, d, out=np.zeros_like(d), where=d != 0)
    q = np.rint(blocks * inverse[:, None]).astype(np.int8)
    return (d.astype(np.float16).astype(np.float32)[:, None] * q.astype(np.float32)).reshape(rows.shape)


def matmul_weight(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """An ONNX MatMul weight [in, out] whose GGUF rows ([out][in]) were Q4_1 blocks."""
    return np.ascontiguousarray(quantize_q4_1(rng.normal(0, 0.05, (fan_out, fan_in))).T)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_q4_1_matmul_weight_is_found_along_the_transpose_and_decodes_exactly() -> None:
    weight = matmul_weight(np.random.default_rng(0), fan_in=96, fan_out=64)
    encoded = encode_tensor(weight)
    assert (encoded.encoding, encoded.params) == ("q4_1", {"transpose": True})
    assert len(encoded.arrays["exception_blocks"]) == 0
    assert encoded.stored_bytes() == (96 * 64 // 32) * (2 + 2 + 16)  # d, m, 32 nibbles per block
    assert same_bits(decode_tensor(encoded), weight)


def test_q8_0_embedding_decodes_exactly() -> None:
    embedding = quantize_q8_0(np.random.default_rng(1).normal(0, 0.1, (40, 64)))
    encoded = encode_tensor(embedding)
    assert (encoded.encoding, encoded.params) == ("q8_0", {"transpose": False})
    assert len(encoded.arrays["exception_blocks"]) == 0
    assert same_bits(decode_tensor(encoded), embedding)


def test_blocks_that_no_scale_reproduces_are_kept_raw() -> None:
    weight = matmul_weight(np.random.default_rng(2), fan_in=64, fan_out=64)
    bits = weight.view(np.uint32)
    bits[5, 7] += 1  # one ulp off: block (row 7 of the transpose, first half) no longer decodes exactly
    bits[40, 60] += 1  # block (row 60, second half)
    encoded = encode_tensor(weight)
    assert encoded.encoding == "q4_1"
    assert encoded.arrays["exception_blocks"].tolist() == [7 * 2, 60 * 2 + 1]
    assert same_bits(decode_tensor(encoded), weight)


def test_tied_head_float16_norms_and_raw_float32() -> None:
    rng = np.random.default_rng(3)
    embedding = quantize_q8_0(rng.normal(0, 0.1, (64, 32)))
    head = np.ascontiguousarray(embedding.T)
    norm = rng.normal(1, 0.1, 32).astype(np.float16).astype(np.float32)
    noise = rng.normal(0, 1, 48).astype(np.float32)
    earlier = {"embed": embedding}
    tied = encode_tensor(head, earlier)
    assert (tied.encoding, tied.params, tied.stored_bytes()) == ("transpose_of", {"source": "embed"}, 0)
    assert same_bits(decode_tensor(tied, earlier), head)
    assert encode_tensor(norm).encoding == "float16"
    assert encode_tensor(noise).encoding == "float32"
    for values in (norm, noise):
        assert same_bits(decode_tensor(encode_tensor(values)), values)


def _write_pack(tmp_path: Path, data: np.ndarray, tensors: list, cuts: list[int]) -> Path:
    """Encode, split the stream at `cuts` into parts under tmp_path/packNN, write the manifest."""
    entries, chunks = encode_stream(data, tensors)
    stream = b"".join(chunks)
    parts = []
    for index, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(stream)], strict=True)):
        folder = tmp_path / f"pack{index:02d}"
        folder.mkdir()
        (folder / f"weights.{index:02d}").write_bytes(stream[start:end])
        parts.append(
            {"file": f"weights.{index:02d}", "size": end - start, "sha256": sha256_of(stream[start:end])}
        )
    manifest = {
        "format": MANIFEST_FORMAT,
        "data_size": int(data.size),
        "data_sha256": sha256_of(data),
        "parts": parts,
        "tensors": entries,
    }
    path = tmp_path / "weights_pack.json"
    path.write_text(json.dumps(manifest))
    return path


def _model_data() -> tuple[np.ndarray, list]:
    """A data file of a tiny tied-embedding model and its (name, shape, dtype, location, offset, length)."""
    rng = np.random.default_rng(4)
    embedding = quantize_q8_0(rng.normal(0, 0.1, (64, 64)))
    tensors = {
        "embed": embedding,
        "norm": rng.normal(1, 0.1, 64).astype(np.float16).astype(np.float32),
        "q_proj": matmul_weight(rng, 64, 64),
        "down_proj": matmul_weight(rng, 128, 64),
        "lm_head": np.ascontiguousarray(embedding.T),
    }
    entries, offset = [], 0
    for name, values in tensors.items():
        entries.append((name, values.shape, np.dtype(np.float32), "model.onnx.data", offset, values.nbytes))
        offset += values.nbytes
    data = np.concatenate([v.reshape(-1).view(np.uint8) for v in tensors.values()])
    return data, entries


def test_stream_split_in_parts_unpacks_byte_for_byte(tmp_path: Path) -> None:
    data, tensors = _model_data()
    manifest = _write_pack(tmp_path, data, tensors, cuts=[1000, 5000])
    out = tmp_path / "rebuilt" / "model.onnx.data"
    unpack(manifest, sorted(tmp_path.glob("pack*")), out)
    assert np.array_equal(np.fromfile(out, np.uint8), data)
    encodings = [t["encoding"] for t in json.loads(manifest.read_text())["tensors"]]
    assert encodings == ["q8_0", "float16", "q4_1", "q4_1", "transpose_of"]


def test_unpack_refuses_a_corrupt_or_missing_part(tmp_path: Path) -> None:
    data, tensors = _model_data()
    manifest = _write_pack(tmp_path, data, tensors, cuts=[3000])
    part = tmp_path / "pack01" / "weights.01"
    raw = bytearray(part.read_bytes())
    raw[10] ^= 1
    part.write_bytes(bytes(raw))
    with pytest.raises(PackError, match="SHA-256 differs"):
        unpack(manifest, sorted(tmp_path.glob("pack*")), tmp_path / "out.data")
    part.unlink()
    with pytest.raises(PackError, match="weights.01 .* is in none of"):
        unpack(manifest, sorted(tmp_path.glob("pack*")), tmp_path / "out.data")
    assert not (tmp_path / "out.data").exists()


def test_plan_fills_the_wheel_calls_and_stays_under_the_limit(tmp_path: Path) -> None:
    wheel = tmp_path / "wheel"
    for index, size in enumerate([32 * MIB, 32 * MIB, 20 * MIB]):
        (wheel / f"part{index:02d}").mkdir(parents=True)
        (wheel / f"part{index:02d}" / f"p{index:02d}").write_bytes(b"\0" * size)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "lib.so").write_bytes(b"\0" * (7 * MIB))
    tree, margin, stream = 27 * MIB, 2 * MIB, 90 * MIB
    calls = plan_calls(tmp_path, tree, stream, wheel, ["lib"], margin)
    # wheel calls take 64 - 27 - 32 - 2 = 3 MiB each; the final 64 - 27 - 20 - 7 - 1 (manifest) - 2 = 7 MiB;
    # the other 77 MiB need ceil(77 / 35) = 3 calls.
    assert [c.part_bytes // MIB for c in calls] == [3, 3, 25, 25, 25, 7]
    assert sum(c.part_bytes for c in calls) == stream
    assert all(c.fixed_bytes + c.part_bytes <= CALL_LIMIT - margin for c in calls)
    assert calls[-1].carry == ["wheel/part02", "lib"] and calls[-1].command.endswith("--real")
