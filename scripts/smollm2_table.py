"""Produce the README table "Results on SmolLM2": presets x QJL, original vs converted over a cached decode.

    .venv/bin/python scripts/smollm2_table.py [--model out/smollm2/model.onnx] [--text out/text/emma.txt]
        [--prefill 2048] [--steps 256] [--presets 2.5 3 3.5 4] [--out out/table]

Converts the model once per (preset, QJL off/on) with `tqexport convert`, then decodes the original once
and every converted model once on the same tokens (tqexport.eval.compare.compare_many), and writes
out/table/table.md and table.json. Run scripts/main.sh first (it exports the model and fetches the text).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tqexport.eval.compare import compare_many
from tqexport.eval.tokens import Tokenizer, windows


def convert(model: Path, out: Path, preset: str, qjl: bool, extra: list[str]) -> float:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "tqexport",
        "convert",
        str(model),
        "-o",
        str(out),
        "--preset",
        preset,
        *extra,
    ]
    if qjl:
        cmd.append("--qjl")
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"convert failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.time() - start


def markdown(rows: list[dict], prefill: int, steps: int) -> str:
    head = (
        "| preset | QJL | bits/elem (at T) | bits/elem (T to inf) | ppl original | ppl converted | ppl ratio "
        "| KL mean [nats] | KL max | top-1 |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        d, s = r["decode"], r["storage"]
        cells = [
            r["preset"],
            "on" if r["qjl"] else "off",
            f"{s['converted_bits_per_element']:.3f}",
            f"{s['converted_bits_per_element_long']:.3f}",
            f"{d['ppl_original']:.3f}",
            f"{d['ppl_converted']:.3f}",
            f"{d['ppl_ratio']:.4f}",
            f"{d['kl_mean']:.4f}",
            f"{d['kl_max']:.3f}",
            f"{d['top1_agreement']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    original_bits = rows[0]["storage"]["original_bits_per_element"]
    note = (
        f"\nTeacher-forced: prefill {prefill} tokens, then {steps} single-token cached decode steps; metrics "
        f"over the {steps + 1} predictions after the prefill. Original cache: {original_bits:.0f} bits/elem. "
        "bits/elem counts every byte of the cache (codes, QJL signs, float16 norms, full-precision window) "
        f"at T = {prefill + steps}."
    )
    return "\n".join(lines) + "\n" + note + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("out/smollm2/model.onnx"))
    parser.add_argument("--text", type=Path, default=Path("out/text/emma.txt"))
    parser.add_argument("--prefill", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--presets", nargs="+", default=["2.5", "3", "3.5", "4"])
    parser.add_argument("--qjl", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--convert-args", default="", help="extra tqexport convert flags, one string")
    parser.add_argument("--out", type=Path, default=Path("out/table"))
    args = parser.parse_args()

    configs = [(p, q == "on") for p in args.presets for q in args.qjl]
    paths = []
    for preset, qjl in configs:
        path = args.out / f"{preset}-qjl{'on' if qjl else 'off'}" / "model.onnx"
        seconds = convert(args.model, path, preset, qjl, args.convert_args.split())
        print(
            f"converted preset {preset} qjl {'on' if qjl else 'off'} in {seconds:.1f} s -> {path}", flush=True
        )
        paths.append(path)
    ids = Tokenizer.for_model(args.model).encode(args.text.read_text(encoding="utf-8"))
    ids_BT = windows(ids, 1, args.prefill + args.steps + 1)
    start = time.time()
    reports = compare_many(args.model, paths, ids_BT, args.prefill, args.steps)
    print(f"decoded {len(paths) + 1} models in {time.time() - start:.0f} s", flush=True)
    rows = [
        {"preset": preset, "qjl": qjl, **report.as_dict()}
        for (preset, qjl), report in zip(configs, reports, strict=True)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows, args.prefill, args.steps)
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
