"""Export a tiny model with torch.onnx: the dynamo exporter (opset 18 / 23) and the legacy TorchScript one.

Both go through graphs.flat_cache.FlatCacheLM, so the graph's inputs are
`input_ids, attention_mask, position_ids, past_key_values.{i}.key|value` and its outputs
`logits, present.{i}.key|value`. Example inputs use batch 2, 3 new tokens and 4 past tokens so
no dimension is specialised to 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graphs.flat_cache import FlatCacheLM, cache_input_names, cache_output_names
from graphs.tiny_models import ARCHS, HEAD_DIM, NUM_LAYERS, VOCAB
from graphs.traceable_masks import broadcast_masks

EXAMPLE_BATCH = 2
EXAMPLE_NEW = 3
EXAMPLE_PAST = 4


def example_inputs(arch: str) -> tuple[torch.Tensor, ...]:
    kv_heads = ARCHS[arch].num_kv_heads
    total = EXAMPLE_PAST + EXAMPLE_NEW
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, VOCAB, (EXAMPLE_BATCH, EXAMPLE_NEW), generator=g)
    attention_mask = torch.ones(EXAMPLE_BATCH, total, dtype=torch.int64)
    position_ids = torch.arange(EXAMPLE_PAST, total).unsqueeze(0).repeat(EXAMPLE_BATCH, 1)
    past = [
        torch.randn(EXAMPLE_BATCH, kv_heads, EXAMPLE_PAST, HEAD_DIM, generator=g)
        for _ in range(2 * NUM_LAYERS)
    ]
    return (input_ids, attention_mask, position_ids, *past)


def io_names() -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "position_ids", *cache_input_names(NUM_LAYERS)]
    outputs = ["logits", *cache_output_names(NUM_LAYERS)]
    return inputs, outputs


def export_dynamo(model: torch.nn.Module, arch: str, out_path: Path, opset: int) -> None:
    """torch.onnx.export(dynamo=True); weights go to `<name>.data` beside the graph."""
    from torch.export import Dim

    wrapper = FlatCacheLM(model).eval()
    args = example_inputs(arch)
    batch, seq, past_len, total = Dim.DYNAMIC, Dim.DYNAMIC, Dim.DYNAMIC, Dim.DYNAMIC
    past_shapes = tuple({0: batch, 2: past_len} for _ in range(2 * NUM_LAYERS))
    # *past is one varargs element for torch.export, so its shapes nest in one tuple.
    dynamic_shapes: Any = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, past_shapes)
    input_names, output_names = io_names()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            input_names=input_names,
            output_names=output_names,
            optimize=True,
        )
    program.save(str(out_path), external_data=True)


def export_torchscript(model: torch.nn.Module, arch: str, out_path: Path, opset: int = 17) -> None:
    """The legacy exporter (dynamo=False): traces the wrapper, one self-contained file."""
    wrapper = FlatCacheLM(model).eval()
    args = example_inputs(arch)
    input_names, output_names = io_names()
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "total_seq"},
        "position_ids": {0: "batch", 1: "seq"},
    }
    axes.update({n: {0: "batch", 2: "past_seq"} for n in cache_input_names(NUM_LAYERS)})
    axes.update({n: {0: "batch", 2: "total_seq"} for n in cache_output_names(NUM_LAYERS)})
    axes["logits"] = {0: "batch", 1: "seq"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), broadcast_masks():
        torch.onnx.export(
            wrapper,
            args,
            str(out_path),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
        )
