"""SmolLM2-135M export (graphs/smollm2) and the Emma fetcher (graphs/text), end to end.

The exporter needs torch/transformers/optimum, which live in .venv-export (scripts/setup_export.sh) and not in
the test venv, so it runs there as a subprocess; the checks on its output use only numpy, onnxruntime and
tokenizers. Tests skip with a reason when .venv-export, the GGUF (graphs/smollm2/install.sh) or apt-get is
missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPORT_PYTHON = Path(os.environ.get("TQ_EXPORT_VENV", ROOT / ".venv-export")) / "bin" / "python"
# ORT CPU vs torch CPU float32 logits, measured 1.4e-4 (prefill) and 4.9e-5 (decode) on SmolLM2.
LOGITS_ATOL = 2e-3
# Two ORT CPU runs of the same graph that differ only in how the sequence is split (prefill vs cached steps):
# the same float32 arithmetic in a different summation grouping, measured below 1e-4.
SPLIT_ATOL = 1e-3


def run_export_python(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(EXPORT_PYTHON), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def export_env_missing() -> str | None:
    if not EXPORT_PYTHON.is_file():
        return f"{EXPORT_PYTHON} missing (run scripts/setup_export.sh)"
    probe = run_export_python(
        "-c", "from graphs.smollm2.gguf_source import find_gguf; find_gguf()", timeout=60
    )
    if probe.returncode != 0:
        return f"SmolLM2 GGUF not installed (run graphs/smollm2/install.sh): {probe.stderr.strip()[-200:]}"
    return None


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = export_env_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("smollm2") / "export"
    done = run_export_python("-m", "graphs.smollm2.export", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "export: built" in done.stdout, done.stdout
    return out


@pytest.mark.slow
def test_export_passed_its_ort_vs_torch_check(export_dir: Path) -> None:
    manifest = json.loads((export_dir / "export_manifest.json").read_text())
    check = manifest["ort_vs_torch"]
    assert check["decode_steps"] >= 16
    assert check["prefill_max_abs"] <= LOGITS_ATOL
    assert check["decode_max_abs"] <= LOGITS_ATOL
    assert check["top1_agree"] == 1.0
    assert manifest["exporter"] == {
        "library": "optimum-onnx",
        "task": "text-generation-with-past",
        "opset": 18,
    }


@pytest.mark.slow
def test_config_keeps_rope_theta_and_shape(export_dir: Path) -> None:
    for config_path in (export_dir / "config.json", export_dir / "hf" / "config.json"):
        config = json.loads(config_path.read_text())
        assert config["rope_theta"] == 100000.0, config_path
        assert (config["num_hidden_layers"], config["num_attention_heads"]) == (30, 9)
        assert (config["num_key_value_heads"], config["head_dim"]) == (3, 64)


@pytest.mark.slow
def test_weights_live_in_one_plain_external_file(export_dir: Path) -> None:
    data = export_dir / "model.onnx.data"
    assert data.is_file() and not data.is_symlink()
    assert data.stat().st_nlink == 1  # onnx refuses external data reached through a link
    assert data.stat().st_size > 500_000_000
    assert (export_dir / "model.onnx").stat().st_size < 10_000_000


@pytest.mark.slow
def test_rerun_reuses_the_folder(export_dir: Path) -> None:
    before = (export_dir / "model.onnx.data").stat().st_mtime_ns
    done = run_export_python("-m", "graphs.smollm2.export", "--out", str(export_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "export: reused" in done.stdout
    assert (export_dir / "model.onnx.data").stat().st_mtime_ns == before


@pytest.mark.slow
def test_tokenizer_in_folder_adds_no_bos_and_splits_digits(export_dir: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(export_dir / "tokenizer.json"))
    text = "Emma Woodhouse, in 1816.\n\nCHAPTER I"
    ids = tokenizer.encode(text).ids
    assert ids[0] != 1  # <|im_start|> is not prepended: the GGUF says add_bos_token = false
    assert tokenizer.decode(ids) == text
    digits = [tokenizer.id_to_token(i) for i in tokenizer.encode("1816").ids]
    assert digits == ["1", "8", "1", "6"]
    assert tokenizer.token_to_id("<|im_end|>") == 2


@pytest.mark.slow
def test_cached_decode_matches_one_prefill(export_dir: Path) -> None:
    """The graph's KV-cache path: 40-token prefill + 8 cached steps == one 48-token prefill, in ORT."""
    sys.path.insert(0, str(ROOT))
    from graphs.smollm2.ort_runner import OrtCausalLM

    runner = OrtCausalLM(export_dir / "model.onnx")
    ids = [int(i) for i in np.random.default_rng(0).integers(100, 40_000, size=48)]
    whole = runner.prefill(ids)
    split = np.concatenate([runner.prefill(ids[:40]), np.stack([runner.decode(t) for t in ids[40:]])])
    assert np.abs(split - whole).max() <= SPLIT_ATOL
    assert runner.length == 48 and runner.past["past_key_values.29.value"].shape == (1, 3, 48, 64)


def test_export_refuses_a_foreign_folder(tmp_path: Path) -> None:
    reason = export_env_missing()
    if reason:
        pytest.skip(reason)
    (tmp_path / "keep.txt").write_text("not an export")
    done = run_export_python("-m", "graphs.smollm2.export", "--out", str(tmp_path), timeout=120)
    assert done.returncode == 2
    assert "holds no export_manifest.json" in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "not an export"


@pytest.mark.slow
def test_gguf_tokenizer_matches_transformers_conversion() -> None:
    """Oracle for the rebuilt tokenizer: transformers' own GGUF conversion, minus the BOS it prepends."""
    reason = export_env_missing()
    if reason:
        pytest.skip(reason)
    script = """
import sys
from transformers import AutoTokenizer
from graphs.smollm2.gguf_source import find_gguf
from graphs.smollm2.hf_model import build_tokenizer, read_gguf_metadata
gguf = find_gguf()
ours = build_tokenizer(read_gguf_metadata(gguf))
theirs = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
text = sys.stdin.read()
a = ours(text, add_special_tokens=False).input_ids
b = theirs(text, add_special_tokens=False).input_ids
print(len(a), int(a == b), int(ours.decode(a) == text))
"""
    sample = (
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, "
        "seemed to unite some of the best blessings of existence; in 1816 she was twenty-one.\n\n"
        "  def f(x):\n\treturn x ** 2  # café, naïve, 東京, emoji 🙂 <|im_end|>\n"
    ) * 20
    done = subprocess.run(
        [str(EXPORT_PYTHON), "-c", script],
        input=sample,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    count, same, round_trip = (int(v) for v in done.stdout.split()[-3:])
    assert count > 500 and same == 1 and round_trip == 1


@pytest.mark.slow
def test_fetch_emma_from_debian(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("apt-get/dpkg missing: not a Debian-based system")
    if not EXPORT_PYTHON.is_file():
        pytest.skip(f"{EXPORT_PYTHON} missing (rdata lives there; run scripts/setup_export.sh)")
    out = tmp_path / "emma.txt"
    done = run_export_python("-m", "graphs.text.fetch", "--out", str(out), "--no-fallback", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("EMMA\n\nBy Jane Austen\n")
    assert "Emma Woodhouse, handsome, clever, and rich, with a comfortable home\n" in text
    assert 850_000 < len(text) < 920_000
    assert text.count("CHAPTER") >= 50
