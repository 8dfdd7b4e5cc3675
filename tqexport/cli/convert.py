"""`tqexport convert model.onnx -o out.onnx ...`: rewrite the KV cache to the TurboQuant ops.

Refuses, writing nothing, when any layer cannot convert (unless --allow-partial). Prints per layer what it
did and the dict of pass counts.
"""

from __future__ import annotations

import argparse
import json

NAME = "convert"
HELP = "rewrite a model's fp KV cache into TurboQuant-compressed uint8 caches (custom ops, domain tqexport)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tqexport.converter.presets import PRESETS, parse_width

    parser.add_argument("model", help="input ONNX model (external data stays where it is)")
    parser.add_argument("-o", "--output", required=True, help="output ONNX path")
    bits = parser.add_argument_group("codec")
    bits.add_argument(
        "--key-bits",
        type=parse_width,
        default=4.0,
        help="bits per K coordinate (x.5 = outlier split), or parts as CHANNELS@BITS, e.g. 16@5+48@2 (the "
        "16 channels with the largest calibration RMS at 5 bits, the rest at 2)",
    )
    bits.add_argument(
        "--value-bits", type=parse_width, default=4.0, help="bits per V coordinate (as --key-bits)"
    )
    bits.add_argument("--preset", choices=sorted(PRESETS), help="named K/V bit widths (overrides --*-bits)")
    bits.add_argument(
        "--qjl", action="store_true", help="keys: last bit is a QJL sign (unbiased inner products)"
    )
    bits.add_argument("--norm-correction", action="store_true", help="store gamma = n / ||c|| (format.md §5)")
    bits.add_argument("--rotation", choices=("hadamard", "dense"), default="hadamard")
    bits.add_argument(
        "--seed", type=int, default=0, help="base seed; per layer, per K/V seeds derive from it"
    )
    bits.add_argument(
        "--calibration",
        metavar="FILE",
        help="calibration text (run through the original model: outlier channels by K/V RMS, and the "
        "sensitivities --bits-budget needs), or a JSON of channel scores {'layers': ...}",
    )
    bits.add_argument("--calibration-tokens", type=int, default=256, help="tokens of calibration text used")
    bits.add_argument(
        "--bits-budget",
        type=float,
        help="average bits per K/V element (norms, sinks and window counted at --budget-context): bit "
        "widths per layer and K/V are chosen from measured sensitivity (needs --calibration text)",
    )
    bits.add_argument(
        "--budget-context", type=int, default=2048, help="context length the budget is counted at"
    )
    cache = parser.add_argument_group("cache")
    cache.add_argument("--cache-mode", choices=("concat", "buffer"), default="concat")
    cache.add_argument("--sink-tokens", type=int, default=0, help="first N tokens kept in full precision")
    cache.add_argument("--recent-window", type=int, default=0, help="last R tokens kept in full precision")
    cache.add_argument(
        "--window-dtype",
        choices=("float16", "model"),
        default="float16",
        help="storage of sink/window tokens: float16 (float32 graphs cast K/V/q around the ops) or the "
        "model's own K/V dtype",
    )
    parser.add_argument("--target", choices=("ort", "trt"), default="ort")
    parser.add_argument("--allow-partial", action="store_true", help="convert the layers that match")
    parser.add_argument(
        "--no-check", action="store_true", help="skip onnx.checker (full_check) on the output"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from tqexport.converter import ConvertOptions, convert_model

    options = ConvertOptions(
        key_bits=args.key_bits,
        value_bits=args.value_bits,
        preset=args.preset,
        qjl=args.qjl,
        norm_correction=args.norm_correction,
        rotation=args.rotation,
        cache_mode=args.cache_mode,
        seed=args.seed,
        sink_tokens=args.sink_tokens,
        recent_window=args.recent_window,
        window_dtype=args.window_dtype,
        calibration=args.calibration,
        calibration_tokens=args.calibration_tokens,
        bits_budget=args.bits_budget,
        budget_context=args.budget_context,
        target=args.target,
        allow_partial=args.allow_partial,
        check=not args.no_check,
    )
    log = (lambda _line: None) if args.json else print
    result = convert_model(args.model, args.output, options, log=log)
    if args.json:
        print(
            json.dumps(
                {
                    "output": str(result.output),
                    "counts": result.counts,
                    "layers": result.layers,
                    "notes": result.notes,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return 0
    print(f"pass counts: {result.counts}")
    print(
        f"wrote {result.output} ({len(result.converted_layers)} layers converted"
        + (f", {len(result.skipped_layers)} left in full precision" if result.skipped_layers else "")
        + ")"
    )
    return 0
