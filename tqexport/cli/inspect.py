"""`tqexport inspect model.onnx [--json]`: per layer, what the pass finds and whether it converts."""

from __future__ import annotations

import argparse
import json

NAME = "inspect"
HELP = "report per layer the KV cache, attention form, heads, D, mask, softcap, and whether it converts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model with past_key_values.N.key/.value inputs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from tqexport.converter import inspect_model
    from tqexport.converter.report import layer_line

    report = inspect_model(args.model)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    if report["problem"]:
        print(f"{args.model}: not convertible: {report['problem']}")
        return 0
    print(f"{args.model}: {report['convertible_layers']} of {report['total_layers']} layers convert")
    for layer in report["layers"]:
        print(layer_line(layer))
    return 0
