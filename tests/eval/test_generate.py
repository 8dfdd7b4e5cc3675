"""`tqexport generate` on a tiny decoder: greedy ids through the cache equal greedy ids without it."""

from __future__ import annotations

import json

import numpy as np

from tqexport.cli.main import main
from tqexport.eval.session import DecodeSession


def greedy_without_cache(session: DecodeSession, prompt: list[int], count: int) -> list[int]:
    ids = list(prompt)
    for _ in range(count):
        logits = session.prefill(np.array([ids]))  # the whole sequence every time, fresh empty cache
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[len(prompt) :]


def test_generate_ids_match_uncached_greedy(tiny_models, capsys):
    code = main(
        ["generate", str(tiny_models["original"]), "--ids", "5,9,13,2", "--max-new-tokens", "12", "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt_ids"] == [5, 9, 13, 2] and out["text"] is None and not out["converted"]
    expected = greedy_without_cache(DecodeSession.from_path(tiny_models["original"]), [5, 9, 13, 2], 12)
    assert out["new_ids"] == expected


def test_generate_stops_at_eos(tiny_models, capsys):
    main(["generate", str(tiny_models["original"]), "--ids", "5,9,13,2", "--max-new-tokens", "12", "--json"])
    first = json.loads(capsys.readouterr().out)["new_ids"][0]
    main(["generate", str(tiny_models["original"]), "--ids", "5,9,13,2", "--eos-id", str(first), "--json"])
    assert json.loads(capsys.readouterr().out)["new_ids"] == [first]


def test_generate_text_without_tokenizer_is_a_clear_error(tiny_models, capsys):
    assert main(["generate", str(tiny_models["original"]), "--prompt", "hello"]) == 7
    assert "pass token ids with --ids" in capsys.readouterr().err
