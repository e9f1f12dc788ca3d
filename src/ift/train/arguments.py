"""Turn a training recipe from ``conf/trainer/*.yaml`` into keyword arguments for TRL configs.

All TRL configs (SFTConfig, DPOConfig, ORPOConfig) subclass transformers' TrainingArguments, so one function
serves every method; method-specific keys (beta, max_prompt_length, ...) are added by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Keys of a recipe that are passed to TrainingArguments unchanged.
_PASSTHROUGH = (
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "save_steps",
    "save_total_limit",
)


def training_kwargs(
    trainer_cfg: Mapping,
    recipe: Mapping,
    *,
    output_dir: str | Path,
    seed: int,
    run_name: str,
    report_to: str,
) -> dict:
    """Common TrainingArguments kwargs: the recipe's optimisation settings plus the profile's hardware settings."""
    kwargs = {key: recipe[key] for key in _PASSTHROUGH if key in recipe and recipe[key] is not None}
    if recipe.get("warmup_ratio") is not None:
        # transformers 5 folded warmup_ratio into warmup_steps: a float in [0, 1) is a ratio of all steps.
        ratio = float(recipe["warmup_ratio"])
        if not 0 <= ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {ratio}")
        kwargs["warmup_steps"] = ratio
    if recipe.get("global_batch_size") is not None:
        kwargs["gradient_accumulation_steps"] = accumulation_for_global_batch(
            int(recipe["global_batch_size"]), int(recipe["per_device_train_batch_size"]), world_size()
        )
    device = str(trainer_cfg.get("device", "cpu"))
    bf16 = bool(trainer_cfg.get("bf16", False))
    if device == "cpu" and bf16:
        raise ValueError("trainer.bf16=true needs trainer.device=cuda; CPU training runs in fp32")
    kwargs.update(
        output_dir=str(output_dir),
        run_name=run_name,
        seed=int(seed),
        data_seed=int(seed),
        bf16=bf16,
        fp16=False,
        use_cpu=device == "cpu",
        activation_checkpointing=bool(trainer_cfg.get("activation_checkpointing", False)),
        logging_steps=int(trainer_cfg.get("logging_steps", 10)),
        logging_nan_inf_filter=False,  # a NaN must surface (ift.train.guards), not be averaged away
        logging_first_step=True,
        dataloader_num_workers=int(trainer_cfg.get("dataloader_num_workers", 0)),
        report_to=report_to,
        # A recipe with save_steps checkpoints periodically (so a killed run can resume); otherwise never.
        save_strategy=str(recipe.get("save_strategy") or ("steps" if recipe.get("save_steps") else "no")),
        include_num_input_tokens_seen="non_padding",
        eval_strategy="no",
        disable_tqdm=False,
    )
    return kwargs


def world_size() -> int:
    """Number of training processes (set by accelerate/torchrun; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def accumulation_for_global_batch(global_batch: int, per_device: int, processes: int) -> int:
    """Gradient-accumulation steps so that per_device x steps x processes == global_batch exactly."""
    if global_batch < 1 or per_device < 1:
        raise ValueError(f"trainer.global_batch_size ({global_batch}) and per_device_train_batch_size "
                         f"({per_device}) must be >= 1")
    per_step = per_device * processes
    if global_batch % per_step:
        raise ValueError(
            f"trainer.global_batch_size={global_batch} is not a multiple of per_device_train_batch_size x "
            f"processes = {per_device} x {processes}"
        )
    return global_batch // per_step
