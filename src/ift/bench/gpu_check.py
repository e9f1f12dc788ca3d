"""The GPU check (``scripts/gpu_check.sh``): every method, 10 optimiser steps under profile=paper settings, on a
random-initialised Mistral-shaped model of about 1B parameters, FSDP on all local GPUs; figures appended to
benchmarks/RESULTS.md.

    python -m ift.bench.gpu_check prepare --work <dir>            # world + the random 1B checkpoint
    accelerate launch --config_file conf/accelerate/fsdp.yaml --num_processes <n> \\
        -m ift.bench.gpu_check train --work <dir> --method <m>    # one method's 10 steps -> <dir>/<m>.json
    python -m ift.bench.gpu_check report --work <dir> --bench <results.json>   # -> benchmarks/RESULTS.md
    python -m ift.bench.gpu_check --dry-run                       # CPU: every config composed, every trainer built

The training run is the train app's own (``ift.train.cell.run_training``) with profile=paper: bf16, activation
checkpointing, RMSprop, per-device batch 4, max_length 1024, the paper's learning-rate schedule; two things differ
so that it fits minutes: the global batch is per-device batch x GPUs (gradient accumulation 1, not 512 sequences),
and the data are the miniature world's chat and preference rows (the hub's UltraChat/UltraFeedback cannot be
reached from every GPU machine), in the world's tokenizer; the model's 32k vocabulary keeps the LM head at
Mistral's width.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import ift  # noqa: F401  (offline defaults before any HF import)
from ift import methods as registry
from ift.io import write_json_atomic, write_text_atomic
from ift.paths import CONF_DIR

METHODS = tuple(registry.METHODS)  # every method of the grid, in the paper's row order
STEPS = 10
# Mistral-7B's shape at ~1B parameters (GQA 4:1, SwiGLU, untied 32k embeddings): 0.94B.
GPU_MODEL = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=18, num_attention_heads=16,
                 num_key_value_heads=4, max_position_embeddings=4096, rope_theta=10000.0, vocab_size=32000,
                 tie_word_embeddings=False)
# The dry run's toy-sized model: the same kind, built and discarded in seconds on a CPU.
TOY_MODEL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0, vocab_size=2048,
                 tie_word_embeddings=False)
ROWS = 160  # chat rows and preference pairs per run: 10 steps x 4 per device x up to 4 GPUs before repeating


def overrides(work: Path, method: str, *, gpus: int, dry_run: bool = False) -> list[str]:
    """The train app's config for one method: profile=paper, the world's data, the random checkpoint, 10 steps."""
    found = [
        "profile=paper", f"method={method}", "start=base", "seed=0", "logger=none", "data=toyworld",
        f"paths.root={work}", f"paths.world={work}/world", f"paths.runs={work}/runs",
        f"start_checkpoints.base={work}/model", f"data.n_chat={ROWS}", f"data.n_prefs={ROWS}",
        f"++trainer.finetune.max_steps={STEPS}", "++trainer.finetune.global_batch_size=null",
        "++trainer.finetune.gradient_accumulation_steps=1", "++trainer.finetune.save_steps=null",
        "trainer.dataloader_num_workers=0",
    ]
    if dry_run:  # the same config, on a CPU: no bf16, no CUDA
        found += ["trainer.device=cpu", "trainer.bf16=false"]
    return found


def compose(work: Path, method: str, *, gpus: int, dry_run: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=overrides(work, method, gpus=gpus, dry_run=dry_run))


def prepare(work: Path, model_shape: dict, seed: int = 0) -> None:
    """The world (for its data and tokenizer) and a random-initialised Mistral checkpoint with that tokenizer."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from ift.checkpoints import save_checkpoint
    from ift.world import generate_world

    work.mkdir(parents=True, exist_ok=True)
    cfg = compose(work, "sft", gpus=1)
    if not (work / "world" / "manifest.json").exists():
        generate_world(OmegaConf.to_container(cfg.data.world, resolve=True), work / "world")
    tokenizer = AutoTokenizer.from_pretrained(work / "world" / "tokenizer")
    torch.manual_seed(seed)
    config = MistralConfig(**model_shape, sliding_window=None, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    save_checkpoint(MistralForCausalLM(config), tokenizer, work / "model")


class StepClock:
    """A TrainerCallback: each optimiser step's wall time (synchronised on CUDA) and the peak GPU memory."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []
                self._began = 0.0

            def _sync(self):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()

            def on_step_begin(self, args, state, control, **kwargs):
                self._sync()
                self._began = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                self._sync()
                self.times.append(time.perf_counter() - self._began)

        return _Clock()


def train(work: Path, method: str) -> dict:
    """One method's 10 steps through the train app (under accelerate launch); rank 0 writes <work>/<method>.json."""
    import torch

    import ift.paths  # noqa: F401  (the config's resolvers)
    from ift.train.cell import run_training

    gpus = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = compose(work, method, gpus=gpus)
    clock = StepClock()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run_dir = run_training(cfg, callbacks=[clock])
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    times = clock.times[1:] or clock.times  # the first step carries allocation and kernel selection
    tokens = int(metrics.get("tokens_seen") or 0)
    record = {
        "method": method,
        "gpus": gpus,
        "steps": int(metrics["steps"]),
        "step_seconds_median": statistics.median(times) if times else None,
        "step_seconds_first": clock.times[0] if clock.times else None,
        "tokens_seen": tokens,  # non-padding input tokens, every process (0 for ORPO: TRL cannot count them)
        "train_seconds": metrics["train_seconds"],
        "tokens_per_second": metrics.get("tokens_per_second"),
        "peak_memory_bytes_rank0": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "final_loss": metrics.get("final_loss"),
    }
    write_json_atomic(work / f"{method}.json", record)
    return record


def _parameters(model_dir: Path) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def report(work: Path, bench: Path | None, results_md: Path) -> str:
    """Append this machine's figures to benchmarks/RESULTS.md; returns the section."""
    import torch

    from ift.bench.settings import GPU_PEAK_BF16_TFLOPS
    from ift.bench.workload import machine_info

    records = {m: json.loads((work / f"{m}.json").read_text()) for m in METHODS if (work / f"{m}.json").exists()}
    machine = machine_info("cuda" if torch.cuda.is_available() else "cpu")
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name() if gpus else "none"
    peak = next((t for k, t in GPU_PEAK_BF16_TFLOPS.items() if k in name), None)
    n_params = _parameters(work / "model")
    sft = records.get("sft", {}).get("step_seconds_median")
    lines = [
        "", f"## GPU check ({machine['date_utc']}): {gpus} x {name}", "",
        f"`scripts/gpu_check.sh`: every method, {STEPS} optimiser steps under profile=paper settings (bf16, FSDP2 "
        f"on all {gpus} GPUs, activation checkpointing, RMSprop, per-device batch 4, max_length 1024, gradient "
        f"accumulation 1) on a random-initialised Mistral-shaped model of {n_params / 1e9:.2f}B parameters, "
        "the miniature world's data (src/ift/bench/gpu_check.py). Step time: median of steps 2-10; tokens/s: "
        "non-padding tokens over the whole run; peak memory: rank 0's torch.cuda.max_memory_allocated; MFU: "
        "6 x parameters x tokens/s over the GPUs' dense bf16 peak (the same 6N per token for every method, so a "
        "method with more forward passes per token shows a lower MFU).",
        f"Machine: torch {machine['torch']}, transformers {machine['transformers']}, TRL {machine['trl']}, "
        f"CPU {machine['cpu_model']} ({machine['logical_cpus']} logical), {machine['platform']}.",
        "", "| method | step (s) | step / SFT | tokens/s | peak memory (GiB) | MFU |", "|---|---|---|---|---|---|",
    ]
    for method, rec in records.items():
        step, tps, mem = rec["step_seconds_median"], rec["tokens_per_second"], rec["peak_memory_bytes_rank0"]
        mfu = 6 * n_params * tps / (peak * 1e12 * gpus) if (peak and tps and gpus) else None
        lines.append(f"| {method} | {step:.3f} | {step / sft:.2f}x | {tps or 0:.0f} | "
                     f"{(mem or 0) / 2**30:.1f} | {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} |"
                     if step and sft else f"| {method} | n/a | n/a | {tps} | {mem} | n/a |")
    if bench is not None and bench.exists():
        from ift.bench.results import markdown_table

        result = json.loads(bench.read_text()).get("gpu")
        if result:
            lines += ["", "`python -m ift.bench shape=gpu` (bf16, one GPU):", "", markdown_table(result)]
    section = "\n".join(lines) + "\n"
    write_text_atomic(results_md, results_md.read_text() + section if results_md.exists() else section)
    return section


def dry_run(work: Path) -> None:
    """On a CPU: compose every config the GPU check uses and build every method's trainer on a toy-sized model."""
    from omegaconf import OmegaConf

    from ift.checkpoints import load_causal_lm
    from ift.data import DataConfig, training_data
    from ift.train.arguments import training_kwargs
    from ift.train.config_checks import validate_train_config
    from ift.train.trainers import build_trainer

    began = time.time()
    prepare(work, TOY_MODEL)
    _compose_bench_gpu()
    _read_accelerate_config()
    for method in METHODS:
        cfg = compose(work, method, gpus=1, dry_run=True)
        validate_train_config(cfg)
        assert cfg.trainer.activation_checkpointing and cfg.trainer.finetune.max_steps == STEPS
        halves = ([{"name": half, **OmegaConf.to_container(cfg.method[half])} for half in registry.METHODS[method].halves]
                  or [OmegaConf.to_container(cfg.method, resolve=True)])
        for half in halves:
            model, tokenizer = load_causal_lm(cfg.start.checkpoint)
            data = training_data(registry.METHODS[half["name"]], "base", DataConfig.from_mapping(cfg.data), 0, tokenizer=tokenizer,
                                 targets=half.get("targets"), max_length=int(cfg.trainer.finetune.max_length))
            common = training_kwargs(cfg.trainer, cfg.trainer.finetune, output_dir=work / "dry" / method, seed=0,
                                     run_name=method, report_to="none")
            trainer = build_trainer(half, model=model, tokenizer=tokenizer, dataset=data.dataset,
                                    common_args=common, max_length=int(cfg.trainer.finetune.max_length))
            print(f"[gpu_check --dry-run] {method}{'/' + half['name'] if method == 'sft_dpo' else ''}: "
                  f"{type(trainer).__name__} on {len(data.dataset)} rows, {STEPS} steps, "
                  f"activation_checkpointing={trainer.args.activation_checkpointing}")
    print(f"[gpu_check --dry-run] every config composed and every trainer built in {time.time() - began:.1f} s "
          f"(GPU run: {sum(p for p in [_shape_parameters(GPU_MODEL)]) / 1e9:.2f}B parameters)")


def _shape_parameters(shape: dict) -> int:
    h, i, n, heads, kv, v = (shape[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                 "num_attention_heads", "num_key_value_heads", "vocab_size"))
    head_dim = h // heads
    per_layer = 2 * h * h + 2 * h * kv * head_dim + 3 * h * i + 2 * h
    return n * per_layer + 2 * v * h + h


def _compose_bench_gpu():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name="bench", overrides=["shape=gpu", "paths.root=/nonexistent"])
    # ift.bench.settings.resolve_settings refuses shape=gpu without CUDA, so the dry run reads the shape itself.
    shape = OmegaConf.to_container(cfg.shapes[cfg.shape], resolve=True)
    if shape["dtype"] != "bfloat16" or shape["device"] != "cuda":
        raise SystemExit(f"bench shape=gpu is {shape['dtype']} on {shape['device']}, expected bfloat16 on cuda")
    return shape


def _read_accelerate_config() -> dict:
    import yaml

    config = yaml.safe_load((Path(CONF_DIR) / "accelerate" / "fsdp.yaml").read_text())
    if config.get("distributed_type") != "FSDP":
        raise SystemExit("conf/accelerate/fsdp.yaml is not an FSDP config")
    return config


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ift.bench.gpu_check")
    parser.add_argument("command", nargs="?", choices=["prepare", "train", "report"])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--method", choices=METHODS)
    parser.add_argument("--bench", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/RESULTS.md"))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.dry_run:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ift-gpu-check-dry-") as tmp:
            dry_run(Path(args.work or tmp))
        return
    if args.command is None or args.work is None:
        parser.error("give a command (prepare | train | report) and --work, or --dry-run")
    if args.command == "prepare":
        prepare(args.work, GPU_MODEL)
    elif args.command == "train":
        if not args.method:
            parser.error("train needs --method")
        train(args.work, args.method)
    else:
        print(report(args.work, args.bench, args.results))


if __name__ == "__main__":
    main(sys.argv[1:])
