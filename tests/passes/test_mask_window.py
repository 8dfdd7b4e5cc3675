"""`tqexport inspect` labels sliding-window layers in every exporter's graph by running the mask subgraph.

Gemma2's fixtures slide a window of 8 on layer 0 and attend fully on layer 1; every other fixture
has no window. genai graphs carry the window on the GroupQueryAttention node (local_window_size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphs.catalog import FIXTURES
from tqexport.converter import inspect_model
from tqexport.graph.index import GraphIndex
from tqexport.graph.model_io import load_model
from tqexport.passes.layers import analyze
from tqexport.passes.mask_window import _classify, probe_windows

GEMMA2_WINDOW_LAYERS = {0}  # graphs/tiny_models.py: layer_types [sliding_attention, full_attention]


def _ids(fx) -> str:
    return f"{fx.exporter}/{fx.arch}"


@pytest.mark.skipif(not FIXTURES, reason="graphs/fixtures/manifest.json not generated yet")
@pytest.mark.parametrize("fx", FIXTURES, ids=_ids)
def test_inspect_reports_each_layers_window(fx) -> None:
    report = inspect_model(fx.path)
    for layer in report["layers"]:
        expected = fx.sliding_window if fx.sliding_window and layer["layer"] in GEMMA2_WINDOW_LAYERS else None
        assert layer["window_tokens"] == expected, layer["window"]
        if fx.exporter == "genai":
            continue
        if expected is None:
            assert layer["window"].startswith("none (probed"), layer["window"]
        else:
            assert layer["window"].startswith(f"sliding {expected} (probed"), layer["window"]


def test_inspect_text_names_the_window(capsys) -> None:
    from tqexport.cli.main import main

    fx = next(fx for fx in FIXTURES if (fx.exporter, fx.arch) == ("optimum", "gemma2"))
    assert main(["inspect", str(fx.path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "window=sliding 8" in lines[1] and "window=none" in lines[2]


def test_probe_that_cannot_fill_an_input_says_why(tmp_path: Path) -> None:
    fx = next(fx for fx in FIXTURES if (fx.exporter, fx.arch) == ("optimum", "llama"))
    model = load_model(fx.path)
    for value in model.graph.input:
        if value.name == "attention_mask":
            value.name = "custom_mask"
    for node in model.graph.node:
        node.input[:] = ["custom_mask" if name == "attention_mask" else name for name in node.input]
    index = GraphIndex.build(model, fx.path.parent)
    analysis = analyze(index)
    assert analysis.convertible_layers
    probes = probe_windows(model, index, analysis.convertible_layers)
    for probe in probes.values():
        assert probe.visible is None and probe.window is None
        assert probe.describe() == "unknown (the mask reads input 'custom_mask', which the probe cannot fill)"


def _additive(allowed: np.ndarray) -> np.ndarray:
    return np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)[None, None, None, :]


def test_classify_band_hole_and_bool_kinds() -> None:
    total = 32
    keys = np.arange(total)
    band = keys >= total - 5
    probe = _classify([("additive", "m")], {"m": _additive(band)}, total)
    assert (probe.visible, probe.window) == (5, 5)
    hole = keys != 3  # everything but one early key: not a window
    probe = _classify([("bool", "m")], {"m": hole[None, None, None, :]}, total)
    assert (probe.visible, probe.window) == (total - 1, None)
    assert probe.describe().startswith("irregular")
    # bool_inverted marks excluded keys; combined with an additive term both apply
    probe = _classify(
        [("bool_inverted", "b"), ("additive", "a")],
        {"b": ~band[None, None, None, :], "a": _additive(keys >= 2)},
        total,
    )
    assert (probe.visible, probe.window) == (5, 5)
    full = _classify([("additive", "m")], {"m": _additive(np.ones(total, bool))}, total)
    assert (full.visible, full.window) == (total, None) and full.describe().startswith("none")
