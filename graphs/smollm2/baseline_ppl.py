"""Teacher-forced perplexity and timing of the original (unconverted) SmolLM2 on the start of a text.

    python -m graphs.smollm2.baseline_ppl --model-dir DIR [--runtime torch|ort] [--prefill N] [--decode M]

DIR is the output of `graphs.smollm2.export`. The first N + M + 1 tokens of the text (default: Emma, fetched
by `graphs.text.fetch`; tokenized without special tokens) are scored as a prefill of N tokens (default 2048),
then M single-token steps on the KV cache (default 256), each fed the true next token. Token t+1 is predicted
from the logits at t, so the prefill scores N predictions and the decode steps M more. Perplexity is reported
for the prefill part, the decode part (the one that reads a long cache) and both, with wall times.
`--runtime torch` runs DIR/hf in transformers; `--runtime ort` runs DIR/model.onnx in ONNX Runtime (CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PplResult:
    runtime: str
    text_source: str
    prefill_tokens: int
    decode_steps: int
    ppl_prefill: float
    ppl_decode: float
    ppl_all: float
    prefill_seconds: float
    decode_seconds: float
    decode_ms_per_token: float
    cpu_seconds: float  # process CPU time (all threads) of prefill + decode: less sensitive to a busy machine


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of `targets` [N] under `logits` [N, V], computed in float64."""
    wide = logits.astype(np.float64)
    top = wide.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(wide - top).sum(axis=-1)) + top[:, 0]
    return log_norm - wide[np.arange(len(targets)), targets]


Timings = tuple[float, float, float]  # prefill wall s, decode wall s, CPU s of both (all threads)


def run_torch(model_dir: Path, ids: list[int], prefill: int) -> tuple[np.ndarray, np.ndarray, Timings]:
    """(prefill logits [P,V], decode logits [D,V], timings) of DIR/hf with a DynamicCache."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir / "hf"), dtype=torch.float32).eval()
    with torch.no_grad():
        cpu_started = time.process_time()
        started = time.perf_counter()
        out = model(torch.tensor([ids[:prefill]]), use_cache=True)
        prefill_logits = out.logits[0].numpy()
        cache = out.past_key_values
        middle = time.perf_counter()
        steps = []
        for position, token in enumerate(ids[prefill:], start=prefill):
            out = model(
                torch.tensor([[token]]),
                past_key_values=cache,
                position_ids=torch.tensor([[position]]),
                use_cache=True,
            )
            cache = out.past_key_values
            steps.append(out.logits[0, -1].numpy())
        ended = time.perf_counter()
    timings = (middle - started, ended - middle, time.process_time() - cpu_started)
    return prefill_logits, np.stack(steps), timings


def run_ort(model_dir: Path, ids: list[int], prefill: int) -> tuple[np.ndarray, np.ndarray, Timings]:
    """(prefill logits [P,V], decode logits [D,V], timings) of DIR/model.onnx in ORT CPU."""
    from graphs.smollm2.ort_runner import OrtCausalLM

    runner = OrtCausalLM(model_dir / "model.onnx")
    runner.prefill(ids[:8])  # warm-up: first-run allocations and kernel selection
    cpu_started = time.process_time()
    started = time.perf_counter()
    prefill_logits = runner.prefill(ids[:prefill])
    middle = time.perf_counter()
    steps = [runner.decode(token) for token in ids[prefill:]]
    ended = time.perf_counter()
    timings = (middle - started, ended - middle, time.process_time() - cpu_started)
    return prefill_logits, np.stack(steps), timings


def measure(model_dir: Path, text: str, source: str, runtime: str, prefill: int, decode: int) -> PplResult:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    needed = prefill + decode + 1
    ids = tokenizer(text[: needed * 12], add_special_tokens=False).input_ids[:needed]
    if len(ids) < needed:
        raise ValueError(f"text has {len(ids)} tokens, need {needed}")
    feed = ids[: prefill + decode]  # the last token is only a target
    runner = run_torch if runtime == "torch" else run_ort
    prefill_logits, decode_logits, (prefill_s, decode_s, cpu_seconds) = runner(model_dir, feed, prefill)
    targets = np.asarray(ids[1:])
    nll_prefill = token_nll(prefill_logits, targets[:prefill])
    nll_decode = token_nll(decode_logits, targets[prefill:])
    return PplResult(
        runtime=runtime,
        text_source=source,
        prefill_tokens=prefill,
        decode_steps=decode,
        ppl_prefill=math.exp(nll_prefill.mean()),
        ppl_decode=math.exp(nll_decode.mean()),
        ppl_all=math.exp(np.concatenate([nll_prefill, nll_decode]).mean()),
        prefill_seconds=prefill_s,
        decode_seconds=decode_s,
        decode_ms_per_token=1000 * decode_s / decode,
        cpu_seconds=cpu_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="output folder of graphs.smollm2.export"
    )
    parser.add_argument("--text", type=Path, help="UTF-8 text file (default: Emma via graphs.text.fetch)")
    parser.add_argument("--runtime", choices=("torch", "ort"), default="torch")
    parser.add_argument("--prefill", type=int, default=2048)
    parser.add_argument("--decode", type=int, default=256)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a hub
    if args.text is None:
        from graphs.text.fetch import fetch

        source, text_path = fetch("emma")
    else:
        source, text_path = args.text.name, args.text
    result = measure(
        args.model_dir, text_path.read_text(encoding="utf-8"), source, args.runtime, args.prefill, args.decode
    )
    print(
        json.dumps({name: round(v, 4) if isinstance(v, float) else v for name, v in asdict(result).items()})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
