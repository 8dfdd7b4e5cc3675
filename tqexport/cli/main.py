"""`tqexport` entry point: a registry of subcommands that always builds, even when a subcommand cannot import.

Each subcommand is a module `tqexport/cli/<name>.py` defining `NAME`, `HELP`, `add_arguments(parser)` and
`run(args) -> int`. A module that fails to import is replaced by a `MissingTool` that says why, so
`tqexport --help` always works and the other subcommands keep working.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from tqexport.errors import TqexportError

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "inspect",
    "calibrate",
    "convert",
    "plugins",
    "generate",
    "compare",
    "build",
)


class Tool(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


@dataclass
class MissingTool:
    """Stands in for a subcommand whose module failed to import; running it explains the failure."""

    NAME: str
    reason: str

    @property
    def HELP(self) -> str:  # noqa: N802 - mirrors the module attribute of a real tool
        return f"(unavailable: {self.reason})"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        print(f"tqexport {self.NAME}: error: this subcommand is unavailable: {self.reason}", file=sys.stderr)
        return 7


def load_tool(module_name: str) -> Tool | MissingTool:
    try:
        module: ModuleType = importlib.import_module(f"tqexport.cli.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"tqexport.cli.{module_name}":
            return MissingTool(module_name, "not installed in this build")
        return MissingTool(module_name, f"cannot import {exc.name!r}: {exc}")
    except Exception as exc:  # noqa: BLE001 - any import failure must not break the other tools
        return MissingTool(module_name, f"{type(exc).__name__}: {exc}")
    for attribute in ("NAME", "HELP", "add_arguments", "run"):
        if not hasattr(module, attribute):
            return MissingTool(module_name, f"tqexport.cli.{module_name} lacks {attribute}")
    return module  # type: ignore[return-value]


def build_parser(tools: list[Tool | MissingTool]) -> argparse.ArgumentParser:
    from tqexport import __version__

    parser = argparse.ArgumentParser(
        prog="tqexport",
        description="Compile TurboQuant KV-cache compression into ONNX LLM graphs.",
    )
    parser.add_argument("--version", action="version", version=f"tqexport {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for tool in tools:
        sub = subparsers.add_parser(tool.NAME, help=tool.HELP, description=tool.HELP)
        tool.add_arguments(sub)
        sub.set_defaults(_tool=tool)
    return parser


def main(argv: list[str] | None = None) -> int:
    tools = [load_tool(name) for name in SUBCOMMAND_MODULES]
    parser = build_parser(tools)
    args = parser.parse_args(argv)
    tool = getattr(args, "_tool", None)
    if tool is None:
        parser.print_help()
        return 2
    try:
        return int(tool.run(args) or 0)
    except TqexportError as exc:
        message = " ".join(str(exc).split("\n")[0:1]) or type(exc).__name__
        print(f"tqexport {tool.NAME}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"tqexport {tool.NAME}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
