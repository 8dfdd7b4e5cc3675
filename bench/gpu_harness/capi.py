"""Thin ctypes binding of build/gpu/libtq_kernels_harness.so (bench/gpu_harness/tq_capi.cc) on torch tensors.

Argument order mirrors tq_capi.cc: one int64 array (pointers as integers) and one double array.
Build the library with `bash plugins/kernels/build_standalone.sh`.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_LIBRARY = REPO / "build" / "gpu" / "libtq_kernels_harness.so"
CONCAT, BUFFER = 0, 1
MASK_F32, MASK_F16, MASK_BOOL = 0, 1, 2


class KernelError(RuntimeError):
    """A launcher returned a CUDA error; the message is the launcher's."""


@dataclass(frozen=True)
class Codec:
    """Codec parameters as the kernels see them (format.md section 2)."""

    head_dim: int
    part_sizes: tuple[int, ...]
    bits: tuple[int, ...]
    qjl: int = 0
    norm_correction: int = 0

    def fields(self) -> list[int]:
        sizes = list(self.part_sizes) + [0] * (4 - len(self.part_sizes))
        bits = list(self.bits) + [0] * (4 - len(self.bits))
        return [len(self.part_sizes), *sizes, *bits]

    @property
    def row_bytes(self) -> int:
        m = [b - self.qjl for b in self.bits]
        p = len(self.bits)
        codes = sum(mi * d // 8 for mi, d in zip(m, self.part_sizes, strict=True))
        return codes + self.qjl * (self.head_dim // 8 + 2 * p) + 2 * p


def library_path() -> Path:
    return Path(os.environ.get("TQ_KERNELS_LIB", DEFAULT_LIBRARY))


def _ptr(t) -> int:
    return 0 if t is None else int(t.data_ptr())


def _dtype_code(t) -> int:
    import torch

    if t.dtype == torch.float16:
        return 1
    if t.dtype == torch.float32:
        return 0
    raise TypeError(f"dtype {t.dtype}: float32 or float16 expected")


class Kernels:
    def __init__(self, path: Path | None = None) -> None:
        self.lib = ctypes.CDLL(str(path or library_path()))
        i64p = ctypes.POINTER(ctypes.c_int64)
        f64p = ctypes.POINTER(ctypes.c_double)
        self.lib.tqh_quantize.argtypes = [i64p, ctypes.c_void_p]
        self.lib.tqh_quantize.restype = ctypes.c_int
        self.lib.tqh_attention_workspace.argtypes = [i64p, f64p]
        self.lib.tqh_attention_workspace.restype = ctypes.c_int64
        if hasattr(self.lib, "tqh_attention_workspace_max"):  # absent from older builds (A/B baselines)
            self.lib.tqh_attention_workspace_max.argtypes = [i64p, f64p]
            self.lib.tqh_attention_workspace_max.restype = ctypes.c_int64
        self.lib.tqh_attention.argtypes = [i64p, f64p, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.tqh_attention.restype = ctypes.c_int
        self.lib.tqh_last_error.restype = ctypes.c_char_p
        if hasattr(self.lib, "tqh_rotation_is_hadamard"):  # absent from older builds (A/B baselines)
            self.lib.tqh_rotation_is_hadamard.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            self.lib.tqh_rotation_is_hadamard.restype = ctypes.c_int

    def rotation_is_hadamard(self, rotation) -> bool:
        """The launchers' host test (rotation_is_hadamard) on R ([heads, D, D] or [D, D], any device): whether
        attention(k_hadamard=True / v_hadamard=True) and quantize(hadamard=True) may be promised for it. False
        on builds without the test."""
        import numpy as np

        if not hasattr(self.lib, "tqh_rotation_is_hadamard"):
            return False
        host = rotation.detach().cpu().numpy() if hasattr(rotation, "detach") else np.asarray(rotation)
        host = np.ascontiguousarray(host, dtype=np.float32)
        d = host.shape[-1]
        heads = host.size // (d * d)
        return bool(self.lib.tqh_rotation_is_hadamard(host.ctypes.data, heads, d))

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise KernelError(f"{what}: {self.lib.tqh_last_error().decode()} (cudaError {rc})")

    @staticmethod
    def _stream() -> int:
        import torch

        return int(torch.cuda.current_stream().cuda_stream)

    # ------------------------------------------------------------------------------------------ quantize
    def quantize(
        self,
        codec: Codec,
        x,
        past_cache,
        rotation,
        codebook,
        qjl_matrix=None,
        past_window=None,
        past_lengths=None,
        *,
        cache_mode: int = CONCAT,
        sink_tokens: int = 0,
        recent_window: int = 0,
        present_cache=None,
        present_window=None,
        overflow_flag=None,
        hadamard: bool = False,
        constant_tables: bool = False,
    ):
        """Returns (present_cache, present_window); buffer mode may pass present_* = past_* (in place).
        hadamard: promise that `rotation` is Sylvester-Hadamard (QuantizeParams::rotation_hadamard; check it
        with rotation_is_hadamard first, a false promise gives wrong codes). constant_tables: promise that no
        kernel queued ahead on the stream writes `rotation` or `codebook` (QuantizeParams::constant_tables:
        the prefill kernel builds its tables before it waits for the previous kernel)."""
        import torch

        b, h, s, d = x.shape
        w = sink_tokens + recent_window
        rb = codec.row_bytes
        wd_old = past_window.shape[2] if past_window is not None else 0
        if cache_mode == CONCAT:
            t_new = past_cache.shape[2] + wd_old + s
            rows = t_new - min(t_new, w)
            wrows = min(t_new, w)
        else:
            rows = past_cache.shape[2]
            wrows = w
        if present_cache is None:
            present_cache = torch.empty((b, h, rows, rb), dtype=torch.uint8, device=x.device)
        if present_window is None and w > 0:
            present_window = torch.empty((b, h, wrows, d), dtype=x.dtype, device=x.device)
        args = [
            d,
            *codec.fields(),
            codec.qjl,
            codec.norm_correction,
            _dtype_code(x),
            b,
            h,
            s,
            _ptr(x),
            _ptr(past_cache),
            past_cache.shape[2],
            _ptr(present_cache),
            present_cache.shape[2],
            _ptr(rotation),
            rotation.shape[0],
            _ptr(codebook),
            _ptr(qjl_matrix),
            _ptr(past_window),
            wd_old,
            _ptr(present_window),
            present_window.shape[2] if present_window is not None else 0,
            _ptr(past_lengths),
            cache_mode,
            sink_tokens,
            recent_window,
            _ptr(overflow_flag),
            1 if hadamard else 0,
            1 if constant_tables else 0,
        ]
        arr = (ctypes.c_int64 * len(args))(*args)
        self._check(self.lib.tqh_quantize(arr, ctypes.c_void_p(self._stream())), "launch_quantize")
        return present_cache, present_window

    # ------------------------------------------------------------------------------------------ attention
    def _attention_args(
        self,
        k_codec: Codec,
        v_codec: Codec,
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
        out,
        scale,
        softcap,
        cache_mode,
        sink_tokens,
        recent_window,
        force_splits,
        k_hadamard=False,
        v_hadamard=False,
    ):
        import torch

        b, hq, s, d = q.shape
        if mask.dtype == torch.bool:
            mtype = MASK_BOOL
        elif mask.dtype == torch.float16:
            mtype = MASK_F16
        else:
            mtype = MASK_F32
        args = [
            d,
            *k_codec.fields(),
            k_codec.qjl,
            k_codec.norm_correction,
            *v_codec.fields(),
            v_codec.norm_correction,
            _dtype_code(q),
            b,
            hq,
            k_cache.shape[1],
            s,
            _ptr(q),
            _ptr(k_cache),
            _ptr(v_cache),
            k_cache.shape[2],
            _ptr(mask),
            mtype,
            mask.shape[0],
            mask.shape[1],
            mask.shape[3],
            _ptr(k_rotation),
            k_rotation.shape[0],
            _ptr(k_codebook),
            _ptr(v_rotation),
            v_rotation.shape[0],
            _ptr(v_codebook),
            _ptr(k_qjl_matrix),
            _ptr(k_window),
            _ptr(v_window),
            k_window.shape[2] if k_window is not None else 0,
            _ptr(past_lengths),
            cache_mode,
            sink_tokens,
            recent_window,
            _ptr(out),
            force_splits,
            1 if k_hadamard else 0,
            1 if v_hadamard else 0,
        ]
        return (ctypes.c_int64 * len(args))(*args), (ctypes.c_double * 2)(scale, softcap)

    def attention_workspace(
        self,
        k_codec: Codec,
        v_codec: Codec,
        q,
        k_cache,
        mask,
        k_rotation,
        v_rotation,
        k_window=None,
        *,
        sink_tokens: int = 0,
        recent_window: int = 0,
        upper_bound: bool = False,
    ) -> int:
        """Workspace bytes of a TQAttention call with these shapes (tensors may live on the meta device):
        attention_workspace_bytes, or with upper_bound attention_workspace_bytes_max."""
        args, fargs = self._attention_args(
            k_codec, v_codec, q, k_cache, k_cache, mask, k_rotation, None, v_rotation, None, None,
            k_window, k_window, None, q, 1.0, 0.0, CONCAT, sink_tokens, recent_window, 0,
        )  # fmt: skip
        fn = self.lib.tqh_attention_workspace_max if upper_bound else self.lib.tqh_attention_workspace
        return int(fn(args, fargs))

    def attention(
        self,
        k_codec: Codec,
        v_codec: Codec,
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
        scale: float,
        softcap: float = 0.0,
        cache_mode: int = CONCAT,
        sink_tokens: int = 0,
        recent_window: int = 0,
        force_splits: int = 0,
        k_hadamard: bool = False,
        v_hadamard: bool = False,
        out=None,
        workspace=None,
    ):
        import torch

        if out is None:
            out = torch.empty_like(q)
        args, fargs = self._attention_args(
            k_codec,
            v_codec,
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
            out,
            scale,
            softcap,
            cache_mode,
            sink_tokens,
            recent_window,
            force_splits,
            k_hadamard,
            v_hadamard,
        )
        need = self.lib.tqh_attention_workspace(args, fargs)
        if need <= 0:
            self._check(
                self.lib.tqh_attention(args, fargs, None, ctypes.c_void_p(self._stream())), "launch_attention"
            )
        if workspace is None or workspace.numel() < need:
            cached = getattr(self, "_workspace", None)
            if cached is None or cached.numel() < need:
                cached = torch.empty(int(need), dtype=torch.uint8, device=q.device)
                self._workspace = cached
            workspace = cached
        self._check(
            self.lib.tqh_attention(
                args, fargs, ctypes.c_void_p(workspace.data_ptr()), ctypes.c_void_p(self._stream())
            ),
            "launch_attention",
        )
        return out


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy()
