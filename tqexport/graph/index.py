"""`GraphIndex`: who produces and who consumes each tensor of one graph, plus static shapes and constants.

Built once per analysis; edits go through `tqexport.graph.edit` and a fresh index is built afterwards.
Constant values are read only when asked for (external initializers load from `base_dir` one at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from tqexport.graph.edit import node_input_names

Dim = int | str | None


@dataclass(frozen=True)
class Use:
    node: onnx.NodeProto
    index: int  # input slot; -1 for an implicit use inside a subgraph (If/Loop/Scan)


@dataclass
class GraphIndex:
    graph: onnx.GraphProto
    base_dir: Path = field(default_factory=Path)
    shapes: dict[str, list[Dim]] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[Use]] = {}
        for node in self.graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            explicit = set()
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append(Use(node, slot))
                    explicit.add(name)
            for name in node_input_names(node) - explicit:
                self.consumers.setdefault(name, []).append(Use(node, -1))
        self.initializers = {tensor.name: tensor for tensor in self.graph.initializer}
        self.inputs = {value.name: value for value in self.graph.input}
        self.outputs = {value.name: value for value in self.graph.output}
        for value in [*self.graph.input, *self.graph.output, *self.graph.value_info]:
            self._record_value_info(value)
        for tensor in self.graph.initializer:
            self.shapes.setdefault(tensor.name, list(tensor.dims))
            self.dtypes.setdefault(tensor.name, tensor.data_type)

    @classmethod
    def build(cls, model: onnx.ModelProto, base_dir: Path, infer_shapes: bool = True) -> GraphIndex:
        index = cls(model.graph, base_dir)
        if infer_shapes:
            try:
                inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
            except Exception:  # noqa: BLE001 - a graph shape inference cannot handle still gets matched
                inferred = None
            if inferred is not None:
                for value in [*inferred.graph.value_info, *inferred.graph.output]:
                    index._record_value_info(value, overwrite=True)
        return index

    def _record_value_info(self, value: onnx.ValueInfoProto, overwrite: bool = False) -> None:
        if not value.type.HasField("tensor_type"):
            return
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type and (overwrite or value.name not in self.dtypes):
            self.dtypes[value.name] = tensor_type.elem_type
        if tensor_type.HasField("shape"):
            dims: list[Dim] = []
            for dim in tensor_type.shape.dim:
                if dim.HasField("dim_value"):
                    dims.append(int(dim.dim_value))
                elif dim.HasField("dim_param"):
                    dims.append(dim.dim_param)
                else:
                    dims.append(None)
            if overwrite or value.name not in self.shapes:
                self.shapes[value.name] = dims

    # --- queries -----------------------------------------------------------------------------------------
    def uses(self, name: str) -> list[Use]:
        return self.consumers.get(name, [])

    def is_graph_output(self, name: str) -> bool:
        return name in self.outputs

    def shape(self, name: str) -> list[Dim] | None:
        return self.shapes.get(name)

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def static_dim(self, name: str, axis: int) -> int | None:
        shape = self.shapes.get(name)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        dim = shape[axis]
        return dim if isinstance(dim, int) else None

    def is_constant(self, name: str) -> bool:
        if name in self.initializers and name not in self.inputs:
            return True
        node = self.producer.get(name)
        return node is not None and node.op_type == "Constant"

    def constant(self, name: str, max_elements: int = 1 << 16) -> np.ndarray | None:
        """Value of an initializer or Constant output; None when not constant or larger than
        `max_elements`."""
        if name in self.initializers and name not in self.inputs:
            tensor = self.initializers[name]
            if int(np.prod(tensor.dims, dtype=np.int64)) > max_elements:
                return None
            return self.load_initializer(name)
        node = self.producer.get(name)
        if node is None or node.op_type != "Constant":
            return None
        for attribute in node.attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
            if attribute.name == "value_float":
                return np.array(attribute.f, dtype=np.float32)
            if attribute.name == "value_floats":
                return np.array(list(attribute.floats), dtype=np.float32)
            if attribute.name == "value_int":
                return np.array(attribute.i, dtype=np.int64)
            if attribute.name == "value_ints":
                return np.array(list(attribute.ints), dtype=np.int64)
        return None

    def load_initializer(self, name: str) -> np.ndarray:
        """Read one initializer, from external data when it lives there (the only way weights get loaded)."""
        tensor = self.initializers[name]
        if uses_external_data(tensor):
            return numpy_helper.to_array(tensor, base_dir=str(self.base_dir))
        return numpy_helper.to_array(tensor)


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def node_label(node: onnx.NodeProto) -> str:
    """How errors name a node: `Concat 'node_concat_3'` (or the first output when it is unnamed)."""
    name = node.name or (node.output[0] if node.output else "?")
    return f"{node.op_type} {name!r}"
