"""Find the KV-cache graph I/O of a decoder model and build its empty initial caches.

Works for original models (float caches [B, Hkv, T, D]) and converted ones (docs/format.md section 7 and 9:
uint8 compressed caches [B, Hkv, Tc, row_bytes] plus optional full-precision windows `<cache name>_window`
[B, Hkv, Wd, D]). A past input is paired with the present output whose name has the same suffix after the
`past_key_values.` / `past.` prefix and the `present.` / `present_key_values.` prefix, so
`past_key_values.3.key` <-> `present.3.key` and `past_key_values.3.key_window` <-> `present.3.key_window`.

Letters: B batch, Hkv kv heads, T cached tokens, D head dim (docs/format.md section 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tqexport.errors import UnsupportedError

PAST_PREFIXES = ("past_key_values.", "past_key_values_", "past.", "past_")
PRESENT_PREFIXES = ("present_key_values.", "present_key_values_", "present.", "present_")

ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(np.bool_),
}


class CacheLayoutError(UnsupportedError, ValueError):
    """The model's cache inputs and outputs cannot be paired or sized."""


def _suffix(name: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def ort_dtype(type_str: str, name: str) -> np.dtype:
    try:
        return ORT_DTYPES[type_str]
    except KeyError:
        raise CacheLayoutError(f"graph I/O {name!r} has unsupported type {type_str}") from None


@dataclass(frozen=True)
class CacheSlot:
    """One past input and the present output that feeds it on the next step."""

    past_name: str
    present_name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]  # as ORT reports it: ints for static dims

    @property
    def is_window(self) -> bool:
        return self.past_name.endswith("_window")

    @property
    def is_compressed(self) -> bool:
        return self.dtype == np.uint8

    def static_dim(self, axis: int) -> int | None:
        dim = self.shape[axis]
        return dim if isinstance(dim, int) and dim >= 0 else None

    def empty(self, batch: int, head_dim_hint: int | None = None, capacity: int | None = None) -> np.ndarray:
        """The initial past: [B, Hkv, T0, last]. T0 is the time axis when static (a buffer-mode window, W),
        else `capacity` for a compressed buffer-mode cache, else 0 (concat mode grows from empty).

        A symbolic last axis (onnxruntime-genai names it kv_cache_dim) of a float cache takes `head_dim_hint`.
        """
        if len(self.shape) != 4:
            raise CacheLayoutError(f"cache input {self.past_name!r} has rank {len(self.shape)}, expected 4")
        heads, last = self.static_dim(1), self.static_dim(3)
        if last is None and not self.is_compressed:
            last = head_dim_hint
        if heads is None or last is None:
            raise CacheLayoutError(
                f"cache input {self.past_name!r} shape {list(self.shape)}: axes 1 (Hkv) and 3 "
                "(D or row_bytes) must be static (or D given by the model folder's config.json)"
            )
        time = self.static_dim(2)
        if time is None:
            time = capacity if capacity is not None and self.is_compressed and not self.is_window else 0
        return np.zeros((batch, heads, time, last), dtype=self.dtype)


@dataclass(frozen=True)
class CacheLayout:
    """Cache slots of a model, plus the names of its other inputs and its logits output."""

    slots: tuple[CacheSlot, ...]
    other_inputs: tuple[str, ...]
    logits_name: str

    @classmethod
    def from_io(cls, inputs: list, outputs: list) -> CacheLayout:
        """Build from ORT NodeArg lists (anything with .name, .type and .shape)."""
        present_by_suffix: dict[str, str] = {}
        for out in outputs:
            suffix = _suffix(out.name, PRESENT_PREFIXES)
            if suffix is not None:
                present_by_suffix[suffix] = out.name
        slots: list[CacheSlot] = []
        others: list[str] = []
        for arg in inputs:
            suffix = _suffix(arg.name, PAST_PREFIXES)
            if suffix is None:
                others.append(arg.name)
                continue
            if suffix not in present_by_suffix:
                raise CacheLayoutError(
                    f"cache input {arg.name!r} has no matching present output (looked for "
                    f"{[p + suffix for p in PRESENT_PREFIXES]})"
                )
            slots.append(
                CacheSlot(
                    arg.name, present_by_suffix[suffix], ort_dtype(arg.type, arg.name), tuple(arg.shape)
                )
            )
        logits = [out.name for out in outputs if "logits" in out.name]
        if not logits:
            raise CacheLayoutError(f"no logits output among {[o.name for o in outputs]}")
        return cls(tuple(slots), tuple(others), logits[0])

    @property
    def cache_slots(self) -> tuple[CacheSlot, ...]:
        """The caches proper (compressed or float), without windows."""
        return tuple(s for s in self.slots if not s.is_window)

    @property
    def window_slots(self) -> tuple[CacheSlot, ...]:
        return tuple(s for s in self.slots if s.is_window)

    @property
    def is_converted(self) -> bool:
        return any(s.is_compressed for s in self.slots)

    def empty_past(
        self, batch: int, head_dim_hint: int | None = None, capacity: int | None = None
    ) -> dict[str, np.ndarray]:
        """Initial past tensors; `capacity` sizes buffer-mode compressed caches (zeroed, rows unused)."""
        return {slot.past_name: slot.empty(batch, head_dim_hint, capacity) for slot in self.slots}
