"""`tqexport generate`: greedy decoding through a model's KV cache (original or converted).

    tqexport generate model.onnx --prompt TEXT | --ids 1,2,3 [--max-new-tokens N]

The prompt is prefilled in one run, then each new token is one cached step that feeds the present caches back
as past. Text needs a tokenizer next to the model (tokenizer.json, read with `tokenizers` or transformers);
without one, pass --ids and read ids back.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from tqexport.errors import UsageError

NAME = "generate"
HELP = "greedy decoding through the model's KV cache (original or converted model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX decoder with past_key_values inputs")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="prompt text (needs a tokenizer in the model's folder)")
    source.add_argument("--ids", help="prompt token ids, e.g. 1,2,3")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="folder with tokenizer.json (default: the model's folder)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    parser.add_argument(
        "--capacity",
        type=int,
        default=None,
        help="buffer-mode models (convert --cache-mode buffer): cache rows allocated (default prompt + "
        "new tokens rounded up to 64)",
    )
    parser.add_argument(
        "--eos-id", type=int, action="append", default=[], help="stop at this token (repeatable)"
    )
    parser.add_argument(
        "--provider",
        action="append",
        default=None,
        help="ONNX Runtime execution provider (repeatable; default CPUExecutionProvider)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def greedy_generate(session, prompt_ids: np.ndarray, max_new_tokens: int, eos_ids: set[int]) -> list[int]:
    logits = session.prefill(prompt_ids[None, :])
    next_id = int(np.argmax(logits[0, -1]))
    out: list[int] = []
    for index in range(max_new_tokens):
        out.append(next_id)
        if next_id in eos_ids or index == max_new_tokens - 1:
            break
        next_id = int(np.argmax(session.step(np.array([next_id]))[0]))
    return out


def run(args: argparse.Namespace) -> int:
    from tqexport.eval.session import DecodeSession, buffer_capacity
    from tqexport.eval.tokens import Tokenizer, parse_ids

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.capacity is not None and args.capacity < 1:
        raise UsageError(f"--capacity must be >= 1, got {args.capacity}")
    tokenizer = None
    if args.prompt is not None:
        tokenizer = Tokenizer.for_model(args.model, args.tokenizer)
        prompt_ids = tokenizer.encode(args.prompt)
    else:
        prompt_ids = parse_ids(args.ids)
        try:
            tokenizer = Tokenizer.for_model(args.model, args.tokenizer)
        except Exception:  # noqa: BLE001 - ids in, ids out is fine without a tokenizer
            tokenizer = None
    if prompt_ids.size == 0:
        raise UsageError("the prompt is empty")
    capacity = args.capacity or buffer_capacity(prompt_ids.size + args.max_new_tokens)
    session = DecodeSession.from_path(args.model, args.provider, capacity)
    start = time.time()
    new_ids = greedy_generate(session, prompt_ids, args.max_new_tokens, set(args.eos_id))
    seconds = time.time() - start
    text = tokenizer.decode(new_ids) if tokenizer else None
    if args.json:
        print(
            json.dumps(
                {
                    "prompt_ids": prompt_ids.tolist(),
                    "new_ids": new_ids,
                    "text": text,
                    "seconds": seconds,
                    "converted": session.layout.is_converted,
                }
            )
        )
    else:
        print(text if text is not None else ",".join(map(str, new_ids)))
        print(
            f"[{len(new_ids)} tokens in {seconds:.2f} s, prompt {prompt_ids.size} tokens, "
            f"{'converted' if session.layout.is_converted else 'original'} model]",
            file=sys.stderr,
        )
    return 0
