"""Constant-Hadamard promises of the TQ ops (docs/format.md section 8.3): written, and verified, here.

A TensorRT plugin cannot see its inputs' values, so it cannot tell a Sylvester-Hadamard rotation (which its
kernels apply by butterflies, with no per-call check) from any other. The converter knows: it wrote the
rotation initializers. `set_promises` marks each TQ node whose rotation (and, for TQQuantize, codebook)
inputs are initializers that pass the same bit-exact test the kernels and the ORT ops apply;
`broken_promises` re-checks a finished file (what `tqexport build` runs before it builds an engine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from tqexport.graph.index import GraphIndex, attribute
from tqexport.passes.kv_write import TQ_DOMAIN

# Largest rotation read to check a promise: Hr x D x D float32 with Hr <= 64, D <= 256.
MAX_ROTATION_ELEMENTS = 64 * 256 * 256


@dataclass(frozen=True)
class Promise:
    """An attribute that promises `rotation_slot` is a constant Sylvester-Hadamard rotation and every slot of
    `constant_slots` a constant."""

    attribute: str
    rotation_slot: int
    constant_slots: tuple[int, ...]


PROMISES: dict[str, tuple[Promise, ...]] = {
    "TQQuantize": (Promise("constant_hadamard", 2, (2, 3)),),
    "TQAttention": (
        Promise("k_constant_hadamard", 4, (4,)),
        Promise("v_constant_hadamard", 6, (6,)),
    ),
}


def is_sylvester_hadamard(rotation: np.ndarray) -> bool:
    """Every head of a float32 [Hr, D, D] (or [D, D]) rotation is c * H_D * diag(s) bit for bit.

    The kernels' test (plugins/kernels/rotation_structure.cc, tq_device.cuh): D a power of two, c = |R[0][0]|
    finite and > 0, |R[0][j]| == c, and R[i][j] == (-1)^popcount(i & j) * R[0][j] as float32 bit patterns.
    """
    r = np.asarray(rotation)
    if r.dtype != np.float32 or r.ndim not in (2, 3):
        return False
    r = r.reshape((-1, *r.shape[-2:]))
    d = r.shape[-1]
    if r.shape[-2] != d or d < 1 or d & (d - 1):
        return False
    idx = np.arange(d, dtype=np.uint32)
    parity = idx[:, None] & idx[None, :]
    for shift in (16, 8, 4, 2, 1):
        parity = parity ^ (parity >> np.uint32(shift))
    parity &= np.uint32(1)
    bits = r.view(np.uint32)
    row0 = bits[:, :1, :]
    c = np.abs(r[:, 0, 0])
    if not np.all(np.isfinite(c) & (c > 0)):
        return False
    if not np.all(np.abs(r[:, 0, :]) == c[:, None]):
        return False
    want = row0 ^ (parity[None, :, :] << np.uint32(31))
    return bool(np.array_equal(bits, want))


def _slot_problem(index: GraphIndex, node: onnx.NodeProto, promise: Promise) -> str | None:
    """None when `promise` holds for `node`, else what fails (one clause)."""
    inputs = list(node.input)
    for slot in promise.constant_slots:
        name = inputs[slot] if slot < len(inputs) else ""
        if not name or name not in index.initializers or name in index.inputs:
            return f"input {slot} {name!r} is not an initializer"
    name = inputs[promise.rotation_slot]
    rotation = index.constant(name, max_elements=MAX_ROTATION_ELEMENTS)
    if rotation is None:
        return f"input {promise.rotation_slot} {name!r} is too large to check"
    if not is_sylvester_hadamard(rotation):
        return f"input {promise.rotation_slot} {name!r} is not Sylvester-Hadamard-structured bit for bit"
    return None


def set_promises(graph: onnx.GraphProto, index: GraphIndex | None = None) -> int:
    """Sets every promise attribute of the TQ nodes: 1 where it holds, 0 elsewhere. Returns how many are 1."""
    index = index or GraphIndex(graph)
    count = 0
    for node in graph.node:
        if node.domain != TQ_DOMAIN:
            continue
        for promise in PROMISES.get(node.op_type, ()):
            holds = _slot_problem(index, node, promise) is None
            kept = [a for a in node.attribute if a.name != promise.attribute]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute(promise.attribute, int(holds))])
            count += int(holds)
    return count


def broken_promises(graph: onnx.GraphProto, index: GraphIndex | None = None) -> list[str]:
    """One line per promise attribute that is set to 1 but does not hold (or is not 0/1), naming the node."""
    index = index or GraphIndex(graph)
    problems = []
    for node in graph.node:
        if node.domain != TQ_DOMAIN and node.op_type not in PROMISES:
            continue
        for promise in PROMISES.get(node.op_type, ()):
            value = attribute(node, promise.attribute, 0)
            if value == 0:
                continue
            if value != 1:
                label = f"{node.op_type} {node.name!r}"
                problems.append(f"{label}: {promise.attribute} = {value!r} (must be 0 or 1)")
                continue
            problem = _slot_problem(index, node, promise)
            if problem is not None:
                problems.append(f"{node.op_type} {node.name!r}: {promise.attribute} = 1 but {problem}")
    return problems
