"""Issue 6's table: fidelity techniques on SmolLM2, each alone and combined, against a rotated-int4 baseline.

    .venv/bin/python bench/fidelity_table.py [--model out/smollm2/model.onnx] [--text out/text/emma.txt]
        [--calibration out/calibration/smollm2-jargon.json]
        [--calibration-window out/calibration/smollm2-jargon-window.json]
        [--prefill 2048 --steps 256] [--out out/fidelity]

Every row is a real `tqexport convert` of the model (the int4 baseline is an original model whose new K/V go
through Hadamard + per-vector asymmetric int4 before the cache), decoded through ORT CPU with the same tokens:
prefill P, then N teacher-forced single-token cached steps (tqexport.eval.compare.compare_many). Bits per
element count every byte of the cache at T = P + N: codes, float16 norms, and the float16 sink/window tokens.
The calibration JSONs come from `tqexport calibrate` on text other than the evaluation text (the Jargon File):

    tqexport calibrate out/smollm2/model.onnx --text jargon.txt -o out/calibration/smollm2-jargon.json \
        --sensitivity
    tqexport calibrate out/smollm2/model.onnx --text jargon.txt \
        -o out/calibration/smollm2-jargon-window.json --sensitivity --tokens 2048 --sequence-tokens 256 \
        --norm-correction --sink-tokens 4 --recent-window 32 \
        --bits 1 2 16@3+48@2 16@4+48@2 3 16@5+48@2 16@6+48@2 16@5+48@3 4

The first measures integer widths with every token compressed; the second measures part specs (outlier
channels at more bits) the way the combination runs: norm correction on, sinks and window exact, KL scored
on the window positions of 8 sequences of 256 tokens.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.rotated_int4_baseline import bits_per_element, build_baseline  # noqa: E402
from tqexport.eval.compare import compare_many  # noqa: E402
from tqexport.eval.tokens import Tokenizer, windows  # noqa: E402

BASELINE = "Hadamard + per-vector int4 (baseline)"


def rows(calibration: str, calibration_window: str, context: int) -> list[tuple[str, list[str]]]:
    cal = ["--calibration", calibration]
    budget = ["--budget-context", str(context)]
    window = ["--norm-correction", "--sink-tokens", "4", "--recent-window", "32"]
    combo = [*window, *cal, *budget]
    three = ["--norm-correction", *cal, *budget, "--bits-budget", "3.0"]
    split = [*window, "--calibration", calibration_window, *budget]
    return [
        ("TurboQuant K4 V4", ["--key-bits", "4", "--value-bits", "4"]),
        ("TurboQuant K3 V3", ["--key-bits", "3", "--value-bits", "3"]),
        ("K4 V4 + 4 sink tokens", ["--key-bits", "4", "--value-bits", "4", "--sink-tokens", "4"]),
        ("K4 V4 + recent window 32", ["--key-bits", "4", "--value-bits", "4", "--recent-window", "32"]),
        ("K4 V4 + norm correction", ["--key-bits", "4", "--value-bits", "4", "--norm-correction"]),
        ("K3.5 V3.5 outlier split (calibrated)", ["--key-bits", "3.5", "--value-bits", "3.5", *cal]),
        ("per-layer bits, budget 3.75", ["--bits-budget", "3.75", *cal, *budget]),
        ("combination, budget 4.0", [*combo, "--bits-budget", "4.0"]),
        ("combination, budget 3.5", [*combo, "--bits-budget", "3.5"]),
        ("combination, budget 3.0", [*combo, "--bits-budget", "3.0"]),
        # other windows under the 3.0 budget (below ~3 bits the float16 window competes with the codes)
        ("budget 3.0, 4 sinks + 16 recent", [*three, "--sink-tokens", "4", "--recent-window", "16"]),
        ("budget 3.0, 8 sinks + 24 recent", [*three, "--sink-tokens", "8", "--recent-window", "24"]),
        ("budget 3.0, 4 sinks + 64 recent", [*three, "--sink-tokens", "4", "--recent-window", "64"]),
        # part specs: outlier channels at more bits (16@5+48@2: 16 channels at 5 bits, 48 at 2)
        (
            "K 16@5+48@2 V 2 + norm corr. + 4 sinks + 32 recent",
            [*split, "--key-bits", "16@5+48@2", "--value-bits", "2"],
        ),
        ("combination + part specs, budget 3.0", [*split, "--bits-budget", "3.0"]),
    ]


def convert(model: Path, out: Path, args: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tqexport", "convert", str(model), "-o", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"convert failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("out/smollm2/model.onnx"))
    parser.add_argument("--text", type=Path, default=Path("out/text/emma.txt"))
    parser.add_argument("--calibration", type=Path, default=Path("out/calibration/smollm2-jargon.json"))
    parser.add_argument(
        "--calibration-window", type=Path, default=Path("out/calibration/smollm2-jargon-window.json")
    )
    parser.add_argument("--prefill", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--only", nargs="*", default=None, help="row names to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path("out/fidelity"))
    args = parser.parse_args()
    context = args.prefill + args.steps
    all_rows = rows(str(args.calibration), str(args.calibration_window), context)
    configs = [r for r in all_rows if not args.only or r[0] in args.only]
    paths = []
    for i, (name, flags) in enumerate(configs):
        path = args.out / f"row{i}" / "model.onnx"
        start = time.time()
        convert(args.model, path, flags)
        print(f"converted '{name}' in {time.time() - start:.0f} s", flush=True)
        paths.append(path)
    baseline = build_baseline(args.model, args.out / "int4" / "model.onnx")
    ids = Tokenizer.for_model(args.model).encode(args.text.read_text(encoding="utf-8"))
    ids_BT = windows(ids, 1, context + 1)
    start = time.time()
    reports = compare_many(args.model, [*paths, baseline], ids_BT, args.prefill, args.steps)
    print(f"decoded {len(paths) + 2} models in {time.time() - start:.0f} s", flush=True)
    head_dim = json.loads((args.model.parent / "config.json").read_text()).get("head_dim", 64)
    table = []
    for (name, flags), report in zip([*configs, (BASELINE, [])], reports, strict=True):
        d, s = report.as_dict()["decode"], report.as_dict()["storage"]
        bits = bits_per_element(head_dim) if name == BASELINE else s["converted_bits_per_element"]
        table.append({"config": name, "flags": flags, "bits": bits, **d})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    lines = [
        f"| config | bits/elem at T={context} | ppl ratio | KL mean [nats] | top-1 |",
        "|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['config']} | {r['bits']:.3f} | {r['ppl_ratio']:.4f} | {r['kl_mean']:.4f} | "
            f"{r['top1_agreement']:.3f} |"
        )
    md = (
        "\n".join(lines)
        + f"\n\nOriginal perplexity over the {args.steps + 1} scored positions: "
        + (f"{table[0]['ppl_original']:.3f}\n")
    )
    (args.out / "table.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
