"""Export with optimum-onnx (`text-generation-with-past`), the exporter most deployments use.

optimum traces with the legacy TorchScript exporter under its own model patcher and writes
`model.onnx` with inputs `input_ids, attention_mask, [position_ids,] past_key_values.{i}.key|value`
and outputs `logits, present.{i}.key|value`.

We call `onnx_export_from_model` on the in-memory model rather than `main_export` on a folder:
`main_export` loads with the default attention (sdpa), and HF's sdpa path silently drops
Gemma2's attention-logit softcap (the ONNX then differs from eager HF by ~2e-3 in logits).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch


def export_optimum(model: torch.nn.Module, out_dir: Path) -> None:
    from optimum.exporters.onnx import onnx_export_from_model

    with tempfile.TemporaryDirectory() as tmp:
        onnx_export_from_model(
            model,
            output=tmp,
            task="text-generation-with-past",
            do_validation=False,
            device="cpu",
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(Path(tmp).iterdir()):
            if f.name.startswith("model.onnx"):
                shutil.copy2(f, out_dir / f.name)
