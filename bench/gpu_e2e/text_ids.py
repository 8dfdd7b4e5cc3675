"""Token ids of real text for the real-weight CUDA-vs-CPU test (the device has no tokenizer).

Writes ids.npy, int64 [rows, tokens]: row r is `tokens` consecutive tokens of Emma (graphs.text.fetch)
starting at token r * stride, tokenized with the model's tokenizer.json.
tests/gpu/test_converted_model_cuda.py decodes these instead of random ids when the models folder holds them.

    .venv/bin/python -m bench.gpu_e2e.text_ids out/smollm2/tokenizer.json build/e2e-real/models/ids.npy
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def text_ids(tokenizer_json: Path, text: str, rows: int, tokens: int, stride: int) -> np.ndarray:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer_json)).encode(text).ids
    needed = (rows - 1) * stride + tokens
    if len(ids) < needed:
        raise ValueError(f"the text has {len(ids)} tokens, {needed} needed")
    return np.stack([np.asarray(ids[r * stride : r * stride + tokens], np.int64) for r in range(rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tokenizer", type=Path, help="tokenizer.json of the model")
    parser.add_argument("out", type=Path, help="ids.npy to write")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=104, help="prefill + decode steps of the test")
    parser.add_argument("--stride", type=int, default=5000)
    args = parser.parse_args(argv)
    from graphs.text.fetch import fetch

    source, path = fetch("emma")
    ids = text_ids(args.tokenizer, path.read_text(encoding="utf-8"), args.rows, args.tokens, args.stride)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, ids)
    print(f"text_ids: {args.out} {list(ids.shape)} from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
