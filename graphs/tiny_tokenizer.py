"""A word-level tokenizer with VOCAB entries, so folder-based exporters that insist on loading a
tokenizer (the onnxruntime-genai builder) can run offline. Token i is the word `t{i}`."""

from __future__ import annotations

import json
from pathlib import Path

from graphs.tiny_models import VOCAB

SPECIAL = {0: "<pad>", 1: "<s>", 2: "</s>"}


def save_tiny_tokenizer(out_dir: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {SPECIAL.get(i, f"t{i}"): i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": SPECIAL[0],
        "bos_token": SPECIAL[1],
        "eos_token": SPECIAL[2],
        "unk_token": SPECIAL[0],
        "model_max_length": 64,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
