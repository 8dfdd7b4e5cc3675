"""Pack SmolLM2's real float32 weights small enough to reach the device in a few calls, losslessly.

out/smollm2/model.onnx.data (651 MB float32) is the dequantized Q4_1 GGUF (Q8_0 embedding, float32 norms).
bench/gpu_e2e/weight_pack.py stores it again as block scales plus codes (the tied lm_head as the transpose
of the embedding), zlib on each array; this script writes that stream split into parts sized for the device
calls, a manifest, and the call sequence, then decodes the parts with the device's own unpacker and checks
that every byte of the data file comes back (np.array_equal on the raw bytes, and its SHA-256).

Output under --out (default build/e2e-real):
- models/weights_pack.json: manifest (tensors, parts with SHA-256, data size and SHA-256);
- packNN/weights.NN: the stream's parts, one folder per device call;
- calls.json, calls.md: the device calls (carry lists, commands, bytes per call vs the 64 MiB limit).

One device call carries at most 64 MiB: the travelling working tree (tracked + untracked-not-ignored files)
plus its carried paths. Parts therefore fill what the onnxruntime-gpu wheel parts (.device/ortgpu-e2e,
bench/gpu_e2e/README.md) leave of their calls, then the final call, then as few weight-only calls as needed.

    .venv/bin/python -m bench.gpu_e2e.pack_real_weights out/smollm2/model.onnx \
        --converted build/e2e-real/models/smollm2-tq4{,-w}/model.onnx
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.gpu_e2e.fill_weights import external_tensors
from bench.gpu_e2e.unpack_real_weights import MANIFEST_FORMAT, read_stream, rebuild, sha256_of
from bench.gpu_e2e.weight_pack import compress, encode_tensor

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
CALL_LIMIT = 64 * MIB
MANIFEST_ALLOWANCE = MIB  # the manifest is written after the plan; it is ~0.1 MiB
MIN_FOLDED_PART = MIB  # below this a wheel call takes no part
STASH_COMMAND = "bash bench/gpu_e2e/device_stash.sh"
FINAL_COMMAND = "bash bench/gpu_e2e/device_run.sh --real"


@dataclass
class DeviceCall:
    """One device call: fixed carried paths, the bytes they and the tree take, room left for a pack part."""

    carry: list[str]
    command: str
    fixed_bytes: int
    room: int
    part_bytes: int = 0
    part_dir: str | None = None
    notes: list[str] = field(default_factory=list)


def path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def travelling_tree_bytes(repo: Path) -> int:
    """Bytes of tracked and untracked-not-ignored files: what rides along with every device call."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, check=True, capture_output=True
    ).stdout
    paths = (repo / name for name in listed.decode().split("\0") if name)
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def plan_calls(
    repo: Path, tree: int, stream_bytes: int, wheel_dir: Path, final_fixed: list[str], margin: int
) -> list[DeviceCall]:
    """Device calls in order, each pack part (part_bytes) sized to leave `margin` under CALL_LIMIT."""
    wheel_parts = sorted(p for p in wheel_dir.glob("part*") if p.is_dir()) if wheel_dir.is_dir() else []

    def call(paths: list[Path], command: str, extra: int = 0) -> DeviceCall:
        fixed = tree + sum(path_bytes(p) for p in paths) + extra
        return DeviceCall(
            [str(p.relative_to(repo)) for p in paths], command, fixed, CALL_LIMIT - fixed - margin
        )

    wheel_calls = [call([p], STASH_COMMAND) for p in wheel_parts[:-1]]
    final_paths = wheel_parts[-1:] + [repo / p for p in final_fixed]
    final = call(final_paths, FINAL_COMMAND, MANIFEST_ALLOWANCE)
    left = stream_bytes
    for c in [*wheel_calls, final]:
        if c.room >= MIN_FOLDED_PART and left:
            c.part_bytes = min(c.room, left)
            left -= c.part_bytes
    extra_room = CALL_LIMIT - tree - margin
    count = math.ceil(left / extra_room) if left else 0
    extra_calls = []
    for i in range(count):
        c = call([], STASH_COMMAND)
        c.part_bytes = min(math.ceil(left / count), left - i * math.ceil(left / count))
        extra_calls.append(c)
    if final.room < 0:
        final.notes.append(f"over the limit by {-final.room} bytes")
    return [*wheel_calls, *extra_calls, final]


def widest_margin_plan(
    repo: Path, stream_bytes: int, wheel_dir: Path, final_fixed: list[str], min_margin: int
) -> tuple[list[DeviceCall], int]:
    """The plan with the fewest calls (at `min_margin`), then the largest margin (1/4 MiB steps) that still
    needs no more calls: the free room of every call, against the tree growing before the calls are made."""
    tree = travelling_tree_bytes(repo)
    fewest = plan_calls(repo, tree, stream_bytes, wheel_dir, final_fixed, min_margin)
    for margin in range(16 * MIB, min_margin, -MIB // 4):
        calls = plan_calls(repo, tree, stream_bytes, wheel_dir, final_fixed, margin)
        if len(calls) == len(fewest) and calls[-1].room >= 0:
            return calls, margin
    return fewest, min_margin


def check_calls(repo: Path, calls_json: Path) -> int:
    """Re-measure each planned call (tree as it is now + carried paths); 1 if one is over CALL_LIMIT."""
    tree = travelling_tree_bytes(repo)
    calls = [
        DeviceCall(c["carry"], c["command"], tree + sum(path_bytes(repo / p) for p in c["carry"]), 0)
        for c in json.loads(calls_json.read_text())
    ]
    print(describe_calls(calls, tree))
    missing = [p for c in calls for p in c.carry if not (repo / p).exists()]
    if missing:
        print(f"missing carried paths: {missing}")
    return 1 if missing or any(c.fixed_bytes > CALL_LIMIT for c in calls) else 0


def encode_stream(data: np.ndarray, tensors: list) -> tuple[list[dict], list[bytes]]:
    """Manifest entries and the compressed arrays, in data-file order."""
    entries, chunks, position = [], [], 0
    originals: dict[str, np.ndarray] = {}
    for name, shape, dtype, _location, offset, length in sorted(tensors, key=lambda t: t[4]):
        if dtype != np.float32:
            raise ValueError(f"{name}: {dtype} tensor; the pack handles float32 only")
        values = data[offset : offset + length].view(np.float32).reshape(shape)
        encoded = encode_tensor(values, originals)
        originals[name] = values
        arrays = []
        for key, array in encoded.arrays.items():
            payload = compress(array)
            arrays.append(
                {
                    "key": key,
                    "dtype": array.dtype.str,
                    "count": array.size,
                    "start": position,
                    "size": len(payload),
                }
            )
            chunks.append(payload)
            position += len(payload)
        entries.append(
            {
                "name": name,
                "offset": offset,
                "length": length,
                "shape": list(shape),
                "encoding": encoded.encoding,
                "params": encoded.params,
                "arrays": arrays,
            }
        )
    return entries, chunks


def check_shared_weights(original: Path, converted: Path) -> None:
    """Every external tensor of `converted` is the original's (name, shape, dtype, offset, length, file)."""
    mine = {t[0]: t[1:] for t in external_tensors(original)}
    for name, *entry in external_tensors(converted):
        if mine.get(name) != tuple(entry):
            raise ValueError(
                f"{converted}: external tensor {name} {entry} differs from {original}'s {mine.get(name)}"
            )


def write_parts(out: Path, stream: bytes, calls: list[DeviceCall]) -> list[dict]:
    for old in out.glob("pack[0-9][0-9]"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    parts, position = [], 0
    for index, c in enumerate(c for c in calls if c.part_bytes):
        folder = out / f"pack{index:02d}"
        folder.mkdir(parents=True)
        chunk = stream[position : position + c.part_bytes]
        (folder / f"weights.{index:02d}").write_bytes(chunk)
        position += len(chunk)
        c.part_dir = str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder)
        c.carry.append(c.part_dir)
        parts.append({"file": f"weights.{index:02d}", "size": len(chunk), "sha256": sha256_of(chunk)})
    if position != len(stream):
        raise RuntimeError(f"parts hold {position} of {len(stream)} stream bytes")
    return parts


def describe_calls(calls: list[DeviceCall], tree: int) -> str:
    lines = [
        f"Device calls, back to back on one warm machine (travelling tree {tree / MIB:.1f} MiB counted in "
        f"each; limit {CALL_LIMIT // MIB} MiB):",
        "",
        "| # | carry | command | MiB | MiB free |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, c in enumerate(calls, 1):
        total = c.fixed_bytes + c.part_bytes
        note = f" ({'; '.join(c.notes)})" if c.notes else ""
        lines.append(
            f"| {i} | `{json.dumps(c.carry)}` | `{c.command}` | {total / MIB:.1f} | "
            f"{(CALL_LIMIT - total) / MIB:.1f}{note} |"
        )
    return "\n".join(lines) + "\n"


def verify(data: np.ndarray, manifest: dict, out: Path) -> float:
    """Decode the written parts with the device's unpacker; every byte must equal the original's."""
    start = time.perf_counter()
    part_dirs = sorted(out.glob("pack[0-9][0-9]"))
    rebuilt = rebuild(manifest, read_stream(manifest, part_dirs))
    if not np.array_equal(rebuilt, data):
        differ = np.flatnonzero(rebuilt != data)
        raise RuntimeError(
            f"unpacked data differs from the original at {differ.size} bytes, first {differ[0]}"
        )
    if sha256_of(rebuilt) != manifest["data_sha256"]:
        raise RuntimeError("unpacked data hashes differently from the original")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model", type=Path, nargs="?", help="the exported SmolLM2 model.onnx (weights beside it)"
    )
    parser.add_argument("--converted", type=Path, nargs="*", default=[], help="graphs that share its weights")
    parser.add_argument("--out", type=Path, default=REPO / "build/e2e-real")
    parser.add_argument("--wheel-parts", type=Path, default=REPO / ".device/ortgpu-e2e")
    parser.add_argument(
        "--final-carry",
        nargs="*",
        default=["build/e2e/lib", "build/e2e-real/models"],
        help="paths (from the repo root) the final call carries besides the last wheel part and a pack part",
    )
    parser.add_argument(
        "--min-margin-mib", type=float, default=1.0, help="room kept free in every call (at least)"
    )
    parser.add_argument(
        "--check-calls", action="store_true", help="only re-measure the calls of OUT/calls.json against now"
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.check_calls:
        return check_calls(REPO, out / "calls.json")
    if args.model is None:
        parser.error("the model is required unless --check-calls")
    start = time.perf_counter()

    tensors = external_tensors(args.model)
    locations = {t[3] for t in tensors}
    if len(locations) != 1:
        raise SystemExit(f"{args.model}: weights in {len(locations)} files {sorted(locations)}; expected one")
    data_path = args.model.parent / locations.pop()
    for graph in args.converted:
        check_shared_weights(args.model, graph)
    data = np.fromfile(data_path, dtype=np.uint8)
    entries, chunks = encode_stream(data, tensors)
    stream = b"".join(chunks)
    encode_s = time.perf_counter() - start

    calls, margin = widest_margin_plan(
        REPO, len(stream), args.wheel_parts, args.final_carry, int(args.min_margin_mib * MIB)
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": str(args.model),
        "data_file": data_path.name,
        "data_size": int(data.size),
        "data_sha256": sha256_of(data),
        "parts": write_parts(out, stream, calls),
        "tensors": entries,
    }
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "models/weights_pack.json").write_text(json.dumps(manifest, indent=1) + "\n")
    verify_s = verify(data, manifest, out)

    tree = travelling_tree_bytes(REPO)
    table = describe_calls(calls, tree)
    (out / "calls.md").write_text(table)
    (out / "calls.json").write_text(
        json.dumps([{"carry": c.carry, "command": c.command} for c in calls], indent=1) + "\n"
    )
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["encoding"]] = counts.get(entry["encoding"], 0) + 1
    exceptions = sum(a["count"] for e in entries for a in e["arrays"] if a["key"] == "exception_blocks")
    print(
        f"pack_real_weights: {data.size / MIB:.1f} MiB float32 -> {len(stream) / MIB:.2f} MiB in "
        f"{len(manifest['parts'])} parts; encodings {counts}; {exceptions} exception blocks; "
        f"encode {encode_s:.0f} s, verified byte for byte (SHA-256 {manifest['data_sha256'][:16]}...) "
        f"in {verify_s:.0f} s; calls planned with {margin / MIB:.2f} MiB free at least"
    )
    print(table)
    over = [i + 1 for i, c in enumerate(calls) if c.fixed_bytes + c.part_bytes > CALL_LIMIT]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
