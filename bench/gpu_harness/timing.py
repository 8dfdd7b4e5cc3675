"""Timing helpers for the GPU benches: CUDA-graph replays timed with events (median of repeats)."""

from __future__ import annotations

from collections.abc import Callable


def time_graph_us(fn: Callable[[int], None], variants: int, inner: int = 20, repeats: int = 7) -> float:
    """Median microseconds per call of fn(i) (i cycles over `variants` input sets, so L2 cannot hold them),
    captured in one CUDA graph of `inner` calls and replayed `repeats` times."""
    import torch

    for i in range(variants):  # warm-up: module load, attributes
        fn(i)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        fn(0)
        with torch.cuda.graph(graph, stream=stream):
            for k in range(inner):
                fn(k % variants)
    torch.cuda.synchronize()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / inner)
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth_gbs(nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second, GB/s)."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    us = time_graph_us(lambda i: dst.copy_(src), 1, inner=5, repeats=5)
    return 2 * nbytes / (us * 1e-6) / 1e9
