"""Optimization-profile ranges for the dynamic dims of a converted model's graph inputs.

A TensorRT engine needs a [min, opt, max] range for every dynamic input dim. tqexport models name their dims
(`dim_param`); each name is classified once and every input dim that carries it gets the same range, so
dims TensorRT must keep equal (all `batch_size` dims, all `sequence_length` dims) stay equal:

| dim name contains           | meaning                      | min | opt            | max         |
|-----------------------------|------------------------------|-----|----------------|-------------|
| `batch`                     | B                            | 1   | max_batch      | max_batch   |
| `window`                    | Wd window rows (W = Ns + Rw) | 0   | W              | W           |
| `past`, `cache`, `compress` | Tc or past tokens            | 0   | max_context//2 | max_context |
| `total`                     | T (attention_mask)           | 1   | max_context//2 | max_context |
| `seq`                       | S, new tokens this step      | 1   | 1              | max_context |

Checked in that order (so `past_sequence_length` is a past dim). `--dim NAME=MIN:OPT:MAX` overrides or adds
any name; a dynamic dim without a name, or a name none of these rules knows, is an error that names the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqexport.errors import ModelLoadError, UsageError

CACHE_OPS = ("TQQuantize", "TQAttention")


@dataclass(frozen=True)
class DimRange:
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.opt <= self.max:
            raise UsageError(
                f"dim range {self.min}:{self.opt}:{self.max} must satisfy 0 <= min <= opt <= max"
            )


@dataclass
class ShapeProfile:
    """Per dynamic graph input: its min/opt/max shape. Static inputs are not listed."""

    shapes: dict[str, tuple[list[int], list[int], list[int]]] = field(default_factory=dict)
    dim_ranges: dict[str, DimRange] = field(default_factory=dict)

    def spec(self, which: int) -> str:
        """trtexec shape spec (`name:1x8x0x68,...`) of min (0), opt (1) or max (2)."""
        parts = (f"{name}:{'x'.join(str(d) for d in dims[which])}" for name, dims in self.shapes.items())
        return ",".join(parts)


def parse_dim_override(text: str) -> tuple[str, DimRange]:
    """`NAME=MIN:OPT:MAX` -> (NAME, DimRange)."""
    name, sep, values = text.partition("=")
    parts = values.split(":")
    if not sep or not name or len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--dim {text!r}: expected NAME=MIN:OPT:MAX with non-negative integers")
    lo, opt, hi = (int(p) for p in parts)
    return name, DimRange(lo, opt, hi)


def classify_dim(name: str, max_batch: int, max_context: int, window: int) -> DimRange | None:
    lowered = name.lower()
    half = max(1, max_context // 2)
    if "batch" in lowered:
        return DimRange(1, max_batch, max_batch)
    if "window" in lowered:
        return DimRange(0, window, window)
    if "past" in lowered or "cache" in lowered or "compress" in lowered:
        return DimRange(0, half, max_context)
    if "total" in lowered:
        return DimRange(1, half, max_context)
    if "seq" in lowered:
        return DimRange(1, 1, max_context)
    return None


def window_size(model) -> int:
    """W = sink_tokens + recent_window, the largest over the TQQuantize/TQAttention nodes (0 if none)."""
    best = 0
    for node in model.graph.node:
        if node.op_type not in CACHE_OPS:
            continue
        attrs = {a.name: a.i for a in node.attribute if a.name in ("sink_tokens", "recent_window")}
        best = max(best, attrs.get("sink_tokens", 0) + attrs.get("recent_window", 0))
    return best


def load_model_header(path: Path):
    """The model's graph without its external weights (cheap even for multi-GB models)."""
    import onnx

    if not path.is_file():
        raise ModelLoadError(f"model {path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelLoadError(f"model {path}: not a readable ONNX file ({exc})") from exc


def derive_profile(
    model, max_batch: int, max_context: int, overrides: dict[str, DimRange] | None = None
) -> ShapeProfile:
    """The optimization profile of every dynamic graph input of `model` (an onnx.ModelProto)."""
    if max_batch < 1 or max_context < 1:
        raise UsageError(f"--max-batch {max_batch} and --max-context {max_context} must be >= 1")
    overrides = dict(overrides or {})
    window = window_size(model)
    initializers = {init.name for init in model.graph.initializer}
    profile = ShapeProfile()
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        lo: list[int] = []
        opt: list[int] = []
        hi: list[int] = []
        dynamic = False
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                lo.append(dim.dim_value)
                opt.append(dim.dim_value)
                hi.append(dim.dim_value)
                continue
            dynamic = True
            name = dim.dim_param
            if not name:
                raise UsageError(
                    f"input {value.name!r} dim {axis} is dynamic without a name; name it in the model "
                    f"or give a static size"
                )
            rng = overrides.get(name) or classify_dim(name, max_batch, max_context, window)
            if rng is None:
                raise UsageError(
                    f"input {value.name!r} dim {axis} is named {name!r}, which no rule classifies; "
                    f"pass --dim {name}=MIN:OPT:MAX"
                )
            profile.dim_ranges[name] = rng
            lo.append(rng.min)
            opt.append(rng.opt)
            hi.append(rng.max)
        if dynamic:
            profile.shapes[value.name] = (lo, opt, hi)
    return profile
