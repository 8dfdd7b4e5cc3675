"""Deployment targets of `tqexport build --target` and where the plugin library is looked for."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PLUGIN_LIBRARY_NAME = "libtqexport_trt.so"


@dataclass(frozen=True)
class Target:
    """One GPU family an engine is built for. TensorRT engines are specific to the SM they were built on."""

    name: str
    description: str
    compute_capability: str  # as nvidia-smi --query-gpu=compute_cap prints it
    cuda_arch: str  # CMAKE_CUDA_ARCHITECTURES entry for the plugin library


TARGETS: dict[str, Target] = {
    "h100": Target("h100", "NVIDIA H100 / H200 (Hopper, x86-64)", "9.0", "90a"),
    "orin": Target("orin", "Jetson AGX Orin (Ampere, aarch64, JetPack 6)", "8.7", "87"),
    "thor": Target("thor", "Jetson Thor (Blackwell, aarch64, JetPack 7)", "11.0", "110"),
}


def find_plugin_library(explicit: str | None = None) -> Path | None:
    """The plugin library to load: --plugin-lib, $TQEXPORT_TRT_PLUGIN, the installed package, then build/."""
    candidates: list[Path] = []
    if explicit:
        return Path(explicit)
    env = os.environ.get("TQEXPORT_TRT_PLUGIN")
    if env:
        return Path(env)
    package_root = Path(__file__).resolve().parents[1]
    candidates.append(package_root / "_native" / PLUGIN_LIBRARY_NAME)
    repo_root = package_root.parent
    candidates.extend(sorted((repo_root / "build").glob(f"*/lib/{PLUGIN_LIBRARY_NAME}")))
    for path in candidates:
        if path.is_file():
            return path
    return None
