"""The one replace-subgraph recipe, and the graph hygiene that ends every rewrite.

Recipe: new nodes *take over* the names of the tensors at the subgraph's output boundary (their old producers
are removed), then `cleanup` drops whatever no longer feeds a graph output and `toposort` restores order.
Consumers of the boundary tensors therefore need no rewiring, and graph output names never change.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attribute.graphs)
    return graphs


def outer_scope_names(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads but does not define: its implicit inputs from the enclosing scope."""
    defined = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used |= node_input_names(node)
        defined |= {name for name in node.output if name}
    used |= {value.name for value in graph.output}
    return used - defined


def node_input_names(node: onnx.NodeProto) -> set[str]:
    """Explicit inputs plus the outer-scope names read inside the node's subgraphs (If/Loop/Scan)."""
    names = {name for name in node.input if name}
    for subgraph in _subgraphs(node):
        names |= outer_scope_names(subgraph)
    return names


def replace_subgraph(graph: onnx.GraphProto, new_nodes: Iterable[onnx.NodeProto]) -> None:
    """Insert `new_nodes`; any existing producer of one of their outputs is removed (the boundary cut)."""
    new_nodes = list(new_nodes)
    taken_over = {name for node in new_nodes for name in node.output if name}
    kept = [node for node in graph.node if not (set(node.output) & taken_over)]
    del graph.node[:]
    graph.node.extend(kept)
    graph.node.extend(new_nodes)
    stale = [value for value in graph.value_info if value.name in taken_over]
    for value in stale:
        graph.value_info.remove(value)


def cleanup(graph: onnx.GraphProto, keep_inputs: bool = True) -> int:
    """Remove nodes (and then initializers and value_info) that no longer feed a graph output. Returns
    nodes removed."""
    producer = {name: node for node in graph.node for name in node.output if name}
    needed: set[str] = set()
    live_ids: set[int] = set()
    stack = [value.name for value in graph.output]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in live_ids:
            live_ids.add(id(node))
            stack.extend(node_input_names(node))
    live = [node for node in graph.node if id(node) in live_ids]
    removed = len(graph.node) - len(live)
    del graph.node[:]
    graph.node.extend(live)
    unused_initializers = [tensor for tensor in graph.initializer if tensor.name not in needed]
    for tensor in unused_initializers:
        graph.initializer.remove(tensor)
    if not keep_inputs:
        for value in [value for value in graph.input if value.name not in needed]:
            graph.input.remove(value)
    produced = {name for node in graph.node for name in node.output}
    for value in [value for value in graph.value_info if value.name not in produced]:
        graph.value_info.remove(value)
    return removed


def toposort(graph: onnx.GraphProto, outer_names: Iterable[str] = ()) -> None:
    """Order nodes so every input is defined before use (stable: keeps the original order where it can)."""
    available = set(outer_names) | {value.name for value in graph.input}
    available |= {tensor.name for tensor in graph.initializer}
    available.add("")
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progressed = False
        still: list[onnx.NodeProto] = []
        for node in pending:
            needs = node_input_names(node)
            if needs <= available:
                ordered.append(node)
                available |= set(node.output)
                progressed = True
            else:
                still.append(node)
        if not progressed:
            missing = sorted(set().union(*(node_input_names(n) for n in still)) - available)[:5]
            raise ValueError(
                f"graph has a cycle or undefined inputs {missing} at node {still[0].op_type} "
                f"{still[0].name!r}"
            )
        pending = still
    del graph.node[:]
    graph.node.extend(ordered)
