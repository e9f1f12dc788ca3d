"""Check a training config before anything heavy happens: a bad value fails in milliseconds, naming its key."""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from ift.checkpoints import CheckpointError, check_checkpoint_dir, is_hub_id
from ift.grid import STARTS
from ift.methods import ConfigError, check_method
from ift.methods import require as _require

PROFILES = ("tiny", "smoke", "paper", "real")


def _check_recipe(recipe, logging_steps: int) -> None:
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length"):
        if recipe.get(key) is not None:
            _require(int(recipe[key]) >= 1, f"trainer.finetune.{key} must be >= 1, got {recipe[key]}")
    _require(float(recipe.learning_rate) > 0, f"trainer.finetune.learning_rate must be > 0, got {recipe.learning_rate}")
    epochs, steps = recipe.get("num_train_epochs"), recipe.get("max_steps")
    _require((epochs is not None and float(epochs) > 0) or (steps is not None and int(steps) > 0),
             "trainer.finetune needs num_train_epochs > 0 or max_steps > 0")
    save_steps = recipe.get("save_steps")
    _require(save_steps is None or (int(save_steps) >= 1 and int(save_steps) % logging_steps == 0),
             f"trainer.finetune.save_steps ({save_steps}) must be a multiple of trainer.logging_steps "
             f"({logging_steps}): losses are checked for NaN when logged, before a checkpoint is saved")
    warmup = recipe.get("warmup_ratio")
    _require(warmup is None or 0 <= float(warmup) < 1, f"trainer.finetune.warmup_ratio must be in [0, 1), got {warmup}")


def _check_lora(method) -> None:
    """``method.peft`` (LoRA; absent or null: off), checked before any model loads (ift.train.lora)."""
    from ift.train.lora import LoraConfigError, lora_settings

    node = OmegaConf.to_container(method, resolve=True) if OmegaConf.is_config(method) else dict(method)
    try:
        lora_settings(node)
    except LoraConfigError as err:
        raise ConfigError(str(err)) from err


def _check_checkpoint_ref(ref: str, key: str, profile: str, hint: str) -> None:
    if profile == "paper" and is_hub_id(ref):
        return
    try:
        check_checkpoint_dir(ref, what="checkpoint", hint=hint)
    except CheckpointError as err:  # re-raised as a config error naming the key
        raise ConfigError(f"{key}: {err}") from err


def _check_seed(seed) -> None:
    """A whole number >= 0: ``seed=1.5`` would train seed 1 under the run name ``...-s1.5``, and ``seed=abc`` would
    fail in ``int()`` without naming the key."""
    if isinstance(seed, str) and re.fullmatch(r"0|[1-9][0-9]*", seed):  # a quoted whole number: "-s<seed>" as is
        return
    _require(isinstance(seed, int) and not isinstance(seed, bool), f"seed must be a whole number >= 0, got {seed!r}")
    _require(seed >= 0, f"seed must be >= 0, got {seed}")


def _check_chain(cfg) -> None:
    """``+chain=c`` (absent: 0) picks chain replicate c's start points; the paper profile has only the hub's."""
    chain = OmegaConf.select(cfg, "chain", default=0)
    _require(isinstance(chain, int) and not isinstance(chain, bool) and chain >= 0,
             f"chain must be a whole number >= 0, got {chain!r}")
    _require(chain == 0 or cfg.get("profile") != "paper",
             f"chain={chain} with profile=paper: the paper's start points are fixed hub checkpoints, so there is no "
             "other chain to start from (set chains: [] in params.yaml)")


def validate_train_config(cfg) -> None:
    """Raise ConfigError for unknown method/start/profile, out-of-range values or a missing start checkpoint."""
    _require(cfg.get("profile") in PROFILES, f"profile={cfg.get('profile')!r} is unknown; choose {PROFILES}")
    check_method(cfg.method)  # its name and its own keys (ift.methods)
    _check_lora(cfg.method)
    start = cfg.start.get("name")
    _require(start in STARTS, f"start={start!r} is unknown; choose one of {', '.join(STARTS)}")
    _check_seed(cfg.get("seed"))
    _check_chain(cfg)
    _check_recipe(cfg.trainer.finetune, int(cfg.trainer.get("logging_steps", 10)))
    run_name = str(cfg.run_name)
    _require(run_name and "/" not in run_name and run_name not in (".", ".."),
             f"run_name={run_name!r} must be a plain directory name")
    if cfg.get("init_from"):
        _check_checkpoint_ref(str(cfg.init_from), "init_from", cfg.profile, "the SFT run must finish first")
    else:
        chain = int(OmegaConf.select(cfg, "chain", default=0))
        _check_checkpoint_ref(str(cfg.start.checkpoint), f"start.checkpoint (start={start})", cfg.profile,
                              f"run `dvc repro {start if chain == 0 else f'{start}_chain@{chain}'}` first")
