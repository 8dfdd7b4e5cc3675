"""Negative fixtures for the pass's refusal tests: graphs it must leave alone.

- `negative/llama_no_cache`: the tiny Llama exported by optimum with task `text-generation`
  (use_cache=False): attention is there, a KV cache is not.
- `negative/bert_encoder`: a tiny BERT encoder (optimum `feature-extraction`): bidirectional
  self-attention, no cache, not a decoder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from graphs.graph_facts import read_facts
from graphs.tiny_models import HIDDEN, NUM_HEADS, NUM_LAYERS, SEED, VOCAB, build_model


def _optimum(model: torch.nn.Module, task: str, out_dir: Path) -> None:
    from optimum.exporters.onnx import onnx_export_from_model

    shutil.rmtree(out_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_export_from_model(model, output=tmp, task=task, do_validation=False, device="cpu")
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(Path(tmp).iterdir()):
            if f.name.startswith("model.onnx"):
                shutil.copy2(f, out_dir / f.name)
    (out_dir / "config.json").write_text(model.config.to_json_string(use_diff=False))


def _tiny_bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
    )
    torch.manual_seed(SEED)
    return BertModel(config, add_pooling_layer=False).eval()


def build_negatives(root: Path) -> list[dict[str, Any]]:
    built = []
    for name, model, task, why in [
        ("llama_no_cache", build_model("llama"), "text-generation", "decoder exported with use_cache=False"),
        ("bert_encoder", _tiny_bert(), "feature-extraction", "encoder-only, bidirectional attention"),
    ]:
        out = root / name
        entry: dict[str, Any] = {
            "name": name,
            "path": str(out.relative_to(root.parent.parent.parent)),
            "why_refused": why,
            "ok": False,
            "reason": "",
        }
        try:
            _optimum(model, task, out)
            facts = read_facts(out / "model.onnx")
            entry.update(
                ok=True,
                inputs=facts.inputs,
                outputs=facts.outputs,
                softmax_count=facts.op_counts.get("Softmax", 0),
            )
        except Exception as exc:  # noqa: BLE001 - recorded
            entry["reason"] = str(exc).splitlines()[0][:300]
        print(f"negative/{name:24s} {'ok' if entry['ok'] else 'FAIL'} {entry['reason']}", flush=True)
        built.append(entry)
    return built
