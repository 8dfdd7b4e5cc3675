"""Rebuild SmolLM2's model.onnx.data from the weight pack of pack_real_weights.py (numpy only, on the device).

The pack is a manifest (weights_pack.json: every tensor's offset, shape, encoding and where its arrays lie in
the stream) and the stream itself, split into files weights.NN that travel in separate device calls. This
reads the parts from the given folders (each checked against the SHA-256 in the manifest), decodes every
tensor with bench/gpu_e2e/weight_pack.py, writes the data file and checks its SHA-256 against the packer's.
`--link-into` hard-links the result into the converted models' folders (their graphs keep the original's
tensor names, offsets and file name).

    python3 -m bench.gpu_e2e.unpack_real_weights --manifest M.json --parts DIR [DIR ...] \
        --out model.onnx.data [--link-into FOLDER ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.gpu_e2e.weight_pack import EncodedTensor, decode_tensor, decompress

MANIFEST_FORMAT = "tqexport-e2e-weight-pack/1"


class PackError(RuntimeError):
    """A part is missing or corrupt, or the rebuilt file does not hash to the packer's SHA-256."""


def sha256_of(data: bytes | np.ndarray) -> str:
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def read_stream(manifest: dict, part_dirs: list[Path]) -> bytes:
    """The concatenated parts, each found in one of `part_dirs` and checked for size and SHA-256."""
    chunks = []
    for part in manifest["parts"]:
        found = [d / part["file"] for d in part_dirs if (d / part["file"]).is_file()]
        if not found:
            raise PackError(
                f"part {part['file']} ({part['size']} bytes) is in none of {[str(d) for d in part_dirs]}: "
                "its device call did not run on this machine (a fresh machine loses /root)"
            )
        data = found[0].read_bytes()
        if len(data) != part["size"] or sha256_of(data) != part["sha256"]:
            raise PackError(f"{found[0]}: {len(data)} bytes, SHA-256 differs from the manifest's")
        chunks.append(data)
    return b"".join(chunks)


def rebuild(manifest: dict, stream: bytes) -> np.ndarray:
    """The data file's bytes (uint8) decoded from the stream."""
    if manifest.get("format") != MANIFEST_FORMAT:
        raise PackError(f"manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    data = np.zeros(manifest["data_size"], np.uint8)
    referenced = {t["params"]["source"] for t in manifest["tensors"] if t["encoding"] == "transpose_of"}
    decoded: dict[str, np.ndarray] = {}
    for tensor in manifest["tensors"]:
        arrays = {
            a["key"]: decompress(stream[a["start"] : a["start"] + a["size"]], a["dtype"], a["count"])
            for a in tensor["arrays"]
        }
        encoded = EncodedTensor(tensor["encoding"], tuple(tensor["shape"]), tensor["params"], arrays)
        values = decode_tensor(encoded, decoded)
        raw = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
        if raw.size != tensor["length"]:
            raise PackError(f"{tensor['name']}: decoded {raw.size} bytes, manifest says {tensor['length']}")
        data[tensor["offset"] : tensor["offset"] + tensor["length"]] = raw
        if tensor["name"] in referenced:
            decoded[tensor["name"]] = values
    return data


def unpack(manifest_path: Path, part_dirs: list[Path], out: Path) -> dict:
    manifest = json.loads(manifest_path.read_text())
    data = rebuild(manifest, read_stream(manifest, part_dirs))
    digest = sha256_of(data)
    if digest != manifest["data_sha256"]:
        raise PackError(f"rebuilt data hashes to {digest}, the packer recorded {manifest['data_sha256']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    data.tofile(partial)
    partial.replace(out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--parts", type=Path, nargs="+", required=True, help="folders holding weights.NN")
    parser.add_argument("--out", type=Path, required=True, help="the data file to write")
    parser.add_argument("--link-into", type=Path, nargs="*", default=[], help="folders to hard-link it into")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = unpack(args.manifest, args.parts, args.out)
    except PackError as error:
        print(f"unpack_real_weights: {error}", file=sys.stderr)
        return 3
    for folder in args.link_into:
        link = folder / args.out.name
        link.unlink(missing_ok=True)
        os.link(args.out, link)
    print(
        f"unpack_real_weights: {args.out} ({manifest['data_size']} bytes, "
        f"SHA-256 {manifest['data_sha256'][:16]}... ok) from {len(manifest['parts'])} parts "
        f"in {time.perf_counter() - start:.1f} s; "
        f"linked into {len(args.link_into)} folder(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
