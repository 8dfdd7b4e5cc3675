"""`tqexport build`: a TensorRT engine (.plan) from a converted model, with the tqexport plugins loaded.

    tqexport build model.onnx --target h100|orin|thor -o model.plan [--max-batch N --max-context N]

With the `tensorrt` Python module: parse, set one optimization profile over every dynamic input dim
(tqexport/trt/profiles.py), load libtqexport_trt.so, build, write the plan. Without it: exit 7 with a one-line
reason on stderr, after printing the equivalent trtexec command on stdout. Engine builds have not been run in
tqexport's own CI (no TensorRT there); the trtexec line and the error path are tested.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqexport.errors import MissingDependencyError, UsageError, ValidationError

NAME = "build"
HELP = "build a TensorRT engine from a converted model (needs TensorRT; else prints the trtexec command)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tqexport.trt.targets import TARGETS

    parser.add_argument("model", type=Path, help="converted ONNX model (tqexport convert --target trt)")
    parser.add_argument("--target", required=True, choices=sorted(TARGETS), help="GPU the engine is for")
    parser.add_argument("-o", "--output", type=Path, required=True, help="engine file to write (.plan)")
    parser.add_argument("--max-batch", type=int, default=1, help="largest batch size (default 1)")
    parser.add_argument("--max-context", type=int, default=4096, help="largest total tokens (default 4096)")
    parser.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=MIN:OPT:MAX",
        help="range of a named dynamic dim (overrides the built-in rules; repeatable)",
    )
    parser.add_argument("--plugin-lib", default=None, help="path of libtqexport_trt.so (default: search)")
    parser.add_argument("--workspace-mib", type=int, default=None, help="builder workspace limit in MiB")
    parser.add_argument(
        "--print-trtexec",
        action="store_true",
        help="only print the equivalent trtexec command and exit 0",
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    """For registries that add subcommands themselves: `add_parser(subparsers)`; returns the new parser."""
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    add_arguments(parser)
    parser.set_defaults(_run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from tqexport.graph.index import GraphIndex
    from tqexport.passes.hadamard_promises import broken_promises
    from tqexport.trt.builder import build_engine, check_target_matches_gpu, import_tensorrt
    from tqexport.trt.profiles import derive_profile, load_model_header, parse_dim_override
    from tqexport.trt.targets import TARGETS, find_plugin_library
    from tqexport.trt.trtexec import format_command, trtexec_command

    target = TARGETS[args.target]
    overrides = dict(parse_dim_override(text) for text in args.dim)
    model = load_model_header(args.model)
    if problems := broken_promises(model.graph, GraphIndex(model.graph, base_dir=args.model.parent)):
        raise ValidationError(
            f"{args.model}: {problems[0]} (docs/format.md 8.3; {len(problems)} broken promise(s) in all): a "
            f"TensorRT plugin would trust it; reconvert with `tqexport convert --target trt`"
        )
    profile = derive_profile(model, args.max_batch, args.max_context, overrides)
    plugin_library = find_plugin_library(args.plugin_lib)
    argv = trtexec_command(args.model, args.output, profile, plugin_library)
    if args.print_trtexec:
        print(format_command(argv))
        return 0
    try:
        trt = import_tensorrt()
    except MissingDependencyError as exc:
        print(format_command(argv))
        raise MissingDependencyError(
            f"{exc}; cannot build here. Run the trtexec command printed above on the {target.description}"
        ) from exc
    if plugin_library is None or not plugin_library.is_file():
        raise MissingDependencyError(
            f"plugin library {plugin_library or 'libtqexport_trt.so'} not found: build it with "
            f"cmake -DTQ_WITH_TRT=ON (deploy/README.md) or pass --plugin-lib"
        )
    check_target_matches_gpu(target)
    if args.output.suffix not in (".plan", ".engine", ".trt"):
        raise UsageError(f"-o {args.output}: expected a .plan/.engine/.trt file name")
    workspace = args.workspace_mib * (1 << 20) if args.workspace_mib else None
    size = build_engine(trt, args.model, args.output, profile, plugin_library, workspace)
    print(f"tqexport build: wrote {args.output} ({size} bytes) for {target.name}", file=sys.stderr)
    return 0
