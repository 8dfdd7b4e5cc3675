"""Export with the onnxruntime-genai model builder (GroupQueryAttention, com.microsoft domain).

The builder needs transformers 5, so it runs in `.venv-genai` (scripts/setup_genai.sh) as a
subprocess on a saved Hugging Face folder (config.json, model.safetensors, tokenizer.json).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from graphs.tiny_models import save_model_dir
from graphs.tiny_tokenizer import save_tiny_tokenizer

REPO = Path(__file__).resolve().parent.parent
GENAI_PYTHON = REPO / ".venv-genai" / "bin" / "python"
KEEP = ("model.onnx", "model.onnx.data", "genai_config.json")


class GenaiUnavailable(RuntimeError):
    pass


def export_genai(arch: str, out_dir: Path, timeout_s: int = 600) -> None:
    if not GENAI_PYTHON.exists():
        raise GenaiUnavailable(f"{GENAI_PYTHON} missing: run scripts/setup_genai.sh")
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir, onnx_dir = Path(tmp) / "hf", Path(tmp) / "onnx"
        save_model_dir(arch, hf_dir)
        save_tiny_tokenizer(hf_dir)
        cmd = [
            str(GENAI_PYTHON),
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf_dir),
            "-o",
            str(onnx_dir),
            "-p",
            "fp32",
            "-e",
            "cpu",
            "-c",
            str(Path(tmp) / "cache"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tmp)
        if proc.returncode != 0 or not (onnx_dir / "model.onnx").exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError("genai builder failed: " + " | ".join(tail))
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in KEEP:
            if (onnx_dir / name).exists():
                shutil.copy2(onnx_dir / name, out_dir / name)
