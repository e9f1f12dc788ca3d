"""The tail every training run shares, a grid cell or a start point: train (resuming if asked), then write the model,
the tokenizer and the run's records into its directory atomically, and remove its work directory.

The callers differ only in how they build the trainer and what they record: ift.train.cell (the grid's cells,
train_metrics.json with the log history) and ift.train.start_points (base and sft_beta).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ift.io import atomic_directory, write_json_atomic


def save_run(trainer, tokenizer, run_dir: Path, write_extras=None) -> None:
    """Write the trained model + tokenizer, and whatever ``write_extras(tmp)`` adds, atomically into ``run_dir``.

    Every process must call it. Under FSDP (or ZeRO-3) each process holds only a shard of every parameter, and
    ``save_pretrained`` on the sharded model fails, so the full state dict is gathered first
    (``accelerator.get_state_dict``, a collective); then only the main process writes, while the others wait.
    tests/distributed/test_distributed.py checks the saved weights of a 2-process FSDP run against a 1-process run.
    """
    from ift.checkpoints import write_checkpoint
    from ift.train.lora import checkpoint_parts

    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model)
    if accelerator.is_main_process:
        with atomic_directory(run_dir) as tmp:
            # A LoRA model is written merged, as a plain checkpoint (ift.train.lora); any other model as it is.
            model, state_dict = checkpoint_parts(accelerator.unwrap_model(trainer.model), state_dict)
            write_checkpoint(model, tokenizer, tmp, state_dict=state_dict)
            if write_extras is not None:
                write_extras(tmp)
    accelerator.wait_for_everyone()


def train_and_save(trainer, tokenizer, *, run_dir: Path, work_dir: Path, metrics: Callable[[Any, Any, float], dict],
                   resume: str | None = None, wandb: tuple[Any, Mapping] | None = None,
                   write_extras: Callable[[Path], None] | None = None) -> dict:
    """Train ``trainer`` (from checkpoint ``resume``, if given) and save the run into ``run_dir``; returns its metrics.

    ``metrics(trainer, train_output, seconds)``: the run's train_metrics.json, written with the checkpoint.
    ``wandb``: (logger config, run record from ift.tracking) to start the run's W&B run, which transformers' W&B
    callback then logs into; None when the logger is off. ``write_extras(tmp)``: more files for the run directory.
    """
    from ift.tracking import finish_run, init_run

    if wandb is not None and trainer.accelerator.is_main_process:
        init_run(*wandb)  # started here, named and configured by us (ift.tracking)
    started = time.time()
    output = trainer.train(resume_from_checkpoint=resume)
    record = metrics(trainer, output, time.time() - started)
    if wandb is not None:
        finish_run()

    def write_records(tmp: Path) -> None:
        write_json_atomic(tmp / "train_metrics.json", record)
        if write_extras is not None:
            write_extras(tmp)

    save_run(trainer, tokenizer, run_dir, write_records)  # the run dir itself is the HF checkpoint
    if trainer.accelerator.is_main_process:
        shutil.rmtree(work_dir, ignore_errors=True)
    return record
