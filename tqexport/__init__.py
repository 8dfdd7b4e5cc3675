"""tqexport: compile TurboQuant KV-cache compression into ONNX LLM graphs.

Public entry points (imported lazily so `import tqexport.codec` stays light):
- `tqexport.convert_model(path, out_path, options)` rewrites a model's KV cache to the TurboQuant ops;
- `tqexport.inspect_model(path)` reports, per layer, what the pass finds and whether it converts.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "convert_model", "inspect_model", "ConvertOptions"]


def __getattr__(name: str) -> Any:
    if name in ("convert_model", "inspect_model", "ConvertOptions"):
        from tqexport import converter

        return getattr(converter, name)
    raise AttributeError(f"module 'tqexport' has no attribute {name!r}")
