"""Write random weights into the external data file of an exported graph (the graph travels without them).

Every initializer of a graph from bench/gpu_e2e/export_models.py lives in `model.onnx.data` (location,
offset, length in its external_data entries). Rules, Llama-style: rank-1 tensors (RMSNorm weights) are 1;
matrices are N(0, 1 / fan_in) with fan_in the smaller dimension (MatMul weights are [in, out]; embeddings
[V, H]), so activations stay of order 1 through the random layers. Values depend only on the seed and the
tensor's name, so converted graphs (which keep the original's tensors and offsets) can share the file.

    python -m bench.gpu_e2e.fill_weights MODEL.onnx [--seed 0] [--share-with OTHER.onnx ...]
"""

from __future__ import annotations

import argparse
import os
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data

# A fixed block of normals tiled over each tensor: generating 10^9 fresh normals costs seconds of device
# time, and a period of 2^22 is far longer than any row or column of these models.
BLOCK = 1 << 22


def external_tensors(model_path: Path) -> list[tuple[str, tuple[int, ...], np.dtype, str, int, int]]:
    """(name, shape, dtype, location, offset, length) of each initializer kept in external data."""
    model = onnx.load(str(model_path), load_external_data=False)
    found = []
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        length = int(entries.get("length", count * dtype.itemsize))
        if length != count * dtype.itemsize:
            raise ValueError(
                f"{model_path}: {tensor.name} has length {length}, expected {count * dtype.itemsize}"
            )
        found.append(
            (
                tensor.name,
                tuple(tensor.dims),
                dtype,
                entries["location"],
                int(entries.get("offset", 0)),
                length,
            )
        )
    return found


def tensor_values(name: str, shape: tuple[int, ...], dtype: np.dtype, block: np.ndarray) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    if len(shape) <= 1:
        return np.ones(count, dtype=dtype)
    start = zlib.crc32(name.encode()) % BLOCK
    reps = -(-(start + count) // BLOCK)
    flat = np.tile(block, reps)[start : start + count] if reps > 1 else block[start : start + count]
    return (flat / np.sqrt(min(shape))).astype(dtype)


def fill(model_path: Path, seed: int) -> list[Path]:
    """Write every external data file of `model_path`; return their paths."""
    block = np.random.default_rng(seed).standard_normal(BLOCK).astype(np.float32)
    written: dict[Path, int] = {}
    tensors = external_tensors(model_path)
    for location in {t[3] for t in tensors}:
        path = model_path.parent / location
        path.unlink(missing_ok=True)
        written[path] = max(t[4] + t[5] for t in tensors if t[3] == location)
        with path.open("wb") as stream:
            stream.truncate(written[path])
    for name, shape, dtype, location, offset, _length in tensors:
        with (model_path.parent / location).open("r+b") as stream:
            stream.seek(offset)
            stream.write(tensor_values(name, shape, dtype, block).tobytes())
    return list(written)


def share(source: Path, target: Path) -> None:
    """Point `target`'s external data at `source`'s files (hard links) after checking the tensors match."""
    mine = {t[0]: t[1:] for t in external_tensors(source)}
    theirs = {t[0]: t[1:] for t in external_tensors(target)}
    for name, entry in theirs.items():
        if mine.get(name) is None or mine[name][:2] != entry[:2] or mine[name][3:] != entry[3:]:
            raise ValueError(
                f"{target}: external tensor {name} {entry} differs from {source}'s {mine.get(name)}"
            )
    for location in {entry[2] for entry in theirs.values()}:
        src_location = {mine[n][2] for n, e in theirs.items() if e[2] == location}
        if len(src_location) != 1:
            raise ValueError(f"{target}: {location} maps to several files of {source}: {src_location}")
        link = target.parent / location
        link.unlink(missing_ok=True)
        os.link(source.parent / src_location.pop(), link)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--share-with", type=Path, nargs="*", default=[], help="converted graphs of MODEL")
    args = parser.parse_args()
    files = fill(args.model, args.seed)
    for other in args.share_with:
        share(args.model, other)
    print(f"filled {', '.join(str(f) for f in files)}; shared with {len(args.share_with)} graph(s)")


if __name__ == "__main__":
    main()
