"""Timing, memory and FLOPs of one step."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.bench.settings import GPU_PEAK_BF16_TFLOPS, PASS1_LABEL

if TYPE_CHECKING:
    from ift.bench.step import MethodBench


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    _synchronize(device)
    start = time.perf_counter()
    out = fn()
    _synchronize(device)
    return time.perf_counter() - start, out


def measure_step_memory(bench: MethodBench) -> tuple[int | None, int | None]:
    """Peak tensor bytes allocated during one step above the level at its start, for the whole step and (IFT)
    up to the end of pass 1: ``(step_peak, pass1_peak)``.

    CUDA: ``torch.cuda.max_memory_allocated`` after a peak reset, minus ``memory_allocated`` at the start (pass 1:
    the same maximum read when pass 1 returns). CPU: PyTorch's profiler with ``profile_memory=True`` records every
    allocation and free of the CPU allocator; the peak of their running sum in time order is the step's peak, and
    its maximum inside the ``ift.pass1`` range is pass 1's. None where the profiler exposes no memory events.
    """
    import torch

    if bench.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        bench.pass1_cuda_peaks.clear()
        bench.step()
        torch.cuda.synchronize()
        pass1 = max(bench.pass1_cuda_peaks) - start if bench.pass1_cuda_peaks else None
        return int(torch.cuda.max_memory_allocated() - start), pass1
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        bench.step()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # pragma: no cover - a torch without the kineto results API
        return None, None
    allocations = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    )
    windows = [(e.start_ns(), e.end_ns()) for e in events if e.name() == PASS1_LABEL]
    current = peak = 0
    pass1 = None
    for when, nbytes in allocations:
        current += nbytes
        peak = max(peak, current)
        if any(lo <= when <= hi for lo, hi in windows):
            pass1 = max(pass1 or 0, current)
    return (int(peak) if allocations else None), pass1


@contextlib.contextmanager
def _stderr_silenced():
    """Kineto prints two lines to the C-level stderr per profiled region; keep the benchmark's output readable."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def model_flops_per_token(model_dir: Path, seq_len: int) -> int:
    """Training FLOPs per token (forward + backward = 3x forward), TRL's estimate for the model's config."""
    from transformers import AutoConfig
    from trl.trainer.utils import compute_flops_per_token

    return int(compute_flops_per_token(AutoConfig.from_pretrained(model_dir), seq_len))


def gpu_peak_flops(settings: Mapping) -> float | None:
    if settings["device"] != "cuda":
        return None
    if settings.get("gpu_peak_tflops"):
        return float(settings["gpu_peak_tflops"]) * 1e12
    import torch

    name = torch.cuda.get_device_name()
    for key, tflops in GPU_PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def matmul_peak_flops(width: int, rows: int, device: str, dtype, repeats: int = 20) -> float:
    """This machine's dense matmul rate (FLOP/s) at the model's width: the best of ``repeats`` timed
    ``[rows, width] @ [width, width]`` products in ``dtype``, measured in the benchmark's own process and threads.
    The reference for MFU on a CPU, where no vendor peak applies (the pinned kernels run below the CPU's nominal
    peak on purpose, docs/reproducibility.md)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, width, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(width, width, generator=generator).to(device=device, dtype=dtype)
    a @ b  # warm-up: thread pool, kernel choice
    best = min(timed(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2.0 * rows * width * width / best
