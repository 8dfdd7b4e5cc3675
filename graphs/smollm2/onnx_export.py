"""Export a Hugging Face causal-LM folder to ONNX with its KV cache, in optimum's decoder format.

optimum-onnx's `text-generation-with-past` task (TorchScript exporter, opset 18) is the format checked to
run in ORT CPU for SmolLM2 (see shared/notes/real-models.md). Its single `model.onnx` holds all weights
inline; we re-save it with the weights in one external file (`model.onnx.data`, a plain copy, never a link)
so graph passes can load the graph alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

EXPORT_TASK = "text-generation-with-past"
EXPORT_OPSET = 18
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# Files a runtime needs next to the graph to tokenize and to read the model shape.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def export_with_past(hf_folder: Path, out_dir: Path, scratch_dir: Path) -> Path:
    """Export `hf_folder` into `out_dir` (model.onnx, model.onnx.data, side files); return the graph path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optimum.exporters.onnx import main_export  # heavy import, only when exporting

    main_export(
        str(hf_folder),
        output=str(scratch_dir),
        task=EXPORT_TASK,
        opset=EXPORT_OPSET,
        device="cpu",
        do_validation=False,  # verify.py compares prefill and cached decode itself
        local_files_only=True,
        library_name="transformers",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(scratch_dir / MODEL_FILE))
    onnx.save_model(
        model,
        str(out_dir / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    del model
    (out_dir / DATA_FILE).chmod(0o644)  # onnx creates it 0600; other users and tools read it
    for name in SIDE_FILES:
        source = hf_folder / name
        if source.is_file():
            shutil.copyfile(source, out_dir / name)
    shutil.rmtree(scratch_dir)
    onnx.checker.check_model(str(out_dir / MODEL_FILE))
    return out_dir / MODEL_FILE
