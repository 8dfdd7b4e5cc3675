"""Write a tiny 2-layer decoder with a KV cache (torch-SDPA-shaped attention) to the path given."""

import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.passes.builders import TinySpec, build_tiny_llm  # noqa: E402

onnx.save(build_tiny_llm(TinySpec(form="sdpa")), sys.argv[1])
print(f"wrote {sys.argv[1]}")
