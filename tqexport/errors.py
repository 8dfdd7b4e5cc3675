"""The one exception family of tqexport; each subclass carries the CLI exit code it maps to.

`tqexport <cmd>` prints `tqexport <cmd>: error: <message>` (one line, no traceback) and exits with
`exit_code`.
Messages name the node, layer, op, and the shape or dtype seen vs expected.
"""

from __future__ import annotations


class TqexportError(Exception):
    """Base class: anything tqexport refuses or fails to do, with a one-line reason."""

    exit_code: int = 1


class UsageError(TqexportError):
    """Bad command-line arguments or option combinations."""

    exit_code = 2


class ModelLoadError(TqexportError):
    """The model file cannot be read (missing, not ONNX, external data missing)."""

    exit_code = 3


class NotConvertibleError(TqexportError):
    """At least one layer's KV cache or attention could not be matched (see `tqexport inspect`)."""

    exit_code = 4


class UnsupportedError(TqexportError):
    """A recognised construct that tqexport deliberately refuses (it would silently change semantics)."""

    exit_code = 5


class ValidationError(TqexportError):
    """The rewritten model fails the ONNX checker or shape inference."""

    exit_code = 6


class MissingDependencyError(TqexportError):
    """An optional component (ORT custom-op library, TensorRT plugin, a Python package) is not available."""

    exit_code = 7
