"""Train-step time and peak memory of the `base` start point: TRL's fused LM head against the lean head (issue #26).

Both trainers are the stage's own (ift.train.start_points.start_point_trainer with base's packing settings), built in
this one process from the same initial weights (conf/model/tiny.yaml, seeded) on the same collated batch of base's
real shape: the tiny world's tokenizer and corpus (generated into a temporary directory unless ``--world`` names one),
wrapped into blocks of trainer.pretrain.max_length, trainer.pretrain.per_device_train_batch_size of them, the recipe's
optimiser. The only difference is trainer.pretrain.memory_efficient (and chunk_size).

A step is ift.bench's optimiser step (forward, backward, clipping, AdamW, schedule). ``--warmup`` untimed steps per
head, then ``--rounds`` rounds each timing one step of every head, the order reversed every other round; reported:
each head's median step time and the median of the per-round ratios to TRL's head (paired: robust to load drift), and
the fastest step of each and their ratio (the least disturbed step: on a shared machine other jobs only ever add time). Peak memory: one more step per head under ift.bench.measure.measure_step_memory (PyTorch's CPU
allocator events; tensor bytes above the step's starting level). The load average is printed before and after.

The LM head alone (``--head-reps``): the two kernels as the two heads call them, forward and backward, on the batch's
final hidden states and the model's LM head (TRL's ``ChunkedLogProbFunction`` over every position, as its head runs
without Triton; ift.logprobs.chunked_label_scores over the labelled ones), timed alternately, fastest of each: the
part of the step that differs, in milliseconds short enough to find quiet moments on a loaded machine.

Run with the pipeline's pinned numerics (dvc.yaml), from the repository root:

    OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 PYTHONPATH=src \\
        python scripts/bench_start_point_head.py [--rounds 5] [--chunk-size 1024 2048] [--world outputs/world]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import ift  # noqa: F401  (offline defaults before any HF import)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class HeadBench:
    """One head's trainer, its first collated batch and its optimiser step (the ``bench`` measure_step_memory reads)."""

    device = "cpu"

    def __init__(self, cfg, world: Path, initial: Path, memory_efficient: bool, chunk_size: int):
        from datasets import load_dataset
        from omegaconf import OmegaConf
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ift.bench.step import ready_to_step
        from ift.train.base import PRETRAIN_SFT_KWARGS
        from ift.train.start_points import start_point_trainer

        cfg = OmegaConf.merge(cfg, {"trainer": {"pretrain": {"memory_efficient": memory_efficient,
                                                             "chunk_size": chunk_size}}})
        tokenizer = AutoTokenizer.from_pretrained(str(world / "tokenizer"))
        corpus = load_dataset("json", data_files={"train": str(world / "corpus" / "train.jsonl")}, split="train")
        self.trainer = start_point_trainer(cfg, stage="base", model=AutoModelForCausalLM.from_pretrained(initial),
                                           tokenizer=tokenizer, dataset=corpus, sft_kwargs=PRETRAIN_SFT_KWARGS)
        self.batch = self.trainer._prepare_inputs(next(iter(self.trainer.get_train_dataloader())))
        ready_to_step(self.trainer, max_steps=1000)

    def step(self) -> tuple[float, float | None]:
        from ift.bench.step import optimiser_step

        return optimiser_step(self.trainer, self.batch)


def base_setup(tmp: Path, world: Path | None):
    """The tiny profile's config (logger off, paths under ``tmp``), the world (``world``, or one generated into
    ``tmp``), its tokenizer and the seeded initial model, saved to ``tmp/initial``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from ift.paths import CONF_DIR
    from ift.train.start_points import build_tiny_model
    from ift.world import generate_world

    if world is not None and not (world / "tokenizer").is_dir():  # else transformers reads it as a hub id
        raise SystemExit(f"--world {world}: no tiny world there (no tokenizer/; `dvc repro world` writes one to "
                         "outputs/world)")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["profile=tiny", "logger=none", f"paths.root={tmp}"])
    if world is None:
        world = tmp / "world"
        generate_world(OmegaConf.to_container(cfg.data.world, resolve=True), world)
    tokenizer = AutoTokenizer.from_pretrained(str(world / "tokenizer"))
    model = build_tiny_model(cfg.model, tokenizer, int(cfg.seed))
    model.save_pretrained(tmp / "initial")
    return cfg, world, tokenizer, model


def head_alone(bench: HeadBench, chunk_sizes: list[int], reps: int) -> dict[str, float]:
    """The fastest forward + backward of each LM-head kernel on ``bench``'s batch (see the module docstring)."""
    import time

    import torch
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    from ift import logprobs

    model, batch = bench.trainer.model, bench.batch
    with torch.no_grad():
        hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden = hidden.last_hidden_state.detach()
    weight, labels = model.get_output_embeddings().weight, batch["labels"]

    def trl_head():
        rows = hidden[:, :-1].reshape(-1, hidden.shape[-1]).requires_grad_()
        out = ChunkedLogProbFunction.apply(rows, weight, None, labels[:, 1:].clamp(min=0).reshape(-1), 1.0,
                                           _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, ("log_probs", "entropy", "is_top1"))
        out[0].sum().backward()

    def lean_head(chunk_size):
        scores = logprobs.chunked_label_scores(hidden.requires_grad_(), weight, labels, chunk_size, with_stats=True)
        scores.token_logps.sum().backward()

    kernels = {"trl": trl_head, **{f"lean_{size}": (lambda size=size: lean_head(size)) for size in chunk_sizes}}
    fastest = dict.fromkeys(kernels, float("inf"))
    for _ in range(reps):
        for name, kernel in kernels.items():
            start = time.perf_counter()
            kernel()
            fastest[name] = min(fastest[name], time.perf_counter() - start)
            weight.grad = None
    return fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, nargs="+", default=[1024], help="the lean head's chunk sizes")
    parser.add_argument("--head-reps", type=int, default=30, help="repetitions of the LM head alone")
    parser.add_argument("--world", type=Path, default=None, help="an existing tiny world (default: generate one)")
    options = parser.parse_args()

    import torch

    from ift.bench.measure import measure_step_memory, timed
    from ift.bench.runner import _quiet

    print(f"[heads] load average at start (1, 5, 15 min): {load_average()}; torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, ATEN_CPU_CAPABILITY="
          f"{os.environ.get('ATEN_CPU_CAPABILITY')}")
    with tempfile.TemporaryDirectory(prefix="ift-heads-") as tmp, _quiet():
        tmp = Path(tmp)
        cfg, world, tokenizer, model = base_setup(tmp, options.world)
        heads = {"trl": HeadBench(cfg, world, tmp / "initial", False, 1024)}
        for chunk_size in options.chunk_size:
            heads[f"lean_{chunk_size}"] = HeadBench(cfg, world, tmp / "initial", True, chunk_size)
        reference = heads["trl"].batch
        for name, head in heads.items():
            if not all(torch.equal(head.batch[key], reference[key]) for key in ("input_ids", "labels")):
                raise RuntimeError(f"[heads] {name}: not the same batch as TRL's head")
        shape = tuple(reference["input_ids"].shape)
        parameters = sum(p.numel() for p in model.parameters())
        print(f"[heads] batch {shape[0]} x {shape[1]} tokens, vocabulary {len(tokenizer)}, {parameters / 1e6:.2f}M "
              f"parameters, labelled positions {int((reference['labels'][:, 1:] != -100).sum())}")
        first = {}
        for name, head in heads.items():
            for i in range(options.warmup):
                loss, _ = head.step()
                if i == 0:
                    first[name] = loss
        print("[heads] first loss (identical weights): " + ", ".join(f"{n} {v:.6f}" for n, v in first.items()))
        times = {name: [] for name in heads}
        names = list(heads)
        for round_index in range(options.rounds):
            for name in names if round_index % 2 == 0 else names[::-1]:
                times[name].append(timed(heads[name].step, "cpu")[0])
            print(f"[heads] round {round_index + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names))
        peaks = {name: measure_step_memory(head)[0] for name, head in heads.items()}
        head_seconds = head_alone(heads["trl"], options.chunk_size, options.head_reps)
    print(f"[heads] load average at end (1, 5, 15 min): {load_average()}")
    print("| head | median step (s) | paired ratio to trl | fastest step (s) | ratio to trl | step peak memory (MiB) "
          "| ratio to trl |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        paired = statistics.median(t / r for t, r in zip(times[name], times["trl"]))
        fastest = min(times[name])
        peak, trl_peak = peaks[name], peaks["trl"]
        memory = "n/a | n/a" if peak is None or not trl_peak else f"{peak / 2**20:.1f} | {peak / trl_peak:.3f}"
        print(f"| {name} | {statistics.median(times[name]):.3f} | {paired:.3f} | {fastest:.3f} | "
              f"{fastest / min(times['trl']):.3f} | {memory} |")
    print(f"[heads] the LM head alone, forward + backward, fastest of {options.head_reps}: "
          + ", ".join(f"{name} {seconds * 1e3:.1f} ms ({seconds / head_seconds['trl']:.3f} of trl's)"
                      for name, seconds in head_seconds.items()))


if __name__ == "__main__":
    main()
