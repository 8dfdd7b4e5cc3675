"""The trtexec command line equivalent to `tqexport build` (printed when the tensorrt module is missing)."""

from __future__ import annotations

import shlex
from pathlib import Path

from tqexport.trt.profiles import ShapeProfile
from tqexport.trt.targets import PLUGIN_LIBRARY_NAME

# Flags every tqexport engine needs, and why:
#   --stronglyTyped: cache tensors are INT8 bytes (TensorRT plugin I/O has no UINT8); a strongly typed network
#     keeps them INT8 without calibration scales and keeps float16/float32 exactly where the model put them.
#   --preview=+aliasedPluginIO1003: buffer-mode TQQuantize aliases present_cache/present_window to the past
#     inputs (IPluginV3OneBuildV2::getAliasedInput); without it TensorRT gives separate outputs and the plugin
#     copies the whole buffer every step (still correct, slower).
COMMON_FLAGS = ("--stronglyTyped", "--preview=+aliasedPluginIO1003")


def trtexec_command(
    model: Path,
    engine: Path,
    profile: ShapeProfile,
    plugin_library: Path | None,
    embed_plugin: bool = False,
    skip_inference: bool = True,
) -> list[str]:
    """argv of a trtexec call that builds `engine` from `model` with the tqexport plugins loaded.

    embed_plugin: load with --dynamicPlugins and serialize the library into the plan (version-compatible
    engines only, --vc); default --staticPlugins, so the runtime must load the library itself.
    """
    lib = str(plugin_library) if plugin_library is not None else f"/path/to/{PLUGIN_LIBRARY_NAME}"
    argv = ["trtexec", f"--onnx={model}", f"--saveEngine={engine}", *COMMON_FLAGS]
    if embed_plugin:
        argv += [f"--dynamicPlugins={lib}", f"--setPluginsToSerialize={lib}", "--vc"]
    else:
        argv.append(f"--staticPlugins={lib}")
    if profile.shapes:
        argv += [
            f"--minShapes={profile.spec(0)}",
            f"--optShapes={profile.spec(1)}",
            f"--maxShapes={profile.spec(2)}",
        ]
    if skip_inference:
        argv.append("--skipInference")
    return argv


def format_command(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
