"""`tqexport compare`: teacher-forced decode of the same tokens through an original and a converted model.

    tqexport compare original.onnx converted.onnx [--text FILE | --ids ... | --ids-file FILE]
        [--prefill P] [--steps N] [--batch B] [--max-kl X] [--min-top1 Y] [--max-ppl-ratio Z] [--json]

Both models prefill P tokens, then take N single-token steps feeding their own present caches back as past
(polygraphy Comparator with one DecodeRunner per model, tqexport/eval/runners.py). Reported: per-step logit
error, top-1 agreement, KL(original || converted), perplexity of each and their ratio, over the
predictions of tokens P .. P + N (the same over the prefill, as a second column), and the true KV
storage of both models. Exits 1 when a threshold fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tqexport.errors import UsageError

NAME = "compare"
HELP = "compare a converted model with its original (KL, top-1, perplexity, cache bits) over a cached decode"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("original", type=Path, help="original ONNX model")
    parser.add_argument("converted", type=Path, help="converted ONNX model (tqexport convert)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", type=Path, help="text file, tokenized with the original model's tokenizer")
    source.add_argument("--ids", help="token ids, e.g. 1,2,3")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="folder with tokenizer.json (default: the original's folder)",
    )
    source.add_argument("--ids-file", type=Path, help="token ids: .npy or text of integers")
    parser.add_argument(
        "--prefill", type=int, default=512, help="prompt tokens run in one prefill (default 512)"
    )
    parser.add_argument(
        "--steps", type=int, default=256, help="single-token cached decode steps (default 256)"
    )
    parser.add_argument(
        "--batch", type=int, default=1, help="sequences, windows spread over the text (default 1)"
    )
    parser.add_argument(
        "--prefill-chunk", type=int, default=0, help="split the prefill into chunks of this size"
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=None,
        help="buffer-mode models (convert --cache-mode buffer): cache rows allocated (default prefill + "
        "steps rounded up to 64)",
    )
    parser.add_argument("--max-kl", type=float, default=None, help="fail if the mean KL (nats) is above X")
    parser.add_argument("--min-top1", type=float, default=None, help="fail if top-1 agreement is below Y")
    parser.add_argument(
        "--max-ppl-ratio", type=float, default=None, help="fail if ppl(conv)/ppl(orig) is above Z"
    )
    parser.add_argument(
        "--provider",
        action="append",
        default=None,
        help="ONNX Runtime execution provider (repeatable; default CPUExecutionProvider)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON report on stdout (tables go nowhere)"
    )
    parser.add_argument("--per-step", action="store_true", help="include per-step metrics in the JSON report")
    parser.add_argument("--save-json", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_ids(args: argparse.Namespace) -> np.ndarray:
    from tqexport.eval.tokens import Tokenizer, parse_ids, read_ids_file

    if args.text is not None:
        if not args.text.is_file():
            raise UsageError(f"--text {args.text}: no such file")
        return Tokenizer.for_model(args.original, args.tokenizer).encode(
            args.text.read_text(encoding="utf-8")
        )
    if args.ids is not None:
        return parse_ids(args.ids)
    if args.ids_file is not None:
        return read_ids_file(args.ids_file)
    raise UsageError("give the tokens with --text FILE, --ids or --ids-file")


def run(args: argparse.Namespace) -> int:
    from tqexport.eval.compare import compare_models, format_table
    from tqexport.eval.compare_func import Thresholds
    from tqexport.eval.tokens import windows

    if args.capacity is not None and args.capacity < 1:
        raise UsageError(f"--capacity must be >= 1, got {args.capacity}")
    if args.prefill < 1 or args.steps < 0 or args.batch < 1:
        raise UsageError(
            f"need --prefill >= 1, --steps >= 0, --batch >= 1 (got {args.prefill}, {args.steps}, "
            f"{args.batch})"
        )
    ids = load_ids(args)
    ids_BT = windows(ids, args.batch, args.prefill + args.steps + 1)
    thresholds = Thresholds(args.max_kl, args.min_top1, args.max_ppl_ratio)
    report = compare_models(
        args.original,
        args.converted,
        ids_BT,
        args.prefill,
        args.steps,
        thresholds,
        providers=args.provider,
        prefill_chunk=args.prefill_chunk,
        progress=not args.no_progress,
        capacity=args.capacity,
    )
    text = json.dumps(report.as_dict(per_step=args.per_step), indent=2)
    if args.save_json is not None:
        args.save_json.parent.mkdir(parents=True, exist_ok=True)
        args.save_json.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(format_table(report))
    if not report.passed:
        print(f"tqexport compare: threshold failed: {'; '.join(report.result.failures)}", file=sys.stderr)
        return 1
    return 0
