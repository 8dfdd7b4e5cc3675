"""Evaluate small constant expressions statically, e.g. an attention scale `1 / sqrt(Shape(q)[-1])`.

Supports the ops exporters use to compute scales and shape scalars. `Shape(x)` resolves from static shapes; an
unknown dimension makes the whole expression unknown (None), never a guess.
"""

from __future__ import annotations

import numpy as np

from tqexport.graph.index import GraphIndex, attribute

_MAX_DEPTH = 24


def _ints(value: object) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def fold_partial(index: GraphIndex, name: str) -> list[int | None] | None:
    """A 1-D integer tensor (a shape) whose known entries are ints and unknown ones None."""
    try:
        value = _fold(index, name, 1)
    except (TypeError, ValueError, IndexError):
        return None
    if value is None:
        return None
    flat = np.asarray(value).reshape(-1)
    return [None if v is None else int(v) for v in flat]


def fold_constant(index: GraphIndex, name: str, depth: int = 0) -> np.ndarray | None:
    """The value of tensor `name` when it is computable without graph inputs; None otherwise."""
    try:
        value = _fold(index, name, depth)
    except (TypeError, ValueError, IndexError):
        return None
    if value is not None:
        value = np.asarray(value)
    if value is not None and value.dtype == object:
        if any(v is None for v in value.reshape(-1)):
            return None if depth == 0 else value
        return value.astype(np.int64) if depth == 0 else value
    return value


def _fold(index: GraphIndex, name: str, depth: int) -> np.ndarray | None:
    value = index.constant(name)
    if value is not None or depth > _MAX_DEPTH:
        return value
    node = index.producer.get(name)
    if node is None:
        return None
    op = node.op_type

    def arg(slot: int) -> np.ndarray | None:
        if slot >= len(node.input) or not node.input[slot]:
            return None
        return fold_constant(index, node.input[slot], depth + 1)

    if op == "Shape":
        shape = index.shape(node.input[0])
        if shape is None:
            return None
        start = int(attribute(node, "start", 0))
        end = attribute(node, "end", None)
        dims = shape[start:] if end is None else shape[start : int(end)]
        if any(not isinstance(d, int) for d in dims):
            # Unknown dims stay None in an object array: Gather/Slice may still pick a known one.
            return np.array([d if isinstance(d, int) else None for d in dims], dtype=object)
        return np.array(dims, dtype=np.int64)
    inputs = [arg(i) for i in range(len(node.input))]
    a = inputs[0] if inputs else None
    if op in (
        "Identity",
        "Cast",
        "Sqrt",
        "Reciprocal",
        "Neg",
        "Squeeze",
        "Unsqueeze",
        "Reshape",
        "Gather",
        "Slice",
        "Exp",
        "Log",
        "Flatten",
    ):
        if a is None:
            return None
    if op == "Identity":
        return a
    if op == "Cast":
        to = int(attribute(node, "to"))
        if a.dtype == object and any(v is None for v in a.reshape(-1)):
            return None
        return a.astype(_numpy_dtype(to))
    if op == "Sqrt":
        return np.sqrt(a)
    if op == "Reciprocal":
        return np.reciprocal(a.astype(np.float64)).astype(a.dtype)
    if op == "Neg":
        return -a
    if op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"):
        b = inputs[1] if len(inputs) > 1 else None
        if a is None or b is None:
            return None
        fn = {
            "Add": np.add,
            "Sub": np.subtract,
            "Mul": np.multiply,
            "Div": np.divide,
            "Pow": np.power,
            "Max": np.maximum,
            "Min": np.minimum,
        }[op]
        if a.dtype == object or b.dtype == object:  # partially known shapes: None stays None
            int_fn = {"Div": lambda x, y: x // y}.get(op, fn)
            both = np.frompyfunc(lambda x, y: None if x is None or y is None else int(int_fn(x, y)), 2, 1)
            return both(a, b)
        result = fn(a.astype(np.float64), b.astype(np.float64))
        if op == "Div" and np.issubdtype(a.dtype, np.integer):
            return (a // b).astype(a.dtype)
        return result.astype(a.dtype)
    if op == "Gather":
        indices = inputs[1] if len(inputs) > 1 else None
        if indices is None:
            return None
        return np.take(a, indices.astype(np.int64), axis=int(attribute(node, "axis", 0)))
    if op == "Slice":
        starts, ends = (inputs[1] if len(inputs) > 1 else None), (inputs[2] if len(inputs) > 2 else None)
        if starts is None or ends is None:
            return None
        axes = (
            _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(_ints(starts))))
        )
        steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(axes)
        slices = [slice(None)] * a.ndim
        for axis, start, end, step in zip(axes, _ints(starts), _ints(ends), steps, strict=True):
            slices[axis] = slice(start, end, step)
        return a[tuple(slices)]
    if op == "Squeeze":
        axes = attribute(node, "axes", None)
        if axes is None and len(inputs) > 1 and inputs[1] is not None:
            axes = _ints(inputs[1])
        return np.squeeze(a, axis=tuple(axes) if axes else None)
    if op == "Unsqueeze":
        axes = attribute(node, "axes", None)
        if axes is None and len(inputs) > 1 and inputs[1] is not None:
            axes = _ints(inputs[1])
        if axes is None:
            return None
        return np.expand_dims(a, tuple(axes))
    if op == "Reshape":
        shape = inputs[1] if len(inputs) > 1 else None
        return None if shape is None else a.reshape(_ints(shape))
    if op == "Concat":
        if any(x is None for x in inputs):
            return None
        return np.concatenate([np.atleast_1d(x) for x in inputs], axis=int(attribute(node, "axis", 0)))
    return None


def fold_scalar(index: GraphIndex, name: str) -> float | None:
    value = fold_constant(index, name)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(-1)[0])


def _numpy_dtype(onnx_type: int) -> np.dtype:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(onnx_type)
