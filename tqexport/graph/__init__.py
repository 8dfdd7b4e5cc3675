"""Small IR helpers over `onnx.ModelProto` that touch only names, shapes and edges (weights stay external).

- `model_io`: load without external data, save next to (hard links of) the original data, run the checker;
- `index`: producer/consumer maps, constants and static shapes of one graph;
- `fold`: evaluate small scalar expressions (scale = 1/sqrt(Shape(q)[-1])) without running the model;
- `edit`: the one replace-subgraph recipe (take over the boundary outputs, cleanup, toposort).
"""

from tqexport.graph.edit import cleanup, node_input_names, replace_subgraph, toposort
from tqexport.graph.fold import fold_constant
from tqexport.graph.index import GraphIndex
from tqexport.graph.model_io import check_model_file, load_model, save_model

__all__ = [
    "GraphIndex",
    "check_model_file",
    "cleanup",
    "fold_constant",
    "load_model",
    "node_input_names",
    "replace_subgraph",
    "save_model",
    "toposort",
]
