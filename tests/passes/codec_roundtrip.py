"""The oracle for a converted graph: the original graph with every new K/V replaced by its codec round trip.

`RoundTripRunner(original, transforms)` runs the original model in onnx.reference with a `tqdiag::KVRoundTrip`
node between each layer's new K/V [B, Hkv, S, D] and its cache Concat (the matcher's `CacheWrite`). Each node
applies a NumPy transform to the vectors before they reach attention and the cache:

- `codec_roundtrips(converted)`: per cache, quantize with the converted model's own rotation, codebook and
  attributes (format.md section 5) and dequantize (section 6). The edited original then computes what the
  converted graph must compute (concat mode, no window, no QJL): the same model, every cached token replaced
  by what its compressed row reproduces. Any difference beyond float rounding is the rewrite's or the ops'.
- `relative_noise(...)`: add Gaussian noise whose relative size per vector is given, to compare the codec with
  plain noise of the same magnitude (bench/eight_bit_error_budget.py).

Letters as in docs/format.md: B batch, Hkv kv heads, S new tokens, D head dim.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from tests.passes.referee import _GraphRunner
from tqexport.codec.codec import Codec
from tqexport.codec.config import CodecConfig
from tqexport.graph.index import GraphIndex
from tqexport.graph.model_io import load_model
from tqexport.passes.layers import analyze

DOMAIN = "tqdiag"
Transform = Callable[[np.ndarray], np.ndarray]  # new K or V [B, Hkv, S, D] -> same shape
CacheKey = tuple[int, str]  # (layer, "key" | "value")


def cache_writes(model: onnx.ModelProto, base_dir: Path) -> dict[CacheKey, tuple[str, str]]:
    """(layer, kind) -> (past cache input, new K/V tensor) for each convertible layer of an original model."""
    analysis = analyze(GraphIndex.build(model, base_dir))
    writes = {}
    for layer in analysis.convertible_layers:
        for write in (layer.key, layer.value):
            assert write is not None
            writes[(layer.layer, write.kind)] = (write.past_input, write.new_BHkvSD)
    return writes


def _roundtrip_op(transforms: dict[str, Transform]) -> type[OpRun]:
    class KVRoundTrip(OpRun):
        op_domain = DOMAIN

        def _run(self, x, cache=None):  # noqa: ARG002 - attribute read from self
            name = self.cache.decode() if isinstance(self.cache, bytes) else str(self.cache)
            return (np.asarray(transforms[name](x)).astype(x.dtype),)

    return KVRoundTrip


class RoundTripRunner(_GraphRunner):
    """The original model in onnx.reference; `transforms` maps a past cache input name to its transform.

    Caches without a transform pass through unchanged (so {} runs the original model). `extra_outputs` names
    intermediate tensors to return beside the graph outputs.
    """

    def __init__(
        self, original: str | Path, transforms: dict[str, Transform], extra_outputs: Sequence[str] = ()
    ) -> None:
        path = Path(original)
        model = onnx.load(str(path))  # with external weights: onnx.reference reads them in memory
        edited = copy.deepcopy(model)
        new_by_past = {past: new for past, new in cache_writes(model, path.parent).values()}
        unknown = set(transforms) - set(new_by_past)
        if unknown:
            raise KeyError(f"no cache write reads {sorted(unknown)}")
        nodes = []
        for node in edited.graph.node:
            if node.op_type == "Concat" and node.input and node.input[0] in transforms:
                past = node.input[0]
                out = f"{new_by_past[past]}.{DOMAIN}"
                nodes.append(
                    helper.make_node("KVRoundTrip", [new_by_past[past]], [out], domain=DOMAIN, cache=past)
                )
                node.input[1] = out if node.input[1] == new_by_past[past] else node.input[1]
                assert node.input[1] == out, f"{node.name}: new K/V is not the Concat's second input"
            nodes.append(node)
        del edited.graph.node[:]
        edited.graph.node.extend(nodes)
        edited.opset_import.append(helper.make_opsetid(DOMAIN, 1))
        edited.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in extra_outputs)
        self.session = ReferenceEvaluator(edited, new_ops=[_roundtrip_op(transforms)])
        self.inputs = {v.name: v for v in edited.graph.input}
        self.output_names = [o.name for o in edited.graph.output]


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return list(value) if isinstance(value, list | tuple) else value
    return default


def converted_codecs(converted: str | Path) -> dict[str, Codec]:
    """Past cache input name -> that cache's codec (rotation, codebook, attributes) in a converted model."""
    model = load_model(Path(converted))
    config = json.loads({p.key: p.value for p in model.metadata_props}["tqexport.config"])
    if config.get("sink_tokens", 0) or config.get("recent_window", 0) or config.get("cache_mode") != "concat":
        raise ValueError("the round-trip oracle covers concat mode without a sink/recent window")
    inits = {i.name: i for i in model.graph.initializer}
    codecs: dict[str, Codec] = {}
    for node in model.graph.node:
        if node.domain != "tqexport" or node.op_type != "TQQuantize":
            continue
        if int(_attr(node, "qjl", 0)):
            raise ValueError(f"{node.name}: QJL keys have no dequantized vector (format.md section 6)")
        rotation = numpy_helper.to_array(inits[node.input[2]])
        codebook = numpy_helper.to_array(inits[node.input[3]])
        codec_config = CodecConfig(
            head_dim=rotation.shape[-1],
            part_sizes=tuple(_attr(node, "part_sizes", [])),
            bits=tuple(_attr(node, "bits", [])),
            norm_correction=bool(_attr(node, "norm_correction", 0)),
        )
        codecs[node.input[1]] = Codec(codec_config, rotation, codebook, None)
    return codecs


def codec_roundtrips(converted: str | Path) -> dict[str, Transform]:
    """Past cache input name -> quantize + dequantize with that cache's codec in the converted model."""
    return {past: _dequantized(codec) for past, codec in converted_codecs(converted).items()}


def _dequantized(codec: Codec) -> Transform:
    def roundtrip(x_BHSD: np.ndarray) -> np.ndarray:
        return codec.dequantize(codec.quantize(x_BHSD))

    return roundtrip


def relative_noise(relative_rms: float, rng: np.random.Generator) -> Transform:
    """x + e, e isotropic Gaussian, E||e||^2 = relative_rms^2 ||x||^2 per vector (as a rotated codec's)."""

    def noisy(x_BHSD: np.ndarray) -> np.ndarray:
        x = x_BHSD.astype(np.float64)
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
        return x + relative_rms * norms * rng.standard_normal(x.shape) / np.sqrt(x.shape[-1])

    return noisy
