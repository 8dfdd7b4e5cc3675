"""Export random-weight Llamas with optimum (TorchScript, opset 18) for the ORT CUDA end-to-end runs.

Runs here, in .venv-export (torch CPU, transformers 4.57, optimum-onnx: the toolchain checked on SmolLM2 in
graphs/smollm2/). The graphs travel to the device without their weights: bench/gpu_e2e/fill_weights.py writes
random weights into `model.onnx.data` there (the 64 MiB transfer limit holds no real weights).

    .venv-export/bin/python -m bench.gpu_e2e.export_models --model smol --out build/e2e/src/smol
    .venv-export/bin/python -m bench.gpu_e2e.export_models --model llama8b --layers 2 \
        --out build/e2e/src/llama8b

Models (Letters of docs/format.md: Hq query heads, Hkv kv heads, D head dim):
  smol     SmolLM2-135M's exact shapes: 30 layers, hidden 576, Hq 9, Hkv 3, D 64, vocab 49152, float32
  llama8b  Llama-3-8B's layer shapes: hidden 4096, Hq 32, Hkv 8, D 128, intermediate 14336, float16,
           few layers (--layers) and a small vocabulary
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import onnx
import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES: dict[str, dict[str, object]] = {
    "smol": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
    "llama8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=2,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=512,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
}
DTYPES = {"smol": torch.float32, "llama8b": torch.float16}


def build_hf_folder(model: str, layers: int | None, folder: Path) -> None:
    fields = dict(SHAPES[model])
    if layers:
        fields["num_hidden_layers"] = layers
    config = LlamaConfig(**fields, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    # Weights are replaced on the device (fill_weights.py); skip the slow init of large matrices here.
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    hf = hf.to_empty(device="cpu").to(DTYPES[model])
    with torch.no_grad():
        for _name, tensor in hf.named_parameters():
            tensor.normal_(0.0, 0.02) if tensor.dim() > 1 else tensor.fill_(1.0)
    hf.model.rotary_emb = type(hf.model.rotary_emb)(config=config)
    if config.tie_word_embeddings:
        hf.tie_weights()
    hf.eval().save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(SHAPES), required=True)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optimum.exporters.onnx import main_export

    from graphs.smollm2.onnx_export import DATA_FILE, EXPORT_OPSET, EXPORT_TASK, MODEL_FILE

    hf_dir, scratch = args.out / "hf", args.out / "scratch"
    build_hf_folder(args.model, args.layers, hf_dir)
    main_export(
        str(hf_dir),
        output=str(scratch),
        task=EXPORT_TASK,
        opset=EXPORT_OPSET,
        device="cpu",
        dtype="fp16" if DTYPES[args.model] == torch.float16 else "fp32",
        do_validation=False,
        local_files_only=True,
        library_name="transformers",
    )
    graph = onnx.load(str(scratch / MODEL_FILE))
    onnx.save_model(
        graph,
        str(args.out / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    shutil.copyfile(hf_dir / "config.json", args.out / "config.json")
    shutil.rmtree(scratch)
    print(f"exported {args.model} -> {args.out / 'model.onnx'}")


if __name__ == "__main__":
    main()
