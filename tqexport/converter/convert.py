"""`convert_model`: analyze a model, build each layer's codecs, run the pass pipeline, save and check.

Letters as in docs/format.md. Nothing is written when a layer cannot convert (unless `allow_partial`),
and weights
are never loaded except the K/V projection weights used to pick outlier channels for fractional bit widths.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tqexport.converter.cache_codec import build_cache_codec, derive_seed
from tqexport.converter.outliers import channel_scores
from tqexport.converter.presets import Width, part_split, resolve_preset, spec_parts, width_label
from tqexport.converter.report import analysis_report, layer_report
from tqexport.errors import NotConvertibleError, UnsupportedError, UsageError, ValidationError
from tqexport.graph.index import GraphIndex
from tqexport.graph.model_io import check_model_file, load_model, ops_without_schema, save_model
from tqexport.passes.buffer_lengths import check_buffer_inputs
from tqexport.passes.group_query_attention import unfuse_group_query_attention
from tqexport.passes.kv_write import CacheCodecTensors, WindowConfig
from tqexport.passes.layers import analyze
from tqexport.passes.mask_window import probe_windows
from tqexport.passes.match import CacheWrite, LayerMatch
from tqexport.passes.pipeline import LayerPlan, RewritePlan, run_pipeline

METADATA_KEY = "tqexport.config"
CACHE_MODES = {"concat": 0, "buffer": 1}  # the ops' cache_mode attribute (docs/format.md section 8)


@dataclass
class ConvertOptions:
    key_bits: Width = 4.0  # a bit width or a part spec ("16@5+48@2", presets.py)
    value_bits: Width = 4.0
    preset: str | None = None
    qjl: bool = False
    norm_correction: bool = False
    rotation: str = "hadamard"
    cache_mode: str = "concat"
    seed: int = 0
    sink_tokens: int = 0
    recent_window: int = 0
    window_dtype: str = "float16"
    calibration: str | None = None
    calibration_tokens: int = 256
    bits_budget: float | None = None
    budget_context: int = 2048
    target: str = "ort"
    allow_partial: bool = False
    check: bool = True

    def resolved_bits(self) -> tuple[Width, Width]:
        if self.preset:
            return resolve_preset(self.preset)
        return tuple(  # type: ignore[return-value]
            w if isinstance(w, str) and "@" in w else float(w) for w in (self.key_bits, self.value_bits)
        )

    def validate(self) -> None:
        if self.rotation not in ("hadamard", "dense"):
            raise UsageError(f"--rotation {self.rotation!r}: choose hadamard or dense")
        if self.target not in ("ort", "trt"):
            raise UsageError(f"--target {self.target!r}: choose ort or trt")
        if self.window_dtype not in ("float16", "model"):
            raise UsageError(f"--window-dtype {self.window_dtype!r}: choose float16 or model")
        if self.sink_tokens < 0 or self.recent_window < 0:
            raise UsageError("--sink-tokens and --recent-window must be >= 0")
        if self.cache_mode not in CACHE_MODES:
            raise UsageError(f"--cache-mode {self.cache_mode!r}: choose concat or buffer")
        for bits in self.resolved_bits():
            if isinstance(bits, str):
                part_split(bits, sum(size for size, _ in spec_parts(bits)))  # checks the spec's parts
            elif not 1 <= bits <= 8:
                raise UsageError(f"bit width {bits} outside 1..8")
        if self.bits_budget is not None:
            if not self.calibration:
                raise UsageError("--bits-budget needs --calibration TEXT (sensitivity is measured on it)")
            if self.qjl:
                raise UsageError("--bits-budget allocates MSE bit widths; it does not combine with --qjl")
            if self.budget_context <= 0 or self.calibration_tokens < 16:
                raise UsageError("--budget-context must be > 0 and --calibration-tokens >= 16")


@dataclass
class ConvertResult:
    output: Path | None
    counts: dict[str, int]
    layers: list[dict]
    converted_layers: list[int]
    skipped_layers: list[int]
    notes: list[str] = field(default_factory=list)


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="layer", leave=False)


@dataclass
class _CodecBuild:
    tensors: CacheCodecTensors
    record: dict


def _build_cache_codec(
    model_graph,
    index: GraphIndex,
    write: CacheWrite,
    bits: Width,
    options: ConvertOptions,
    calibration: dict | None,
    num_q_heads: int | None,
    notes: list[str],
) -> _CodecBuild:
    layer_cal = (calibration or {}).get(str(write.layer), {}).get(write.kind) if calibration else None
    built = build_cache_codec(
        bits,
        write.layer,
        write.kind,
        write.head_dim,
        write.num_kv_heads,
        qjl=options.qjl,
        norm_correction=options.norm_correction,
        rotation=options.rotation,
        base_seed=options.seed,
        scores_HD=None if layer_cal is None else np.asarray(layer_cal, dtype=np.float64),
        fallback_scores=lambda: channel_scores(index, write, num_q_heads),
    )
    codec, split, channels, source = built.codec, built.split, built.channels, built.channel_source
    use_qjl, seed = codec.config.qjl, codec.config.seed
    prefix = f"tq_layer{write.layer}_{write.kind}"
    model_graph.initializer.append(
        numpy_helper.from_array(codec.rotation.astype(np.float32), f"{prefix}_rotation")
    )
    model_graph.initializer.append(
        numpy_helper.from_array(codec.codebook.astype(np.float32), f"{prefix}_codebook")
    )
    qjl_name = ""
    if codec.qjl_matrix is not None:
        qjl_name = f"{prefix}_qjl_matrix"
        model_graph.initializer.append(numpy_helper.from_array(codec.qjl_matrix.astype(np.float32), qjl_name))
    tensors = CacheCodecTensors(
        rotation=f"{prefix}_rotation",
        codebook=f"{prefix}_codebook",
        qjl_matrix=qjl_name,
        bits=split.bits,
        part_sizes=split.part_sizes,
        qjl=int(use_qjl),
        norm_correction=int(options.norm_correction),
        rotation_kind=1 if options.rotation == "hadamard" else 0,
        row_bytes=codec.row_bytes,
    )
    record = {
        "width": width_label(bits),
        "bits": list(split.bits),
        "part_sizes": list(split.part_sizes),
        "qjl": int(use_qjl),
        "norm_correction": int(options.norm_correction),
        "rotation": options.rotation,
        "seed": seed,
        "row_bytes": codec.row_bytes,
        "bits_per_element": split.mean_bits,
        "outlier_channels": source,
    }
    if channels is not None:
        record["channels"] = channels
    return _CodecBuild(tensors, record)


def _plan_calibration(source: Path, options: ConvertOptions, log: Callable[[str], None]):
    """Outlier scores (and bits per layer under --bits-budget) from the --calibration file."""
    from tqexport.calibration.budget import StorageModel
    from tqexport.calibration.plan import plan_calibration
    from tqexport.calibration.sensitivity import SensitivitySetup

    def storage(head_dim: int, _: int) -> StorageModel:
        return StorageModel(
            head_dim=head_dim,
            context=options.budget_context,
            sink_tokens=options.sink_tokens,
            recent_window=options.recent_window,
        )

    setup = SensitivitySetup(
        norm_correction=options.norm_correction,
        sink_tokens=options.sink_tokens,
        recent_window=options.recent_window,
        base_seed=options.seed,
    )
    return plan_calibration(
        source,
        options.calibration,
        tokens=options.calibration_tokens,
        bits_budget=options.bits_budget,
        storage=storage,
        log=log,
        setup=setup,
    )


def inspect_model(path: str | os.PathLike[str]) -> dict:
    model = load_model(path)
    group_query_attention = unfuse_group_query_attention(model)
    index = GraphIndex.build(model, Path(path).parent)
    analysis = analyze(index, group_query_attention)
    probed = [layer for layer in analysis.convertible_layers if not layer.contrib]
    return analysis_report(analysis, probe_windows(model, index, probed))


def convert_model(
    path: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None,
    options: ConvertOptions,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> ConvertResult:
    options.validate()
    source = Path(path)
    if out_path is not None and Path(out_path).resolve() == source.resolve():
        raise UsageError(f"-o {out_path} would overwrite the input model; choose another output path")
    model = load_model(source)
    unchecked_ops = ops_without_schema(model)
    group_query_attention = unfuse_group_query_attention(model)
    index = GraphIndex.build(model, source.parent)
    analysis = analyze(index, group_query_attention)
    reports = [layer_report(layer) for layer in analysis.layers]
    if analysis.problem:
        raise NotConvertibleError(analysis.problem)
    failing = [layer for layer in analysis.layers if not layer.convertible]
    if failing and not options.allow_partial:
        first = failing[0]
        raise NotConvertibleError(
            f"{len(failing)} of {len(analysis.layers)} layers cannot convert; layer {first.layer}: "
            f"{first.reason()} (run `tqexport inspect`; --allow-partial converts the others)"
        )
    convertible: list[LayerMatch] = analysis.convertible_layers
    if not convertible:
        raise NotConvertibleError("no layer can convert; see `tqexport inspect`")
    if options.cache_mode == "buffer":
        check_buffer_inputs(model.graph)
    if options.sink_tokens + options.recent_window:
        for layer in convertible:
            q_type = layer.attention.q_elem_type
            if q_type and q_type != layer.key.elem_type:
                raise UnsupportedError(
                    f"layer {layer.layer}: q is {onnx.TensorProto.DataType.Name(q_type)} but the cache is "
                    f"{onnx.TensorProto.DataType.Name(layer.key.elem_type)}; TQAttention windows take q's "
                    "dtype (format.md 8.2), so --sink-tokens/--recent-window need them equal"
                )
    key_bits, value_bits = options.resolved_bits()
    notes: list[str] = []
    calibration, layer_bits, allocation = None, {}, None
    if options.calibration:
        planned = _plan_calibration(source, options, log)
        calibration, layer_bits, allocation = planned.scores, planned.layer_bits or {}, planned.allocation
        notes.extend(planned.notes)
    plans, config_layers = [], {}
    for layer in _progress(convertible, progress and len(convertible) > 4, "codecs"):
        layer_key_bits, layer_value_bits = layer_bits.get(layer.layer, (key_bits, value_bits))
        key = _build_cache_codec(
            model.graph,
            index,
            layer.key,
            layer_key_bits,
            options,
            calibration,
            layer.attention.num_q_heads,
            notes,
        )
        value = _build_cache_codec(
            model.graph,
            index,
            layer.value,
            layer_value_bits,
            options,
            calibration,
            layer.attention.num_q_heads,
            notes,
        )
        plans.append(LayerPlan(layer, key.tensors, value.tensors))
        config_layers[str(layer.layer)] = {
            "key": key.record,
            "value": value.record,
            "attention_form": layer.attention.form,
        }
    sources = {rec[kind]["outlier_channels"] for rec in config_layers.values() for kind in ("key", "value")}
    if any(s.startswith("projection") for s in sources):
        notes.append("outlier channels chosen from the k_proj/v_proj weight column norms (no calibration)")
    if any(s.startswith("none") for s in sources):
        notes.append("outlier split without calibration or findable projection weights: first channels used")
    window = WindowConfig(
        cache_mode=CACHE_MODES[options.cache_mode],
        sink_tokens=options.sink_tokens,
        recent_window=options.recent_window,
        elem_type=onnx.TensorProto.FLOAT16 if options.window_dtype == "float16" else 0,
    )
    plan = RewritePlan(plans, window, options.target)
    counts = run_pipeline(model, plan)
    metadata = {
        "format_version": 1,
        "cache_mode": options.cache_mode,
        "sink_tokens": options.sink_tokens,
        "recent_window": options.recent_window,
        "window_dtype": options.window_dtype,
        "target": options.target,
        "base_seed": options.seed,
        "calibration": options.calibration or "",
        "bit_allocation": allocation or {},
        "layers": config_layers,
        "unconverted_layers": [layer.layer for layer in failing],
    }
    helper.set_model_props(
        model,
        {
            **{p.key: p.value for p in model.metadata_props},
            METADATA_KEY: json.dumps(metadata, sort_keys=True),
        },
    )
    for report in reports:
        if report["converts"]:
            rec = config_layers[str(report["layer"])]
            log(
                f"layer {report['layer']:>3}: {report['attention_form']} -> TQQuantize x2 + TQAttention "
                f"(K {rec['key']['bits']}/{rec['key']['part_sizes']}, V {rec['value']['bits']}/"
                f"{rec['value']['part_sizes']}, scale={report['scale']:.6g}, softcap={report['softcap']:g})"
            )
        else:
            log(f"layer {report['layer']:>3}: left in full precision: {report.get('reason', '?')}")
    if unchecked_ops and options.check:
        notes.append(
            f"ONNX has no schema for {', '.join(sorted(unchecked_ops))} (default-domain ONNX Runtime ops "
            "of the original); the checker's full check covers every other node"
        )
    for note in notes:
        log(f"note: {note}")
    result = ConvertResult(
        None, counts, reports, [p.match.layer for p in plans], [f.layer for f in failing], notes
    )
    if out_path is None:
        return result
    written = save_model(model, out_path, source.parent)
    if options.check:
        try:
            check_model_file(written, unchecked_ops)
        except ValidationError:
            written.unlink(missing_ok=True)
            raise
    _copy_model_folder_files(source.parent, written.parent)
    result.output = written
    return result


# Files a runtime reads from a model's folder (tokenizer, configs); copied beside the converted model.
MODEL_FOLDER_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def _copy_model_folder_files(source_dir: Path, out_dir: Path) -> None:
    if source_dir.resolve() == out_dir.resolve():
        return
    for name in MODEL_FOLDER_FILES:
        if (source_dir / name).is_file() and not (out_dir / name).exists():
            shutil.copyfile(source_dir / name, out_dir / name)


__all__ = ["ConvertOptions", "ConvertResult", "asdict", "convert_model", "derive_seed", "inspect_model"]
