"""`tqexport plugins --ort | --trt`: print the ORT custom-op library or TensorRT plugin library path."""

from __future__ import annotations

import argparse

from tqexport.errors import MissingDependencyError

NAME = "plugins"
HELP = "print the path of the ONNX Runtime custom-op library (--ort) or the TensorRT plugin library (--trt)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--ort", action="store_true", help="ONNX Runtime custom-op library")
    which.add_argument("--trt", action="store_true", help="TensorRT plugin library (if built)")


def run(args: argparse.Namespace) -> int:
    try:
        from tqexport.runtime import ort_library_path, trt_library_path
    except ImportError as exc:
        raise MissingDependencyError(f"tqexport.runtime is unavailable: {exc}") from exc
    print(ort_library_path() if args.ort else trt_library_path())
    return 0
