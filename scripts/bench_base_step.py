"""Where the `base` start point's training step spends its time, against this machine's matrix-multiply rate, and
whether compiling the decoder (torch.compile) makes it faster (issue #26: "base pretraining that runs below the
machine's FLOP rate").

The trainer is the stage's own (scripts/bench_start_point_head.py's HeadBench: ift.train.start_points with base's
wrapped packing and the lean head, the recipe's AdamW) on one collated batch of base's real shape, from seeded
initial weights. A step is ift.bench's optimiser step (forward, backward, clipping, AdamW, schedule). Printed:

* the step's operators by self CPU time (PyTorch's profiler over ``--profile-steps`` steps), grouped into matrix
  products (``aten::mm``, ``addmm``, ``bmm``), attention (``scaled_dot_product*``) and the rest (norms, rotary
  embeddings, activations, the optimiser, ...);
* the matrix products' achieved rate: their FLOPs (2·m·n·k from the profiler's recorded shapes) over their time,
  next to the dense float32 matmul rate at the model's width that ift.bench's MFU is measured against
  (``ift.bench.measure.matmul_peak_flops``, timed in the same process: the machine's rate under the pinned kernels):
  how far the products are from the machine, and how much of the step is not products at all;
* ``--compile``: a second trainer from the same weights whose decoder layers and final norm are compiled
  (``nn.Module.compile``, inductor's default mode), its first loss against the eager one's, the compile time (the
  first steps), and the median of the per-round step-time ratios compiled / eager over ``--rounds`` interleaved
  rounds (order reversed every other round). The load average is printed before and after.

Run with the pipeline's pinned numerics (dvc.yaml), from the repository root, on an otherwise idle machine:

    OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 PYTHONPATH=src:scripts \\
        python scripts/bench_base_step.py [--compile] [--rounds 10] [--world outputs/world]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import ift  # noqa: F401  (offline defaults before any HF import)

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def group_of(name: str) -> str:
    if name in MATMULS:
        return "matrix products"
    if "scaled_dot_product" in name:
        return "attention (SDPA)"
    return "the rest"


def matmul_flops(name: str, shapes: list) -> int:
    """2·m·n·k of one recorded matmul call (addmm's first input is the bias)."""
    if name == "aten::addmm":
        shapes = shapes[1:]
    a, b = shapes[0], shapes[1]
    if name == "aten::bmm":
        return 2 * a[0] * a[1] * a[2] * b[2]
    return 2 * a[0] * a[1] * b[1]


def profile_step(bench, steps: int) -> tuple[dict[str, float], float, float]:
    """Self CPU seconds per operator group over ``steps`` steps, and the matrix products' FLOPs and seconds."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            bench.step()
    groups, flops, seconds = defaultdict(float), 0, 0.0
    for event in prof.key_averages(group_by_input_shape=True):
        self_seconds = event.self_cpu_time_total / 1e6
        groups[group_of(event.key)] += self_seconds
        if event.key in MATMULS and event.input_shapes and all(event.input_shapes[:2]):
            flops += event.count * matmul_flops(event.key, event.input_shapes)
            seconds += self_seconds
    return dict(groups), flops, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="also time a trainer with compiled decoder layers")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--world", type=Path, default=None, help="an existing tiny world (default: generate one)")
    options = parser.parse_args()

    import torch
    from bench_start_point_head import HeadBench, base_setup, load_average

    from ift.bench.measure import matmul_peak_flops, timed
    from ift.bench.runner import _quiet

    print(f"[base-step] load average at start (1, 5, 15 min): {load_average()}; torch threads "
          f"{torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, ATEN_CPU_CAPABILITY="
          f"{os.environ.get('ATEN_CPU_CAPABILITY')}, MKL_CBWR={os.environ.get('MKL_CBWR')}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ift-base-step-") as tmp, _quiet():
        tmp = Path(tmp)
        cfg, world, _, _ = base_setup(tmp, options.world)
        chunk = int(cfg.trainer.pretrain.chunk_size)
        benches = {"eager": HeadBench(cfg, world, tmp / "initial", True, chunk)}
        if options.compile:
            benches["compiled"] = HeadBench(cfg, world, tmp / "initial", True, chunk)
            decoder = benches["compiled"].trainer.model.get_decoder()
            for layer in decoder.layers:
                layer.compile()
            decoder.norm.compile()
        shape = tuple(benches["eager"].batch["input_ids"].shape)
        model_cfg = benches["eager"].trainer.model.config
        print(f"[base-step] batch {shape[0]} x {shape[1]} tokens, width {model_cfg.hidden_size}, MLP "
              f"{model_cfg.intermediate_size}, vocabulary {model_cfg.vocab_size}", flush=True)
        first, warmup_seconds = {}, {}
        for name, bench in benches.items():
            start = time.perf_counter()
            for i in range(options.warmup):
                loss, _ = bench.step()
                if i == 0:
                    first[name] = loss
            warmup_seconds[name] = time.perf_counter() - start
        print("[base-step] first loss (identical weights): " + ", ".join(f"{n} {v:.6f}" for n, v in first.items())
              + "; warm-up (" + str(options.warmup) + " steps, compilation included): "
              + ", ".join(f"{n} {s:.1f} s" for n, s in warmup_seconds.items()), flush=True)
        groups, flops, matmul_seconds = profile_step(benches["eager"], options.profile_steps)
        rate = matmul_peak_flops(model_cfg.hidden_size, shape[0] * shape[1], "cpu", torch.float32)
        times = {name: [] for name in benches}
        names = list(benches)
        for round_index in range(options.rounds):
            for name in names if round_index % 2 == 0 else names[::-1]:
                times[name].append(timed(benches[name].step, "cpu")[0])
    print(f"[base-step] load average at end (1, 5, 15 min): {load_average()}")
    total = sum(groups.values())
    print(f"| operators (eager, {options.profile_steps} steps) | self CPU s per step | share |")
    print("|---|---|---|")
    for group in ("matrix products", "attention (SDPA)", "the rest"):
        print(f"| {group} | {groups.get(group, 0.0) / options.profile_steps:.3f} | "
              f"{groups.get(group, 0.0) / total:.1%} |")
    achieved = flops / matmul_seconds if matmul_seconds else float("nan")
    print(f"[base-step] matrix products: {flops / options.profile_steps / 1e9:.1f} GFLOP a step at "
          f"{achieved / 1e9:.1f} GFLOP/s; dense matmul at the model's width in this process: {rate / 1e9:.1f} GFLOP/s "
          f"({achieved / rate:.0%} of it)")
    for name in names:
        print(f"[base-step] {name}: median step {statistics.median(times[name]):.3f} s, fastest "
              f"{min(times[name]):.3f} s over {options.rounds} rounds")
    if options.compile:
        paired = statistics.median(c / e for c, e in zip(times["compiled"], times["eager"]))
        print(f"[base-step] compiled / eager, median of per-round ratios: {paired:.3f}")


if __name__ == "__main__":
    main()
