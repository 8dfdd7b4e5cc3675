"""`tqexport calibrate model.onnx --text FILE -o cal.json [--sensitivity]`: calibrate once, convert often.

Runs calibration text through the original model and writes the JSON that `tqexport convert --calibration`
reads: per-(layer, kv head) channel RMS of the new K/V (outlier split), the largest vector norms, and with
--sensitivity the KL of compressing each layer's K or V alone at each candidate bit width (--bits-budget).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "calibrate"
HELP = "measure K/V channel statistics and per-layer sensitivity on calibration text (JSON for convert)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="original ONNX model (with its KV cache)")
    parser.add_argument(
        "--text", required=True, help="calibration text (tokenizer from the model's folder) or ids"
    )
    parser.add_argument("-o", "--output", required=True, help="calibration JSON to write")
    parser.add_argument("--tokens", type=int, default=256, help="tokens of calibration text used")
    parser.add_argument("--sensitivity", action="store_true", help="also measure per-layer sensitivity")
    parser.add_argument(
        "--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6], help="candidate bit widths for --sensitivity"
    )


def run(args: argparse.Namespace) -> int:
    from tqexport.calibration.plan import calibrate_to_json
    from tqexport.errors import UsageError

    if any(not 1 <= b <= 8 for b in args.bits):
        raise UsageError(f"--bits {args.bits}: each must be in 1..8")
    data = calibrate_to_json(
        args.model, args.text, args.tokens, args.sensitivity, tuple(sorted(set(args.bits)))
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    for warning in data.get("warnings", []):
        print(f"warning: {warning}")
    print(f"wrote {out} ({len(data['layers'])} layers{', with sensitivities' if args.sensitivity else ''})")
    return 0
