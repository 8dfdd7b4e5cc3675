"""Native runtime support: locate the tqexport ORT custom-op / TensorRT plugin libraries and register them."""

from tqexport.runtime.library import (
    ORT_LIBRARY_ENV,
    TRT_LIBRARY_ENV,
    NativeLibraryNotFoundError,
    ort_library_path,
    register_with,
    trt_library_path,
)

__all__ = [
    "ORT_LIBRARY_ENV",
    "TRT_LIBRARY_ENV",
    "NativeLibraryNotFoundError",
    "ort_library_path",
    "register_with",
    "trt_library_path",
]
