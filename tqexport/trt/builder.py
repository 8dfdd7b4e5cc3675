"""Build a TensorRT engine from a converted model with the tensorrt Python module (`tqexport build`).

Unverified here: no TensorRT builder exists on the development or CI machines, so this path has never run;
its flags mirror `trtexec.trtexec_command`, which is the documented fallback.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tqexport.errors import MissingDependencyError, TqexportError, UsageError
from tqexport.trt.profiles import ShapeProfile
from tqexport.trt.targets import Target


class EngineBuildError(TqexportError):
    """TensorRT refused the network or the build failed (its log lines are in the message)."""

    exit_code = 8


def import_tensorrt():
    try:
        import tensorrt  # noqa: PLC0415 - heavy and optional: imported only when building
    except ImportError as exc:
        raise MissingDependencyError(f"the tensorrt Python module is not installed ({exc})") from exc
    return tensorrt


def local_compute_capability() -> str | None:
    """Compute capability of GPU 0 as nvidia-smi prints it ("9.0"), or None when unknown."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None
    return out or None


def check_target_matches_gpu(target: Target) -> None:
    cc = local_compute_capability()
    if cc is not None and cc != target.compute_capability:
        raise UsageError(
            f"--target {target.name} needs compute capability {target.compute_capability} "
            f"but this GPU is {cc}; "
            f"TensorRT engines only run on the SM they were built for: build on the target device"
        )


def build_engine(
    trt,
    model: Path,
    engine: Path,
    profile: ShapeProfile,
    plugin_library: Path,
    workspace_bytes: int | None = None,
) -> int:
    """Parse `model`, build with one optimization profile, write `engine`; returns the plan size in bytes."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    registry = builder.get_plugin_registry()
    if registry.load_library(str(plugin_library)) is None:
        raise EngineBuildError(f"TensorRT could not load the plugin library {plugin_library}")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"the ONNX parser rejected {model}: {errors}")
    config = builder.create_builder_config()
    config.set_preview_feature(trt.PreviewFeature.ALIASED_PLUGIN_IO_10_03, True)
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if profile.shapes:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.shapes.items():
            opt_profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(opt_profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build {model} (see the log above)")
    engine.write_bytes(bytes(plan))
    return plan.nbytes
