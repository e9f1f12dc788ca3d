"""The benchmark itself: build every method's trainer on the same random rows, time their steps side by side in
interleaved rounds, measure memory; see the package docstring (``ift.bench``) for what a step includes."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.bench.measure import matmul_peak_flops, measure_step_memory, model_flops_per_token, timed
from ift.bench.results import assemble
from ift.bench.settings import MethodResult, resolve_settings
from ift.bench.step import MethodBench
from ift.bench.workload import bench_tokenizer, build_initial_model, machine_info, random_rows


def run_benchmark(cfg: Mapping, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark described by ``cfg`` (conf/bench.yaml) and return its result (see ``write_results``)."""
    import torch
    from transformers import set_seed

    settings = resolve_settings(cfg)
    if settings["threads"]:
        torch.set_num_threads(int(settings["threads"]))
    set_seed(settings["seed"])
    with _quiet():
        return _run(settings, log)


@contextlib.contextmanager
def _quiet():
    """No progress bars, advisory warnings or info logs from transformers/TRL/datasets while building trainers."""
    import logging
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    old_env = os.environ.get("TQDM_DISABLE")
    old_verbosity, old_bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    old_datasets_bars = datasets.is_progress_bar_enabled()
    trl_logger = logging.getLogger("trl")
    old_trl_level = trl_logger.level
    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference log-prob pass reads it
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    trl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        trl_logger.setLevel(old_trl_level)
        if old_datasets_bars:
            datasets.enable_progress_bars()
        if old_bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(old_verbosity)
        if old_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_env


def _run(settings: Mapping, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    machine = machine_info(settings["device"])
    tokenizer = bench_tokenizer(settings["vocab_size"])
    rows, chosen_ids, rejected_ids = random_rows(settings, tokenizer)
    names = settings["methods"]
    with tempfile.TemporaryDirectory(prefix="ift-bench-") as tmp:
        tmp = Path(tmp)
        model_dir = tmp / "initial"
        n_params = build_initial_model(settings, tokenizer, model_dir)
        log(
            f"[bench] shape={settings['shape']}: {n_params / 1e6:.1f}M parameters, batch {settings['batch_size']} x "
            f"seq {settings['seq_len']} (prompt {settings['prompt_len']}), {settings['device']} {settings['dtype']}, "
            f"{torch.get_num_threads()} threads; methods {', '.join(names)}"
        )
        benches = {}
        for name in names:
            started = time.perf_counter()
            benches[name] = MethodBench(
                name, settings, model_dir, tokenizer, rows, (chosen_ids, rejected_ids), tmp / "trainers"
            )
            log(
                f"[bench] built {name} ({type(benches[name].trainer).__name__}) in "
                f"{time.perf_counter() - started:.1f}s"
            )
        results = {
            name: MethodResult(name, tokens_per_step=b.tokens, sequences_per_step=b.sequences)
            for name, b in benches.items()
        }
        for name, bench in benches.items():  # warm-up; the first step is at identical initial weights
            for i in range(settings["warmup"]):
                seconds, (loss, grad_norm) = timed(bench.step, settings["device"])
                if i == 0:
                    results[name].first_loss, results[name].first_grad_norm = loss, grad_norm
            log(
                f"[bench] warm-up {name}: first loss {results[name].first_loss:.6f}, last step {seconds:.3f}s"
            )
        for round_index in range(settings["rounds"]):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, _ = timed(benches[name].step, settings["device"])
                results[name].times_s.append(seconds)
            log(
                f"[bench] round {round_index + 1}/{settings['rounds']}: "
                + ", ".join(f"{n} {results[n].times_s[-1]:.3f}s" for n in names)
            )
        for name, bench in benches.items():
            results[name].resident_bytes = bench.resident_bytes()
            if settings["measure_memory"]:
                results[name].step_peak_bytes, results[name].pass1_peak_bytes = measure_step_memory(bench)
        flops_per_token = model_flops_per_token(model_dir, settings["seq_len"])
        width = int(benches[names[0]].model.config.hidden_size)
        del benches
    dtype = torch.bfloat16 if settings["dtype"] == "bfloat16" else torch.float32
    matmul_peak = matmul_peak_flops(width, int(settings["batch_size"]) * int(settings["seq_len"]), settings["device"],
                                    dtype)
    log(f"[bench] dense {settings['dtype']} matmul at width {width}: {matmul_peak / 1e9:,.1f} GFLOP/s")
    return assemble(settings, machine, n_params, flops_per_token, results, matmul_peak_flops=matmul_peak)
