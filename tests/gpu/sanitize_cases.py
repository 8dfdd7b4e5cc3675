"""Small TQQuantize and TQAttention launches for compute-sanitizer (memcheck, racecheck); exit 0 if ran."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.gpu_harness.capi import Codec, Kernels  # noqa: E402
from tqexport.codec import Codec as RefCodec  # noqa: E402
from tqexport.codec import CodecConfig  # noqa: E402


def decode_inputs(k, kc, rot, cb, b, hkv, t, d, group, hadamard=False):
    """A quantized random cache of t tokens, float16 queries (group per kv head), an all-zero mask
    (hadamard: the quantize is promised a Sylvester-Hadamard R)."""
    x = torch.randn((b, hkv, t, d), device="cuda", dtype=torch.float16)
    past = torch.empty((b, hkv, 0, kc.row_bytes), dtype=torch.uint8, device="cuda")
    cache, _ = k.quantize(kc, x, past, rot, cb, None, None, hadamard=hadamard)
    q = torch.randn((b, hkv * group, 1, d), device="cuda", dtype=torch.float16)
    return cache, q, torch.zeros((b, 1, 1, t), device="cuda")


def decode_codec(d):
    """4-bit codec at head dim d: harness codec, Hadamard R, codebook, and a dense R (device tensors)."""
    ref = RefCodec.build(CodecConfig(head_dim=d, bits=(4,)))
    dense = RefCodec.build(CodecConfig(head_dim=d, bits=(4,), rotation="dense"))
    cuda = [torch.from_numpy(x).cuda() for x in (ref.rotation, ref.codebook, dense.rotation)]
    return Codec(d, (d,), (4,)), cuda[0], cuda[1], cuda[2]


def decode_launches(
    k, kc, q, cache, mask, rot, cb, env, values, splits_list, k_hadamard=False, v_hadamard=False
):
    """Decode steps with R_k = R_v = rot, for each value of the environment knob env and each split count
    (k_hadamard / v_hadamard: R_k / R_v promised Hadamard)."""
    for value in values:
        os.environ[env] = value
        for splits in splits_list:
            out = k.attention(
                kc, kc, q, cache, cache, mask, rot, cb, rot, cb, scale=0.1, force_splits=splits,
                k_hadamard=k_hadamard, v_hadamard=v_hadamard,
            )  # fmt: skip
            torch.cuda.synchronize()
            assert torch.isfinite(out).all()
    os.environ.pop(env)


def main() -> None:
    k = Kernels()
    for d, bits, qjl, s, group in (
        (128, 4, 1, 1, 4),
        (64, 3, 0, 9, 8),
        (256, 4, 0, 1, 1),
        (128, 3, 0, 1, 4),
        (128, 4, 0, 1, 16),
        (64, 4, 0, 1, 3),
        (64, 4, 0, 1, 16),
        (256, 3, 0, 1, 8),
        (64, 3, 0, 1, 4),
    ):
        ref = RefCodec.build(CodecConfig(head_dim=d, bits=(bits,), qjl=bool(qjl)))
        c = Codec(d, (d,), (bits,), qjl)
        rot, cb = torch.from_numpy(ref.rotation).cuda(), torch.from_numpy(ref.codebook).cuda()
        qm = torch.from_numpy(ref.qjl_matrix).cuda() if qjl else None
        b, hkv, t, ns, rw = 2, 2, 150, 2, 4
        x = torch.randn((b, hkv, t, d), device="cuda", dtype=torch.float16)
        past = torch.empty((b, hkv, 0, c.row_bytes), dtype=torch.uint8, device="cuda")
        pw = torch.empty((b, hkv, 0, d), dtype=torch.float16, device="cuda")
        cache, win = k.quantize(c, x, past, rot, cb, qm, pw, sink_tokens=ns, recent_window=rw)
        vref = RefCodec.build(CodecConfig(head_dim=d, bits=(bits,)))
        vc = Codec(d, (d,), (bits,))
        vrot, vcb = torch.from_numpy(vref.rotation).cuda(), torch.from_numpy(vref.codebook).cuda()
        vpast = torch.empty((b, hkv, 0, vc.row_bytes), dtype=torch.uint8, device="cuda")
        vcache, vwin = k.quantize(vc, x, vpast, vrot, vcb, None, pw, sink_tokens=ns, recent_window=rw)
        total = t
        q = torch.randn((b, hkv * group, s, d), device="cuda", dtype=torch.float16)
        mask = torch.zeros((b, 1, s, total), device="cuda")
        out = k.attention(
            c,
            vc,
            q,
            cache,
            vcache,
            mask,
            rot,
            cb,
            vrot,
            vcb,
            qm,
            win,
            vwin,
            scale=0.1,
            sink_tokens=ns,
            recent_window=rw,
            force_splits=2,
        )
        torch.cuda.synchronize()
        assert torch.isfinite(out).all()
    # The decode kernel's one-split epilogue (no window) and the reduce kernel (3 splits), each with
    # Sylvester-Hadamard rotations (butterfly un-rotation) and dense ones (dense fallback), 4 and 8 warps,
    # D 128, 64 and 256 (4-bit K and V: the D = 64 and D = 256 decode instances).
    for d in (64, 128, 256):
        b, hkv, t, group = 2, 2, 300, 4
        kc, rot, cb, dense = decode_codec(d)
        cache, q, mask = decode_inputs(k, kc, rot, cb, b, hkv, t, d, group)
        for vrot in (rot, dense):
            decode_launches(k, kc, q, cache, mask, vrot, cb, "TQ_DECODE_WARPS", ("4", "8"), (1, 3))
    # The reduce kernel as a programmatic dependent launch of the decode kernel (its R_v check before
    # griddepcontrol.wait) and launched plainly (TQ_DECODE_PDL=0): B = 8, T = 1K, the launcher's own plan
    # (reduce kernel) and 8 splits, Hadamard and dense R, D = 128.
    d, b, hkv, t, group = 128, 8, 2, 1024, 4
    kc, rot, cb, dense = decode_codec(d)
    cache, q, mask = decode_inputs(k, kc, rot, cb, b, hkv, t, d, group)
    for vrot in (rot, dense):
        decode_launches(k, kc, q, cache, mask, vrot, cb, "TQ_DECODE_PDL", ("1", "0"), (0, 8))
    # The q rotation inside the decode kernel (TQ_PREROTATE=0) or ahead of it (tq_prerotate_q_kernel, its
    # dependent launched early, at its blocks' exit, plainly): B = 1 and 8 at T = 1K, D 64 / 128 / 256.
    for d, b in ((128, 1), (128, 8), (64, 1), (256, 8)):
        kc, rot, cb, dense = decode_codec(d)
        cache, q, mask = decode_inputs(k, kc, rot, cb, b, hkv, t, d, group)
        decode_launches(k, kc, q, cache, mask, dense, cb, "TQ_PREROTATE", ("0", "1", "2", "3"), (0, 4))
    # A promised Hadamard R_k: the decode kernel's butterfly q rotation (hadamard_q_rows), with the launcher's
    # choice and with the rotation kernel forced ahead (which then wins), D 64 / 128 / 256, B 1 and 8, G 4.
    for d, b in ((128, 1), (128, 8), (64, 8), (256, 1)):
        kc, rot, cb, dense = decode_codec(d)
        cache, q, mask = decode_inputs(k, kc, rot, cb, b, hkv, t, d, group)
        assert k.rotation_is_hadamard(rot)
        decode_launches(k, kc, q, cache, mask, rot, cb, "TQ_PREROTATE", ("0", "1"), (0, 4), k_hadamard=True)
    # Promised Hadamard R_k and R_v: no device check of R_v in the decode kernel's one-split epilogue or the
    # reduce kernel (1 and 3 splits), and a promised quantize (no check of R in the quantize kernel).
    for d, b in ((128, 1), (128, 8), (64, 2), (256, 2)):
        kc, rot, cb, dense = decode_codec(d)
        cache, q, mask = decode_inputs(k, kc, rot, cb, b, hkv, t, d, group, hadamard=True)
        decode_launches(k, kc, q, cache, mask, rot, cb, "TQ_V_HADAMARD", ("1",), (1, 3), True, True)
    # The cluster merge (2..8 splits of a kv head as one cluster, bulk copies into the reducer's shared
    # memory) and, TQ_DECODE_CLUSTER=0, the warp reduce kernel it replaces: D 64 / 128 / 256, G 4 and 16.
    for d, group in ((128, 4), (128, 16), (64, 4), (256, 4)):
        b, hkv, t = 2, 2, 1024
        kc, rot, cb, dense = decode_codec(d)
        cache, q, mask = decode_inputs(k, kc, rot, cb, b, hkv, t, d, group, hadamard=True)
        knob = "TQ_DECODE_CLUSTER"
        decode_launches(k, kc, q, cache, mask, rot, cb, knob, ("1", "0"), (2, 5, 8), True, True)
    # Prefill chunks on the general path: the once-per-call structure check of R (or the promise of both),
    # the rotate kernel's butterfly and dense products, the row-per-warp reduce kernel; two 128-row blocks
    # per kv head (G * S = 160), 1 and 3 splits, Hadamard and dense R, D 64 / 128 / 256; the cache decoded
    # once into float16 (tq_decode_cache_kernel, forced: TQ_KV16=1) and each block decoding its own tiles
    # (TQ_KV16=0); a causal 0 / -inf mask with the tile bits forced on (TQ_MASK_TILES=1: tiles seen whole take
    # no mask values, the diagonal does, the second block's padding rows too).
    os.environ["TQ_MASK_TILES"] = "1"
    for kv16 in ("1", "0"):
        os.environ["TQ_KV16"] = kv16
        for d in (64, 128, 256):
            b, hkv, t, group, s = 2, 2, 200, 4, 40
            kc, rot, cb, dense = decode_codec(d)
            cache, _, _ = decode_inputs(k, kc, rot, cb, b, hkv, t, d, group)
            q = torch.randn((b, hkv * group, s, d), device="cuda", dtype=torch.float16)
            qpos = t - s + torch.arange(s, device="cuda")
            allowed = torch.arange(t, device="cuda")[None, :] <= qpos[:, None]
            mask = torch.where(allowed, 0.0, float("-inf"))[None, None].expand(b, 1, s, t).contiguous()
            for r, promise in ((rot, False), (dense, False), (rot, True)):
                for splits in (1, 3):
                    out = k.attention(
                        kc, kc, q, cache, cache, mask, r, cb, r, cb, scale=0.1, force_splits=splits,
                        k_hadamard=promise, v_hadamard=promise,
                    )  # fmt: skip
                    torch.cuda.synchronize()
                    assert torch.isfinite(out).all()
    os.environ.pop("TQ_KV16")
    os.environ.pop("TQ_MASK_TILES")
    step_quantize_launches(k)
    print("sanitize cases ran", np.__version__)


def step_quantize_launches(k) -> None:
    """TQQuantize's decode-step kernel (at most 16 new tokens): with a promised Hadamard R, concat steps with
    a window (tokens leaving the ring), buffer mode in place with ragged lengths, and a buffer past capacity;
    then unpromised R, one head's dense."""
    from bench.gpu_harness.capi import BUFFER

    for d, bits, dtype in ((128, 4, torch.float16), (64, 3, torch.float32), (256, 8, torch.float16)):
        ref = RefCodec.build(CodecConfig(head_dim=d, bits=(bits,), norm_correction=bits == 3))
        c = Codec(d, (d,), (bits,), 0, 1 if bits == 3 else 0)
        rot, cb = torch.from_numpy(ref.rotation).cuda(), torch.from_numpy(ref.codebook).cuda()
        b, hkv, ns, rw = 3, 2, 2, 4
        cache = torch.empty((b, hkv, 0, c.row_bytes), dtype=torch.uint8, device="cuda")
        win = torch.empty((b, hkv, 0, d), dtype=dtype, device="cuda")
        for s in (9, 1, 3, 16, 1):
            x = torch.randn((b, hkv, s, d), device="cuda", dtype=dtype)
            cache, win = k.quantize(
                c, x, cache, rot, cb, None, win, sink_tokens=ns, recent_window=rw, hadamard=True
            )
        cap = 12
        buf = torch.zeros((b, hkv, cap, c.row_bytes), dtype=torch.uint8, device="cuda")
        bwin = torch.randn((b, hkv, ns + rw, d), device="cuda", dtype=dtype)
        flag = torch.zeros(1, dtype=torch.int32, device="cuda")
        lengths = torch.tensor([0, 7, cap + ns + rw - 1], device="cuda")
        x = torch.randn((b, hkv, 3, d), device="cuda", dtype=dtype)
        k.quantize(
            c, x, buf, rot, cb, None, bwin, lengths, cache_mode=BUFFER, sink_tokens=ns, recent_window=rw,
            present_cache=buf, present_window=bwin, overflow_flag=flag, hadamard=True,
        )  # fmt: skip
        torch.cuda.synchronize()
        assert int(flag.item()) == 1, "the last sequence runs past capacity"
    # Unpromised R (the TensorRT plugin's case): the in-kernel structure check per distinct head of a block,
    # and the dense y = R x of a warp whose R fails it (head 1 of 3 dense), with a window.
    for d, dtype in ((128, torch.float16), (64, torch.float32), (256, torch.float16)):
        ref = RefCodec.build(CodecConfig(head_dim=d, bits=(4,)))
        dense = RefCodec.build(CodecConfig(head_dim=d, bits=(4,), rotation="dense", seed=5))
        rot_np = np.repeat(ref.rotation.astype(np.float32), 3, axis=0)
        rot_np[1] = dense.rotation[0]
        c = Codec(d, (d,), (4,))
        rot, cb = torch.from_numpy(rot_np).cuda(), torch.from_numpy(ref.codebook).cuda()
        cache = torch.empty((2, 3, 0, c.row_bytes), dtype=torch.uint8, device="cuda")
        win = torch.empty((2, 3, 0, d), dtype=dtype, device="cuda")
        for s in (9, 1, 5):
            x = torch.randn((2, 3, s, d), device="cuda", dtype=dtype)
            cache, win = k.quantize(c, x, cache, rot, cb, None, win, sink_tokens=1, recent_window=3)
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
