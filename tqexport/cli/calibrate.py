"""`tqexport calibrate model.onnx --text FILE -o cal.json [--sensitivity]`: calibrate once, convert often.

Runs calibration text through the original model and writes the JSON that `tqexport convert --calibration`
reads: per-(layer, kv head) channel RMS of the new K/V (outlier split), the largest vector norms, and with
--sensitivity the KL of compressing each layer's K or V alone at each candidate width (--bits-budget).
Give the conversion's --norm-correction/--sink-tokens/--recent-window so the measured codecs and exact
tokens are the ones the converted cache will have; with a window, --sequence-tokens cuts the text into
sequences whose last window positions are scored (queries reading an exact window and a compressed past).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "calibrate"
HELP = "measure K/V channel statistics and per-layer sensitivity on calibration text (JSON for convert)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tqexport.converter.presets import parse_width

    parser.add_argument("model", help="original ONNX model (with its KV cache)")
    parser.add_argument(
        "--text", required=True, help="calibration text (tokenizer from the model's folder) or ids"
    )
    parser.add_argument("-o", "--output", required=True, help="calibration JSON to write")
    parser.add_argument("--tokens", type=int, default=256, help="tokens of calibration text used")
    parser.add_argument("--sensitivity", action="store_true", help="also measure per-layer sensitivity")
    parser.add_argument(
        "--bits",
        type=parse_width,
        nargs="+",
        default=[2, 3, 4, 5, 6],
        help="candidate widths for --sensitivity: bit widths or part specs such as 16@5+48@2",
    )
    setup = parser.add_argument_group("sensitivity setup (as the conversion will run)")
    setup.add_argument("--norm-correction", action="store_true", help="measure codecs with norm correction")
    setup.add_argument("--sink-tokens", type=int, default=0, help="first N tokens of a sequence stay exact")
    setup.add_argument("--recent-window", type=int, default=0, help="last R tokens stay exact; R scored")
    setup.add_argument(
        "--sequence-tokens", type=int, default=0, help="cut the text into sequences of this many tokens"
    )
    setup.add_argument("--seed", type=int, default=0, help="the conversion's base --seed")


def run(args: argparse.Namespace) -> int:
    from tqexport.calibration.plan import calibrate_to_json
    from tqexport.calibration.sensitivity import SensitivitySetup
    from tqexport.converter.presets import width_label
    from tqexport.errors import UsageError

    if any(not 1 <= b <= 8 for b in args.bits if not isinstance(b, str)):
        raise UsageError(f"--bits {args.bits}: each bit width must be in 1..8")
    if min(args.sink_tokens, args.recent_window, args.sequence_tokens) < 0:
        raise UsageError("--sink-tokens, --recent-window and --sequence-tokens must be >= 0")
    widths = tuple(dict.fromkeys(width_label(b) for b in args.bits))
    setup = SensitivitySetup(
        args.norm_correction, args.sink_tokens, args.recent_window, args.sequence_tokens, args.seed
    )
    data = calibrate_to_json(args.model, args.text, args.tokens, args.sensitivity, widths, setup=setup)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    for warning in data.get("warnings", []):
        print(f"warning: {warning}")
    print(f"wrote {out} ({len(data['layers'])} layers{', with sensitivities' if args.sensitivity else ''})")
    return 0
