"""`tqexport compare` end to end on tiny decoders: a model against itself, thresholds, JSON, storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tqexport.cli.main import main
from tqexport.eval.compare import compare_models
from tqexport.eval.compare_func import Thresholds

IDS = ",".join(str(i) for i in np.random.default_rng(2).integers(0, 64, 80))


def test_model_against_itself_has_zero_error(tiny_models):
    ids = np.random.default_rng(0).integers(0, 64, (2, 40))
    report = compare_models(tiny_models["original"], tiny_models["original"], ids, 20, 12, progress=False)
    d = report.result.decode
    assert d.positions == 13
    assert d.max_abs_error == 0.0 and d.kl_max == 0.0
    assert d.top1_agreement == 1.0 and d.ppl_ratio == 1.0
    assert report.result.prefill is not None and report.result.prefill.kl_max == 0.0
    assert report.passed
    assert report.storage.compression_ratio == 1.0


def test_uint8_cache_storage_and_small_error(tiny_models):
    ids = np.random.default_rng(0).integers(0, 64, (1, 60))
    report = compare_models(tiny_models["original"], tiny_models["uint8_cache"], ids, 30, 20, progress=False)
    s = report.storage
    # 2 layers x (K, V) x Hkv 2 x D 16 = 128 elements per token: 512 bytes as float32, 128 bytes as uint8.
    assert s.elements_per_token == 128
    assert s.original_bytes_per_token == 512 and s.original_bits_per_element == 32.0
    assert s.converted_bytes_per_token == 128 and s.converted_bits_per_element == 8.0
    d = report.result.decode
    assert 0.0 < d.kl_mean < 1e-4
    assert d.top1_agreement >= 0.9


def test_cli_self_compare_passes_with_strict_thresholds(tiny_models, capsys):
    model = str(tiny_models["original"])
    flags = "--prefill 30 --steps 20 --batch 2 --max-kl 0 --min-top1 1 --max-ppl-ratio 1 --json --no-progress"
    code = main(["compare", model, model, "--ids", IDS, *flags.split()])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["passed"] and report["failures"] == []
    assert report["decode"]["kl_max"] == 0.0 and report["decode"]["positions"] == 21


@pytest.mark.parametrize(
    "flag, value, message",
    [("--max-kl", "1e-9", "KL mean"), ("--min-top1", "1.01", "top-1"), ("--max-ppl-ratio", "0.5", "ppl")],
)
def test_cli_threshold_failure_exits_nonzero(tiny_models, capsys, flag, value, message):
    code = main(
        [
            "compare",
            str(tiny_models["original"]),
            str(tiny_models["perturbed"]),
            "--ids",
            IDS,
            "--prefill",
            "30",
            "--steps",
            "20",
            flag,
            value,
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert message in captured.err
    assert "FAILED" in captured.out


def test_cli_too_few_tokens_is_a_usage_error(tiny_models, capsys):
    model = str(tiny_models["original"])
    code = main(["compare", model, model, "--ids", "1,2,3", "--prefill", "30", "--steps", "20"])
    assert code == 2
    assert "need at least 51 tokens" in capsys.readouterr().err


def test_thresholds_unset_never_fail():
    from tqexport.eval.metrics import SummaryMetrics

    bad = SummaryMetrics(10, 9.0, 9.0, 0.0, 9.0, 9.0, 1.0, 100.0, 100.0)
    assert Thresholds().failures(bad) == []
    assert len(Thresholds(1.0, 0.5, 2.0).failures(bad)) == 3


def test_compare_many_decodes_the_original_once(tiny_models):
    from tqexport.eval.compare import compare_many

    ids = np.random.default_rng(0).integers(0, 64, (1, 40))
    paths = [tiny_models["original"], tiny_models["uint8_cache"], tiny_models["perturbed"]]
    reports = compare_many(tiny_models["original"], paths, ids, 20, 10, progress=False)
    assert [r.converted for r in reports] == [str(p) for p in paths]
    assert reports[0].result.decode.kl_max == 0.0
    assert reports[1].storage.converted_bits_per_element == 8.0
    assert reports[2].result.decode.kl_mean > reports[1].result.decode.kl_mean > 0.0


def test_converted_fixture_end_to_end(tmp_path, capsys):
    """tqexport convert (8-bit, 2 sinks + 4 recent) then tqexport compare on a committed fixture."""
    from pathlib import Path

    fixture = Path(__file__).parents[2] / "graphs" / "fixtures" / "optimum" / "llama" / "model.onnx"
    if not fixture.is_file():
        pytest.skip("no graphs/fixtures/optimum/llama fixture")
    try:
        from tqexport.runtime import ort_library_path

        ort_library_path()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"tqexport ORT custom-op library not available: {exc}")
    converted = tmp_path / "model.onnx"
    flags = "--preset 8 --sink-tokens 2 --recent-window 4".split()
    assert main(["convert", str(fixture), "-o", str(converted), *flags]) == 0, capsys.readouterr().err
    capsys.readouterr()
    ids = ",".join(str(i) for i in np.random.default_rng(3).integers(0, 160, 80))
    common = ["--ids", ids, "--prefill", "40", "--steps", "30", "--batch", "2", "--json", "--no-progress"]
    models = [str(fixture), str(converted)]
    assert main(["compare", *models, *common, "--max-kl", "1e-3", "--min-top1", "0.95"]) == 0
    report = json.loads(capsys.readouterr().out)
    storage = report["storage"]
    assert storage["window_tokens"] == 6 and storage["context_tokens"] == 70
    # 8-bit codes of D = 32 plus one float16 norm: 34-byte rows, 8.5 bits/elem once the window is amortized.
    assert storage["converted_bits_per_element_long"] == pytest.approx(8.5)
    assert 8.5 < storage["converted_bits_per_element"] < 32.0
    assert main(["compare", *models, *common, "--max-kl", "1e-12"]) == 1


def test_compare_reads_a_genai_originals_cache_size(tmp_path, capsys):
    """onnxruntime-genai leaves D symbolic (kv_cache_dim); compare takes it from the config.json beside the
    model: 2 layers x K, V x Hkv 2 x D 32 x 4 bytes = 1024 bytes per original token."""
    import shutil
    from pathlib import Path

    fixture = Path(__file__).parents[2] / "graphs" / "fixtures" / "genai" / "llama" / "model.onnx"
    if not fixture.is_file():
        pytest.skip("no graphs/fixtures/genai/llama fixture")
    try:
        from tqexport.runtime import ort_library_path

        ort_library_path()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"tqexport ORT custom-op library not available: {exc}")
    converted = tmp_path / "model.onnx"
    assert main(["convert", str(fixture), "-o", str(converted), "--key-bits", "4", "--value-bits", "4"]) == 0
    capsys.readouterr()
    ids = ",".join(str(i) for i in np.random.default_rng(4).integers(3, 160, 16))
    common = ["--ids", ids, "--prefill", "8", "--steps", "7", "--json", "--no-progress"]
    assert main(["compare", str(fixture), str(converted), *common]) == 0
    storage = json.loads(capsys.readouterr().out)["storage"]
    assert storage["original_bytes_per_token"] == 1024.0 and storage["original_bits_per_element"] == 32.0
    assert storage["converted_bits_per_element"] == pytest.approx(4.5)  # 16-byte codes + 2-byte norm per D=32
    # Without a config.json the size is unknown: one line saying so, no traceback.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(fixture, bare / "model.onnx")
    shutil.copy(fixture.parent / "model.onnx.data", bare / "model.onnx.data")
    assert main(["compare", str(bare / "model.onnx"), str(converted), *common]) != 0
    err = capsys.readouterr().err
    assert "must be static" in err and "Traceback" not in err
