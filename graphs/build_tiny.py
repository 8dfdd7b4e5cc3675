"""Regenerate graphs/fixtures/: every (exporter x arch) export of the tiny models, each checked
against torch in ORT CPU, plus negative fixtures; writes graphs/fixtures/manifest.json, which
graphs/catalog.py reads.

    bash scripts/setup_export.sh && bash scripts/setup_genai.sh
    .venv-export/bin/python -m graphs.build_tiny            # the committed subset
    .venv-export/bin/python -m graphs.build_tiny --all      # every pair (over the size budget)
    .venv-export/bin/python -m graphs.build_tiny --only optimum/llama dynamo_opset23/gemma2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from graphs import export_genai, export_optimum, export_torch
from graphs.check_fixture import PAD_ROW1, compare
from graphs.graph_facts import read_facts, strip_debug_metadata
from graphs.matrix_report import render
from graphs.tiny_models import ARCHS, HEAD_DIM, NUM_HEADS, NUM_LAYERS, build_model

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "graphs" / "fixtures"
SCRATCH = REPO / "out" / "fixtures"  # pairs outside COMMITTED land here (git-ignored)
TOLERANCE = 1e-4
GENAI_ARCHS = ("llama", "qwen2", "mistral", "phi3", "gemma2")  # 0.18 builders/ has no gpt2, neox, opt
NO_BUILDER = "no builder for this architecture (onnxruntime-genai 0.18 builders/ has none)"


@dataclass
class Exporter:
    name: str
    attn_implementation: str
    run: Callable[[str, Path], None]  # (arch, out_dir) -> writes out_dir/model.onnx
    strips_metadata: bool = False
    archs: tuple[str, ...] = tuple(ARCHS)


def _optimum(arch: str, out: Path) -> None:
    export_optimum.export_optimum(build_model(arch, "sdpa"), out)


def _dynamo(impl: str, opset: int) -> Callable[[str, Path], None]:
    def run(arch: str, out: Path) -> None:
        export_torch.export_dynamo(build_model(arch, impl), arch, out / "model.onnx", opset)

    return run


def _torchscript(arch: str, out: Path) -> None:
    export_torch.export_torchscript(build_model(arch, "sdpa"), arch, out / "model.onnx")


EXPORTERS: dict[str, Exporter] = {
    e.name: e
    for e in [
        Exporter("optimum", "sdpa", _optimum),
        Exporter("dynamo_sdpa_opset18", "sdpa", _dynamo("sdpa", 18), strips_metadata=True),
        Exporter("dynamo_eager_opset18", "eager", _dynamo("eager", 18), strips_metadata=True),
        Exporter("dynamo_sdpa_opset23", "sdpa", _dynamo("sdpa", 23), strips_metadata=True),
        Exporter("torchscript", "sdpa", _torchscript),
        Exporter("genai", "builder", export_genai.export_genai, archs=GENAI_ARCHS),
    ]
}

# Which pairs are committed: the full matrix would be ~45 MB; the brief's budget is ~25 MB.
# Every pair is still exported and checked by --all and recorded in the README matrix.
COMMITTED: dict[str, tuple[str, ...]] = {
    "optimum": tuple(ARCHS),
    "dynamo_sdpa_opset18": ("llama", "qwen2", "phi3", "gemma2", "gpt2", "gpt_neox", "opt"),
    "dynamo_eager_opset18": ("llama", "qwen2", "gpt2"),
    "dynamo_sdpa_opset23": ("llama", "phi3", "gemma2", "gpt2"),
    "torchscript": ("llama", "gpt2", "gpt_neox"),
    "genai": ("llama", "qwen2", "phi3", "gemma2"),
}


@dataclass
class Record:
    exporter: str
    arch: str
    ok: bool
    path: str = ""
    reason: str = ""
    max_abs_diff: float | None = None
    max_abs_diff_no_pad: float | None = None
    max_abs_logit: float | None = None
    left_padding_ok: bool | None = None
    shared_buffer_len: int | None = None
    opsets: dict[str, int] = field(default_factory=dict)
    cache_inputs: list[list[str]] = field(default_factory=list)
    cache_outputs: list[list[str]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    cache_dtype: str = ""
    key_path: list[str] = field(default_factory=list)
    value_path: list[str] = field(default_factory=list)
    size_bytes: int = 0
    export_seconds: float = 0.0


def build_one(exporter: Exporter, arch: str, out_dir: Path) -> Record:
    rel = out_dir.relative_to(REPO)
    shutil.rmtree(out_dir, ignore_errors=True)
    t0 = time.time()
    try:
        exporter.run(arch, out_dir)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded with its reason
        shutil.rmtree(out_dir, ignore_errors=True)
        last = traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines()[0]
        return Record(exporter.name, arch, ok=False, reason=f"export failed: {last[:300]}")
    seconds = time.time() - t0
    model_path = out_dir / "model.onnx"
    if exporter.strips_metadata:
        strip_debug_metadata(model_path)
    model = build_model(arch, exporter.attn_implementation if exporter.name != "genai" else "sdpa")
    (out_dir / "config.json").write_text(model.config.to_json_string(use_diff=False))
    facts = read_facts(model_path)
    record = Record(
        exporter.name,
        arch,
        ok=False,
        path=str(rel / "model.onnx"),
        opsets=facts.opsets,
        cache_inputs=[list(p) for p in facts.cache_inputs],
        cache_outputs=[list(p) for p in facts.cache_outputs],
        inputs=facts.inputs,
        cache_dtype=facts.cache_dtype,
        key_path=facts.key_path,
        value_path=facts.value_path,
        size_bytes=sum(f.stat().st_size for f in out_dir.iterdir()),
        export_seconds=round(seconds, 1),
    )
    if len(facts.cache_inputs) != NUM_LAYERS or len(facts.cache_outputs) != NUM_LAYERS:
        record.reason = (
            f"graph has {len(facts.cache_inputs)} past / {len(facts.cache_outputs)} present layers"
        )
        return record
    kv = ARCHS[arch].num_kv_heads
    record.shared_buffer_len = _shared_buffer_len(out_dir)
    buffer_len = record.shared_buffer_len
    try:
        plain = compare(model, model_path, kv, HEAD_DIM, pad_row1=0, buffer_len=buffer_len)
    except Exception as exc:  # noqa: BLE001
        record.reason = f"ORT run failed: {str(exc).splitlines()[0][:300]}"
        return record
    record.max_abs_diff_no_pad, record.max_abs_logit = plain.max_abs_diff, plain.max_abs_logit
    record.ok = plain.ok(TOLERANCE)
    if not record.ok:
        record.reason = f"logits differ from torch by {plain.max_abs_diff:.3g} without padding"
    try:
        padded = compare(
            model, model_path, kv, HEAD_DIM, pad_row1=PAD_ROW1, buffer_len=record.shared_buffer_len
        )
    except Exception as exc:  # noqa: BLE001
        record.left_padding_ok = False
        why = str(exc).splitlines()[0]
        why = why.split("Status Message: ")[-1][:200]
        record.reason = (record.reason + "; " if record.reason else "") + f"left padding: ORT error: {why}"
        return record
    record.max_abs_diff = padded.max_abs_diff
    record.left_padding_ok = padded.ok(TOLERANCE)
    if record.ok and not record.left_padding_ok:
        record.reason = (
            f"correct without padding; with left padding logits differ by {padded.max_abs_diff:.3g}"
        )
    return record


def _shared_buffer_len(out_dir: Path) -> int | None:
    """onnxruntime-genai graphs whose present aliases a preallocated past buffer (max_length)."""
    config = out_dir / "genai_config.json"
    if not config.exists():
        return None
    search = json.loads(config.read_text())["search"]
    return int(search["max_length"]) if search.get("past_present_share_buffer") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--all", action="store_true", help="every (exporter, arch) pair, not just COMMITTED")
    parser.add_argument("--only", nargs="*", default=None, help="exporter/arch pairs, or 'negatives'")
    parser.add_argument("--skip-negatives", action="store_true")
    args = parser.parse_args(argv)

    manifest_path = FIXTURES / "manifest.json"
    old = (
        json.loads(manifest_path.read_text()) if manifest_path.exists() else {"fixtures": [], "negatives": []}
    )
    records = {(r["exporter"], r["arch"]): r for r in old["fixtures"]}
    for exporter in EXPORTERS.values():
        for arch in ARCHS:
            key = f"{exporter.name}/{arch}"
            if args.only is not None and key not in args.only:
                continue
            if arch not in exporter.archs:
                records[(exporter.name, arch)] = asdict(
                    Record(exporter.name, arch, ok=False, reason=NO_BUILDER)
                )
                continue
            if not args.all and args.only is None and arch not in COMMITTED[exporter.name]:
                continue
            committed = arch in COMMITTED[exporter.name]
            root = FIXTURES if committed else SCRATCH
            rec = build_one(exporter, arch, root / exporter.name / arch)
            rec_dict = asdict(rec)
            rec_dict["committed"] = committed
            records[(exporter.name, arch)] = rec_dict
            status = "ok" if rec.ok else "FAIL"
            print(
                f"{key:32s} {status:4s} diff={rec.max_abs_diff} pad_ok={rec.left_padding_ok} {rec.reason}",
                flush=True,
            )
    negatives = old.get("negatives", [])
    if not args.skip_negatives and (args.only is None or "negatives" in args.only):
        from graphs.negatives import build_negatives

        negatives = build_negatives(FIXTURES / "negative")
    manifest = {
        "tolerance": TOLERANCE,
        "num_layers": NUM_LAYERS,
        "num_heads": NUM_HEADS,
        "head_dim": HEAD_DIM,
        "fixtures": sorted(records.values(), key=lambda r: (r["exporter"], r["arch"])),
        "negatives": negatives,
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    (FIXTURES / "MATRIX.md").write_text(render(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
