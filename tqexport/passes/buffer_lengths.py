"""Buffer cache mode (docs/format.md section 7): `past_lengths` and the logical token counts, computed inside
the graph from the shapes it already has.

Letters as in docs/format.md: B batch, S new tokens, T total tokens (past + S).

The mask input `attention_mask` [B, T] covers the past and the new tokens, `input_ids` [B, S] the new ones, so
past = T - S, the same for every sequence (left padding stays the mask's business, as in concat mode):
- `tq_past_lengths` int64 [B]: past expanded over the batch (TQQuantize input 6, TQAttention input 11);
- `tq_past_tokens` int64 [1]: past, what Shape(past cache)[2] meant before the cache became a buffer;
- `tq_total_tokens` int64 [1]: T, what Shape(present cache)[2] and the K/V path's T meant.
"""

from __future__ import annotations

import onnx
from onnx import helper

from tqexport.errors import UnsupportedError

PAST_LENGTHS = "tq_past_lengths"
PAST_TOKENS = "tq_past_tokens"
TOTAL_TOKENS = "tq_total_tokens"
MASK_INPUT = "attention_mask"
IDS_INPUT = "input_ids"


def _rank(value: onnx.ValueInfoProto) -> int | None:
    tensor = value.type.tensor_type
    return len(tensor.shape.dim) if tensor.HasField("shape") else None


def check_buffer_inputs(graph: onnx.GraphProto) -> None:
    """Refuse buffer mode, with the reason, for a graph without `attention_mask` [B, T] and `input_ids`
    [B, S] inputs (past_lengths is computed from their shapes)."""
    inputs = {value.name: value for value in graph.input}
    for name, what in ((MASK_INPUT, "[B, past + S]"), (IDS_INPUT, "[B, S]")):
        if name not in inputs:
            raise UnsupportedError(
                f"--cache-mode buffer computes past_lengths = Shape({MASK_INPUT})[1] - Shape({IDS_INPUT})[1] "
                f"inside the graph, but the graph has no {name!r} input {what} (inputs: "
                f"{[value.name for value in graph.input]}); use --cache-mode concat"
            )
        rank = _rank(inputs[name])
        if rank not in (None, 2):
            raise UnsupportedError(
                f"--cache-mode buffer: input {name!r} has rank {rank}, expected 2 {what}; "
                "use --cache-mode concat"
            )


def _const(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant",
        [],
        [name],
        name=name,
        value=helper.make_tensor(name, onnx.TensorProto.INT64, [len(values)], values),
    )


def buffer_length_nodes() -> list[onnx.NodeProto]:
    """Nodes computing PAST_LENGTHS, PAST_TOKENS and TOTAL_TOKENS from the mask and ids shapes."""
    p = "tq_buffer"
    nodes = [
        _const(f"{p}_zero", [0]),
        _const(f"{p}_one", [1]),
        _const(f"{p}_two", [2]),
        helper.make_node("Shape", [MASK_INPUT], [f"{p}_mask_shape"], name=f"{p}_mask_shape"),
        helper.make_node("Shape", [IDS_INPUT], [f"{p}_ids_shape"], name=f"{p}_ids_shape"),
        helper.make_node(
            "Slice",
            [f"{p}_mask_shape", f"{p}_one", f"{p}_two"],
            [TOTAL_TOKENS],
            name=f"{p}_total_tokens",
        ),
        helper.make_node(
            "Slice", [f"{p}_ids_shape", f"{p}_one", f"{p}_two"], [f"{p}_new_tokens"], name=f"{p}_new_tokens"
        ),
        helper.make_node(
            "Slice", [f"{p}_ids_shape", f"{p}_zero", f"{p}_one"], [f"{p}_batch"], name=f"{p}_batch"
        ),
        helper.make_node("Sub", [TOTAL_TOKENS, f"{p}_new_tokens"], [PAST_TOKENS], name=f"{p}_past_tokens"),
        helper.make_node("Expand", [PAST_TOKENS, f"{p}_batch"], [PAST_LENGTHS], name=f"{p}_past_lengths"),
    ]
    return nodes
