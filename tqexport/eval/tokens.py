"""Turn --text/--prompt/--ids into token ids, with the tokenizer found next to the model when there is one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tqexport.errors import MissingDependencyError, UsageError

TOKENIZER_FILE = "tokenizer.json"


class TokenizerUnavailableError(MissingDependencyError):
    """Text was given but no tokenizer can be loaded for the model."""


def parse_ids(text: str) -> np.ndarray:
    """'1,2, 3' or '1 2 3' -> int64 [N]."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return np.array([int(p) for p in parts], dtype=np.int64)
    except ValueError as exc:
        raise UsageError(f"--ids must be integers separated by commas or spaces: {exc}") from None


def read_ids_file(path: str | Path) -> np.ndarray:
    """Token ids from a .npy file or a text file of integers."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path).astype(np.int64).reshape(-1)
    return parse_ids(path.read_text())


class Tokenizer:
    """A thin wrapper over `tokenizers.Tokenizer` (preferred) or transformers' AutoTokenizer."""

    def __init__(self, backend: Any, kind: str):
        self.backend = backend
        self.kind = kind

    @classmethod
    def for_model(cls, model_path: str | Path, tokenizer: str | Path | None = None) -> Tokenizer:
        """The tokenizer in `tokenizer` (a folder or a tokenizer.json) or else in the model's folder."""
        if tokenizer is not None:
            tokenizer = Path(tokenizer)
            folder = tokenizer.parent if tokenizer.is_file() else tokenizer
        else:
            folder = Path(model_path).resolve().parent
        why = []
        if (folder / TOKENIZER_FILE).is_file():
            try:
                from tokenizers import Tokenizer as FastTokenizer

                return cls(FastTokenizer.from_file(str(folder / TOKENIZER_FILE)), "tokenizers")
            except ImportError as exc:
                why.append(f"tokenizers: {exc}")
        else:
            why.append(f"no {TOKENIZER_FILE} in {folder}")
        try:
            from transformers import AutoTokenizer

            return cls(AutoTokenizer.from_pretrained(str(folder), local_files_only=True), "transformers")
        except Exception as exc:  # noqa: BLE001 - any failure means: no tokenizer
            why.append(f"transformers: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        raise TokenizerUnavailableError(
            f"cannot tokenize text for {model_path} ({'; '.join(why)}); pass token ids with --ids instead"
        )

    def encode(self, text: str) -> np.ndarray:
        if self.kind == "tokenizers":
            return np.array(self.backend.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        return np.array(self.backend.encode(text, add_special_tokens=False), dtype=np.int64)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)


def windows(ids: np.ndarray, batch: int, length: int) -> np.ndarray:
    """`batch` windows of `length` tokens, spread evenly over `ids` (disjoint when it is long enough)."""
    if ids.shape[0] < length:
        raise UsageError(f"need at least {length} tokens, got {ids.shape[0]}")
    if batch == 1:
        return ids[None, :length].copy()
    stride = min(length, (ids.shape[0] - length) // (batch - 1))
    return np.stack([ids[b * stride : b * stride + length] for b in range(batch)])
