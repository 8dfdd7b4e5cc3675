"""Load, save and check ONNX models without ever reading external weights into memory.

Initializers stored as external data keep their `location` (relative to the model's folder). When the output
goes to another folder, each referenced data file is copied there (sparse-aware) as `<output name>.data`: the
ONNX checker refuses hard links and paths that leave the model's folder, so neither shortcut is possible.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

from tqexport.errors import ModelLoadError, ValidationError

TWO_GIB = 2**31


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read the graph only; external initializers stay references to their files."""
    model_path = Path(path)
    if not model_path.is_file():
        raise ModelLoadError(f"no such model file: {model_path}")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ModelLoadError(f"{model_path} is not a readable ONNX model: {exc}") from exc
    for location in external_data_locations(model):
        if not (model_path.parent / location).is_file():
            raise ModelLoadError(f"{model_path}: external data file {location!r} is missing")
    return model


def all_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Initializers and Constant-node tensors of a graph and of every nested subgraph."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                tensors.append(attribute.t)
            elif attribute.type == onnx.AttributeProto.GRAPH:
                tensors.extend(all_tensors(attribute.g))
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    tensors.extend(all_tensors(subgraph))
    return tensors


def external_data_locations(model: onnx.ModelProto) -> set[str]:
    locations: set[str] = set()
    for tensor in all_tensors(model.graph):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return locations


def copy_sparse(source: Path, target: Path) -> None:
    """Copy a file keeping its holes (SEEK_DATA/SEEK_HOLE), so multi-GiB sparse weight files copy quickly."""
    size = source.stat().st_size
    with open(source, "rb") as src, open(target, "wb") as dst:
        fd = src.fileno()
        offset = 0
        try:
            while offset < size:
                data = os.lseek(fd, offset, os.SEEK_DATA)
                hole = os.lseek(fd, data, os.SEEK_HOLE)
                src.seek(data)
                dst.seek(data)
                remaining = hole - data
                while remaining:
                    chunk = src.read(min(remaining, 1 << 24))
                    dst.write(chunk)
                    remaining -= len(chunk)
                offset = hole
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data past `offset`; anything else: no SEEK_DATA support
                src.seek(0)
                dst.seek(0)
                shutil.copyfileobj(src, dst, 1 << 24)
        dst.truncate(size)


def _relocate_external_data(model: onnx.ModelProto, source_dir: Path, out: Path) -> None:
    """Copy each external data file next to `out` as `<out name>.data[.N]` and point the tensors at it.

    A copy, not a link: the ONNX checker refuses files with several hard links, and paths leaving the model's
    folder."""
    renames: dict[str, str] = {}
    for i, location in enumerate(sorted(external_data_locations(model))):
        new_location = f"{out.name}.data" + (f".{i}" if i else "")
        target = out.parent / new_location
        if target.exists():
            target.unlink()
        copy_sparse(source_dir / location, target)
        renames[location] = new_location
    for tensor in all_tensors(model.graph):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = renames[entry.value]


def save_model(
    model: onnx.ModelProto, out_path: str | os.PathLike[str], source_dir: str | os.PathLike[str]
) -> Path:
    """Write `model` to `out_path`; external data files are copied beside it unless it shares their folder."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = Path(source_dir)
    if out.parent.resolve() != source.resolve():
        _relocate_external_data(model, source, out)
    if model.ByteSize() >= TWO_GIB:
        raise ValidationError(
            f"the rewritten graph proto is {model.ByteSize()} bytes (>= 2 GiB) even with external weights"
        )
    with open(out, "wb") as handle:
        handle.write(model.SerializeToString())
    return out


def ops_without_schema(model: onnx.ModelProto) -> set[str]:
    """Default-domain op types ONNX has no schema for (ONNX Runtime registers some there, e.g. the
    SimplifiedLayerNormalization of onnxruntime-genai graphs): the checker refuses any graph holding them."""
    return {
        node.op_type
        for node in model.graph.node
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)
    }


UNCHECKED_DOMAIN = "tqexport.unchecked"


def check_model_file(
    path: str | os.PathLike[str], unchecked_ops: set[str] | frozenset[str] = frozenset()
) -> None:
    """`onnx.checker.check_model(path, full_check=True)`: the path form works for models beyond 2 GiB.

    `unchecked_ops`: default-domain ops without an ONNX schema that the source model already had; the check
    then runs on a copy (beside `path`, graph only) with those nodes moved to a private domain, so every other
    node still gets the full check.
    """
    target = Path(path)
    if unchecked_ops:
        model = onnx.load(str(target), load_external_data=False)
        for node in model.graph.node:
            if node.domain in ("", "ai.onnx") and node.op_type in unchecked_ops:
                node.domain = UNCHECKED_DOMAIN
        model.opset_import.append(onnx.helper.make_opsetid(UNCHECKED_DOMAIN, 1))
        target = target.with_name(f".{target.stem}.checked.onnx")
        onnx.save(model, str(target))
    try:
        onnx.checker.check_model(str(target), full_check=True)
    except Exception as exc:  # noqa: BLE001 - checker and shape inference raise different types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(f"{path} fails the ONNX checker: {first_line}") from exc
    finally:
        if target != Path(path):
            target.unlink(missing_ok=True)
