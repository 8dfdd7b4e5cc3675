"""NumPy reference implementations of the ops TQQuantize and TQAttention (format.md sections 7 and 8).

They mirror the ONNX ops input for input and attribute for attribute, and are the referee every other
implementation (C++ CPU, CUDA, TensorRT) is tested against. float64 inside.
"""

from __future__ import annotations

import numpy as np

from tqexport.codec.codec import dequantize_rotated, qjl_correction, quantize_rows
from tqexport.codec.config import FORMAT_VERSION, CodecConfig

CONCAT, BUFFER = 0, 1


class ReferenceOpError(ValueError):
    """An input breaks the op contract."""


def _config(head_dim: int, bits, part_sizes, qjl: int = 0, norm_correction: int = 0, rotation_kind: int = 1):
    return CodecConfig(
        head_dim=head_dim,
        part_sizes=tuple(part_sizes),
        bits=tuple(bits),
        qjl=bool(qjl),
        norm_correction=bool(norm_correction),
        rotation="hadamard" if rotation_kind == 1 else "dense",
    )


def token_place(t: int, total: int, sink_tokens: int, recent_window: int) -> tuple[str, int]:
    """('window', slot) or ('compressed', row) for logical token t of a sequence of `total` tokens."""
    if t < sink_tokens:
        return "window", t
    if recent_window > 0 and t >= total - recent_window:
        return "window", sink_tokens + (t - sink_tokens) % recent_window
    return "compressed", t - sink_tokens


def _compressed_range(t_old: int, t_new: int, sink_tokens: int, recent_window: int) -> range:
    """Tokens that become compressed in a step taking a sequence from t_old to t_new tokens."""
    return range(max(sink_tokens, t_old - recent_window), max(sink_tokens, t_new - recent_window))


def _check_version(format_version: int) -> None:
    if format_version != FORMAT_VERSION:
        raise ReferenceOpError(f"format_version={format_version}: this build reads version {FORMAT_VERSION}")


def _step_one_sequence(
    x_HSD: np.ndarray,
    cache_HTR: np.ndarray,
    window_HWD: np.ndarray | None,
    t_old: int,
    config: CodecConfig,
    rotation: np.ndarray,
    codebook: np.ndarray,
    qjl_matrix: np.ndarray | None,
    sink_tokens: int,
    recent_window: int,
    append: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply one step to one sequence; returns (cache, window). append=True grows the cache (concat mode)."""
    s = x_HSD.shape[1]
    t_new = t_old + s
    new_tokens = list(_compressed_range(t_old, t_new, sink_tokens, recent_window))
    if new_tokens:
        sources = []
        for t in new_tokens:
            if t < t_old:
                assert window_HWD is not None
                _, slot = token_place(t, t_old, sink_tokens, recent_window)
                sources.append(window_HWD[:, slot])
            else:
                sources.append(x_HSD[:, t - t_old])
        vecs = np.stack(sources, axis=1)[None]  # [1, H, n, D]
        rows = quantize_rows(vecs, config, rotation, codebook, qjl_matrix)[0]
        if append:
            cache_HTR = np.concatenate([cache_HTR, rows], axis=1)
        else:
            first, last = new_tokens[0] - sink_tokens, new_tokens[-1] - sink_tokens
            if last >= cache_HTR.shape[1]:
                raise ReferenceOpError(
                    f"buffer overflow: compressed row {last} needed, capacity is {cache_HTR.shape[1]}"
                )
            cache_HTR = cache_HTR.copy()
            cache_HTR[:, first : last + 1] = rows
    if window_HWD is not None:
        w = sink_tokens + recent_window
        rows_needed = min(t_new, w) if append else w
        new_window = np.zeros((x_HSD.shape[0], rows_needed, x_HSD.shape[2]), dtype=window_HWD.dtype)
        keep = min(window_HWD.shape[1], rows_needed)
        new_window[:, :keep] = window_HWD[:, :keep]
        for t in range(t_old, t_new):
            home, slot = token_place(t, t_new, sink_tokens, recent_window)
            if home == "window":
                new_window[:, slot] = x_HSD[:, t - t_old]
        window_HWD = new_window
    return cache_HTR, window_HWD


def tq_quantize(
    x: np.ndarray,
    past_cache: np.ndarray,
    rotation: np.ndarray,
    codebook: np.ndarray,
    qjl_matrix: np.ndarray | None = None,
    past_window: np.ndarray | None = None,
    past_lengths: np.ndarray | None = None,
    *,
    bits,
    part_sizes,
    qjl: int = 0,
    norm_correction: int = 0,
    rotation_kind: int = 1,
    cache_mode: int = CONCAT,
    sink_tokens: int = 0,
    recent_window: int = 0,
    format_version: int = FORMAT_VERSION,
) -> tuple[np.ndarray, np.ndarray | None]:
    _check_version(format_version)
    config = _config(x.shape[-1], bits, part_sizes, qjl, norm_correction, rotation_kind)
    if x.ndim != 4:
        raise ReferenceOpError(f"x must be [B, Hkv, S, D], got {list(x.shape)}")
    b, h, _, _ = x.shape
    if past_cache.ndim != 4 or past_cache.shape[:2] != (b, h) or past_cache.shape[3] != config.row_bytes:
        raise ReferenceOpError(
            f"past_cache must be [B={b}, Hkv={h}, T, row_bytes={config.row_bytes}], "
            f"got {list(past_cache.shape)}"
        )
    w = sink_tokens + recent_window
    if (past_window is not None) != (w > 0):
        raise ReferenceOpError(f"past_window must be given iff sink_tokens + recent_window > 0 (W={w})")
    if config.qjl and qjl_matrix is None:
        raise ReferenceOpError("qjl=1 needs qjl_matrix")
    if cache_mode == CONCAT:
        wd = past_window.shape[2] if past_window is not None else 0
        t_old = past_cache.shape[2] + wd
        if wd != min(t_old, w):
            raise ReferenceOpError(f"past_window has {wd} rows; min(T={t_old}, W={w}) expected")
        caches, windows = [], []
        for bi in range(b):
            c, wnd = _step_one_sequence(
                x[bi],
                past_cache[bi],
                None if past_window is None else past_window[bi],
                t_old,
                config,
                rotation,
                codebook,
                qjl_matrix,
                sink_tokens,
                recent_window,
                append=True,
            )
            caches.append(c)
            windows.append(wnd)
        present_window = np.stack(windows) if past_window is not None else None
        return np.stack(caches), present_window
    if cache_mode != BUFFER:
        raise ReferenceOpError(f"cache_mode={cache_mode}: must be 0 (concat) or 1 (buffer)")
    if past_lengths is None or past_lengths.shape != (b,):
        raise ReferenceOpError(f"buffer mode needs past_lengths [B={b}]")
    if past_window is not None and past_window.shape[2] != w:
        raise ReferenceOpError(f"buffer mode past_window must have W={w} rows, got {past_window.shape[2]}")
    caches, windows = [], []
    for bi in range(b):
        c, wnd = _step_one_sequence(
            x[bi],
            past_cache[bi],
            None if past_window is None else past_window[bi],
            int(past_lengths[bi]),
            config,
            rotation,
            codebook,
            qjl_matrix,
            sink_tokens,
            recent_window,
            append=False,
        )
        caches.append(c)
        windows.append(wnd)
    return np.stack(caches), (np.stack(windows) if past_window is not None else None)


def _rot(rotation: np.ndarray, g: int) -> np.ndarray:
    return rotation[0 if rotation.shape[0] == 1 else g].astype(np.float64)


def tq_attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    mask: np.ndarray,
    k_rotation: np.ndarray,
    k_codebook: np.ndarray,
    v_rotation: np.ndarray,
    v_codebook: np.ndarray,
    k_qjl_matrix: np.ndarray | None = None,
    k_window: np.ndarray | None = None,
    v_window: np.ndarray | None = None,
    past_lengths: np.ndarray | None = None,
    *,
    k_bits,
    k_part_sizes,
    v_bits,
    v_part_sizes,
    scale: float,
    k_qjl: int = 0,
    softcap: float = 0.0,
    cache_mode: int = CONCAT,
    sink_tokens: int = 0,
    recent_window: int = 0,
    format_version: int = FORMAT_VERSION,
) -> np.ndarray:
    _check_version(format_version)
    bsz, hq, s, d = q.shape
    hkv = k_cache.shape[1]
    if hq % hkv:
        raise ReferenceOpError(f"query heads {hq} are not a multiple of kv heads {hkv}")
    group = hq // hkv
    k_cfg = _config(d, k_bits, k_part_sizes, k_qjl)
    v_cfg = _config(d, v_bits, v_part_sizes, 0)
    w = sink_tokens + recent_window
    if mask.ndim != 4 or mask.shape[0] not in (1, bsz) or mask.shape[1] not in (1, hq) or mask.shape[2] != s:
        raise ReferenceOpError(f"mask must be [1|B, 1|Hq, S={s}, T], got {list(mask.shape)}")
    out = np.zeros((bsz, hq, s, d))
    for b in range(bsz):
        if cache_mode == CONCAT:
            total = mask.shape[3]
            wd = k_window.shape[2] if k_window is not None else 0
            if k_cache.shape[2] + wd != total or wd != min(total, w):
                raise ReferenceOpError(
                    f"caches hold {k_cache.shape[2]} compressed + {wd} window rows; "
                    f"mask says T={total}, W={w}"
                )
        else:
            assert past_lengths is not None
            total = int(past_lengths[b]) + s
            if mask.shape[3] < total:
                raise ReferenceOpError(f"mask covers {mask.shape[3]} positions, sequence {b} has {total}")
        places = [token_place(t, total, sink_tokens, recent_window) for t in range(total)]
        comp_t = [t for t, (home, _) in enumerate(places) if home == "compressed"]
        comp_rows = [places[t][1] for t in comp_t]
        win_t = [t for t, (home, _) in enumerate(places) if home == "window"]
        win_slots = [places[t][1] for t in win_t]
        m = mask[min(b, mask.shape[0] - 1)]
        for g in range(hkv):
            rk, rv = _rot(k_rotation, g), _rot(v_rotation, g)
            k_rows = k_cache[b, g, comp_rows]
            v_rows = v_cache[b, g, comp_rows]
            yk = dequantize_rotated(k_rows, k_cfg, k_codebook)  # [Tc, D]
            yv = dequantize_rotated(v_rows, v_cfg, v_codebook)
            for h in range(g * group, (g + 1) * group):
                qh = q[b, h].astype(np.float64)  # [S, D]
                qr = qh @ rk.T
                scores = np.full((s, total), -np.inf)
                if comp_t:
                    sc = qr @ yk.T
                    if k_cfg.qjl:
                        assert k_qjl_matrix is not None
                        sc = sc + qjl_correction(qr, k_rows[None], k_cfg, k_qjl_matrix)
                    scores[:, comp_t] = sc
                if win_t:
                    assert k_window is not None
                    scores[:, win_t] = qh @ k_window[b, g, win_slots].astype(np.float64).T
                p = attention_probabilities(scores, m[min(h, m.shape[0] - 1), :, :total], scale, softcap)
                acc = np.zeros((s, d))
                if comp_t:
                    acc += (p[:, comp_t] @ yv) @ rv
                if win_t:
                    assert v_window is not None
                    acc += p[:, win_t] @ v_window[b, g, win_slots].astype(np.float64)
                out[b, h] = acc
    return out.astype(q.dtype)


def decoded_attention_reference(
    q: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray, scale: float, softcap: float = 0.0
) -> np.ndarray:
    """Plain float64 attention over full K/V [B, Hkv, T, D] (GQA by head grouping), for tests."""
    bsz, hq, s, d = q.shape
    group = hq // keys.shape[1]
    k = np.repeat(keys.astype(np.float64), group, axis=1)
    v = np.repeat(values.astype(np.float64), group, axis=1)
    scores = np.einsum("bhsd,bhtd->bhst", q.astype(np.float64), k)
    p = attention_probabilities(scores, mask, scale, softcap)
    return np.einsum("bhst,bhtd->bhsd", p, v)


def attention_probabilities(scores: np.ndarray, mask: np.ndarray, scale: float, softcap: float) -> np.ndarray:
    """Softmax of scale * scores (soft-capped, then masked) over the last axis; all-excluded rows give 0.

    The mask is additive (float) or a keep-mask (bool) broadcast against the scores (format.md section 8.2).
    """
    scores = scores * scale
    if softcap > 0:
        scores = softcap * np.tanh(scores / softcap)
    if mask.dtype == np.bool_:
        scores = np.where(mask, scores, -np.inf)
    else:
        scores = scores + mask.astype(np.float64)
    peak = np.max(scores, axis=-1, keepdims=True)
    finite = np.isfinite(peak)
    e = np.where(finite, np.exp(scores - np.where(finite, peak, 0.0)), 0.0)
    denom = np.sum(e, axis=-1, keepdims=True)
    return np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
