"""ctypes access to the C++ CPU kernels (plugins/cpu) through tests/cpu/capi_shim.cc, for tests and benches.

build_library() compiles plugins/cpu/*.cc plus the shim into a cached shared library with the same flags the
CMake build uses (-O2 -ffp-contract=off). quantize() and attention() mirror tqexport.codec.reference_ops.
"""

from __future__ import annotations

import ctypes
import hashlib
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "plugins" / "cpu").glob("*.cc")) + [Path(__file__).with_name("capi_shim.cc")]
HEADERS = sorted((REPO / "plugins" / "cpu").glob("*.h")) + [REPO / "plugins" / "common" / "tq_format.h"]

DTYPES = {
    np.dtype(np.float32): 0,
    np.dtype(np.float16): 1,
    np.dtype(np.bool_): 2,
    np.dtype(np.uint8): 3,
    np.dtype(np.int64): 4,
}


class CTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * 8),
    ]


class KernelError(RuntimeError):
    """The C++ kernel returned an error status."""


def _tensor(arr: np.ndarray | None) -> CTensor:
    t = CTensor()
    if arr is None:
        t.dtype = -1
        return t
    assert arr.flags.c_contiguous
    t.data = arr.ctypes.data if arr.size else None
    t.dtype = DTYPES[arr.dtype]
    t.ndim = arr.ndim
    for i, d in enumerate(arr.shape):
        t.shape[i] = d
    return t


_LIB: ctypes.CDLL | None = None


def build_library() -> ctypes.CDLL:
    global _LIB
    if _LIB is not None:
        return _LIB
    digest = hashlib.sha1()
    for f in SOURCES + HEADERS:
        digest.update(f.read_bytes())
    out = Path(tempfile.gettempdir()) / f"tq_cpu_test_{digest.hexdigest()[:16]}.so"
    if not out.exists():
        tmp = out.with_suffix(".tmp.so")
        cmd = [
            "g++",
            "-std=c++17",
            "-O2",
            "-shared",
            "-fPIC",
            "-ffp-contract=off",
            "-Wall",
            "-Wextra",
            "-Wno-unused-parameter",
            f"-I{REPO / 'plugins'}",
            *map(str, SOURCES),
            "-o",
            str(tmp),
            "-pthread",
        ]
        subprocess.run(cmd, check=True)
        tmp.rename(out)
    _LIB = ctypes.CDLL(str(out))
    return _LIB


def _codec_attrs(bits, part_sizes, qjl=0, norm_correction=0) -> ctypes.Array:
    bits, part_sizes = list(bits), list(part_sizes)
    vals = [
        len(bits),
        *(bits + [0] * (4 - len(bits))),
        *(part_sizes + [0] * (4 - len(part_sizes))),
        int(qjl),
        int(norm_correction),
    ]
    return (ctypes.c_int32 * 11)(*vals)


def simd_enabled() -> bool:
    return bool(build_library().tq_test_simd_enabled())


def quantize(
    x,
    past_cache,
    rotation,
    codebook,
    qjl_matrix=None,
    past_window=None,
    past_lengths=None,
    *,
    bits,
    part_sizes,
    qjl=0,
    norm_correction=0,
    rotation_kind=1,
    cache_mode=0,
    sink_tokens=0,
    recent_window=0,
):
    lib = build_library()
    ins = (CTensor * 7)(
        *[_tensor(a) for a in (x, past_cache, rotation, codebook, qjl_matrix, past_window, past_lengths)]
    )
    outs = (CTensor * 2)()
    cattrs = _codec_attrs(bits, part_sizes, qjl, norm_correction)
    cache = (ctypes.c_int32 * 3)(cache_mode, sink_tokens, recent_window)
    err = ctypes.create_string_buffer(1024)
    if lib.tq_test_quantize(cattrs, cache, ins, outs, 1, err, 1024):
        raise KernelError(err.value.decode())
    present = np.zeros(tuple(outs[0].shape[: outs[0].ndim]), np.uint8)
    window = np.zeros(tuple(outs[1].shape[: outs[1].ndim]), x.dtype) if outs[1].ndim else None
    outs = (CTensor * 2)(_tensor(present), _tensor(window))
    if lib.tq_test_quantize(cattrs, cache, ins, outs, 0, err, 1024):
        raise KernelError(err.value.decode())
    return present, window


def attention(
    q,
    k_cache,
    v_cache,
    mask,
    k_rotation,
    k_codebook,
    v_rotation,
    v_codebook,
    k_qjl_matrix=None,
    k_window=None,
    v_window=None,
    past_lengths=None,
    *,
    k_bits,
    k_part_sizes,
    v_bits,
    v_part_sizes,
    scale,
    k_qjl=0,
    softcap=0.0,
    cache_mode=0,
    sink_tokens=0,
    recent_window=0,
    threads=0,
    out=None,
):
    lib = build_library()
    arrays = (
        q,
        k_cache,
        v_cache,
        mask,
        k_rotation,
        k_codebook,
        v_rotation,
        v_codebook,
        k_qjl_matrix,
        k_window,
        v_window,
        past_lengths,
    )
    ins = (CTensor * 12)(*[_tensor(a) for a in arrays])
    if out is None:
        out = np.zeros(q.shape, q.dtype)
    o = _tensor(out)
    err = ctypes.create_string_buffer(1024)
    rc = lib.tq_test_attention(
        _codec_attrs(k_bits, k_part_sizes, k_qjl),
        _codec_attrs(v_bits, v_part_sizes),
        (ctypes.c_int32 * 3)(cache_mode, sink_tokens, recent_window),
        ctypes.c_float(scale),
        ctypes.c_float(softcap),
        threads,
        ins,
        ctypes.byref(o),
        err,
        1024,
    )
    if rc:
        raise KernelError(err.value.decode())
    return out
