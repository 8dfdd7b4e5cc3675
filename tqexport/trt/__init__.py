"""TensorRT side of tqexport: engine build (`tqexport build`) and the equivalent trtexec command line.

The plugin library itself is C++ (`plugins/trt/`, CMake target `tqexport_trt`, file `libtqexport_trt.so`).
Nothing here imports `tensorrt` at module import time: `builder.build_engine` imports it lazily and a missing
TensorRT becomes a `MissingDependencyError` with the trtexec line to run instead.
"""

from tqexport.trt.profiles import DimRange, ShapeProfile, derive_profile
from tqexport.trt.targets import TARGETS, Target
from tqexport.trt.trtexec import trtexec_command

__all__ = ["TARGETS", "DimRange", "ShapeProfile", "Target", "derive_profile", "trtexec_command"]
