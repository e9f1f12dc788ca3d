"""What the two start points of the paper's grid share (their stages: :mod:`ift.train.base`, :mod:`ift.train.sft_beta`):

* ``python -m ift.train.base``: pretrain a tiny Mistral-shaped LM from scratch on the world's
  corpus (the analog of Mistral-7B-v0.1) and save it to ``outputs/models/base``.
* ``python -m ift.train.sft_beta``: SFT that model on the whole chat train set with TRL (the
  analog of mistral-7b-sft-beta, i.e. Mistral SFT-trained on UltraChat-200k), save it to
  ``outputs/models/sft_beta`` and measure both start points into ``outputs/models/sft_beta/quality.json``.

Both train with TRL's SFTTrainer on a recipe of conf/trainer (``pretrain:``, ``sft_beta:``), whose
``memory_efficient`` switch gives it the lean LM head of the grid's cells (ift.train.lean_head; TRL's loss and metrics
on log-probs from ift.logprobs' chunked kernel) or, when false, TRL's own fused head.

In the paper profile both stages only record the hub id they stand for (they cannot be trained here).
"""

from __future__ import annotations

import time
from pathlib import Path

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.io import write_json_atomic

# The conf/trainer recipe each start-point stage trains with.
RECIPES = {"base": "pretrain", "sft_beta": "sft_beta"}


class ChainConfigError(ValueError):
    """A start-point stage asked for an impossible chain replicate (docs/reproducibility.md)."""


def chain_of(cfg) -> int:
    """The whole-chain replicate a stage works in (``+chain=c``; absent: 0)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.select(cfg, "chain", default=0))


def check_chain(cfg, stage: str) -> int:
    """Chain c's start points are trained with seed c, and only the tiny/smoke profiles train start points."""
    chain = chain_of(cfg)
    if chain < 0:
        raise ChainConfigError(f"[{stage}] chain={chain}: a chain replicate is a whole number >= 0")
    if cfg.profile == "paper" and chain != 0:
        raise ChainConfigError(f"[{stage}] chain={chain} with profile=paper: the paper's start points are fixed hub "
                               "checkpoints, so there is no other chain to train (set chains: [] in params.yaml)")
    if int(cfg.seed) != chain:
        raise ChainConfigError(f"[{stage}] seed={cfg.seed} with chain={chain}: chain c's start points are trained "
                               f"with seed c; pass seed={chain} +chain={chain}")
    return chain


def start_point_dir(cfg, stage: str) -> Path:
    """Where ``stage`` (base | sft_beta) of this config's chain lives: conf/profile's start_checkpoints."""
    return Path(str(cfg.start_checkpoints[stage]))


def record_hub_start_point(cfg, stage: str) -> None:
    out = Path(cfg.paths.models) / stage
    write_json_atomic(out / "hub.json", {"hub_id": str(cfg.start_checkpoints[stage]), "profile": cfg.profile})
    print(f"[{stage}] profile={cfg.profile}: start point is the hub checkpoint {cfg.start_checkpoints[stage]}")


def build_tiny_model(model_cfg, tokenizer, seed: int):
    """A randomly initialised MistralForCausalLM whose shape comes from conf/model/*.yaml (seeded)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=int(model_cfg.hidden_size),
        intermediate_size=int(model_cfg.intermediate_size),
        num_hidden_layers=int(model_cfg.num_hidden_layers),
        num_attention_heads=int(model_cfg.num_attention_heads),
        num_key_value_heads=int(model_cfg.num_key_value_heads),
        max_position_embeddings=int(model_cfg.max_position_embeddings),
        rope_theta=float(model_cfg.rope_theta),
        tie_word_embeddings=bool(model_cfg.tie_word_embeddings),
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=str(model_cfg.get("attn_implementation", "sdpa")),
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def lean_options(cfg, stage: str):
    """The stage's recipe's ``memory_efficient`` and ``chunk_size`` (absent: true, 1024), checked: a bad value raises
    ift.methods.ConfigError naming ``trainer.<recipe>.<key>``."""
    from ift.train.lean_head import LeanOptions

    key = RECIPES[stage]
    return LeanOptions.of(cfg.trainer[key], where=f"trainer.{key}")


def start_point_trainer(cfg, *, stage: str, model, tokenizer, dataset, sft_kwargs: dict, report_to: str = "none",
                        callbacks=()):
    """TRL's SFTTrainer with the stage's recipe from conf/trainer, on the lean LM head when the recipe says
    ``memory_efficient: true`` (ift.train.lean_head.TRLSFTTrainer, the grid's SFT trainer)."""
    from trl import SFTConfig

    from ift.train.arguments import training_kwargs
    from ift.train.lean_head import TRLSFTTrainer

    recipe = cfg.trainer[RECIPES[stage]]
    name = start_point_dir(cfg, stage).name  # base, sft_beta; base-chain1 ... in chain replicates
    args = SFTConfig(
        **training_kwargs(cfg.trainer, recipe, output_dir=Path(cfg.paths.outputs) / "work" / name,
                          seed=int(cfg.seed), run_name=name, report_to=report_to),
        max_length=int(recipe.max_length),
        **sft_kwargs,
    )
    return TRLSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=list(callbacks), lean=lean_options(cfg, stage))


def train_start_point(cfg, *, stage: str, model, tokenizer, dataset, sft_kwargs: dict) -> dict:
    """Train the stage's start point (:func:`start_point_trainer`) and save it atomically with its metrics."""
    from transformers import set_seed

    from ift.numerics import describe
    from ift.tracking import configure_tracking, start_point_run
    from ift.train import loop
    from ift.train.guards import FiniteLossGuard

    out_dir = start_point_dir(cfg, stage)
    report_to = configure_tracking(cfg.logger)
    set_seed(int(cfg.seed))
    trainer = start_point_trainer(cfg, stage=stage, model=model, tokenizer=tokenizer, dataset=dataset,
                                  sft_kwargs=sft_kwargs, report_to=report_to, callbacks=[FiniteLossGuard()])
    parameters = sum(p.numel() for p in trainer.model.parameters())

    def metrics(trainer, result, seconds: float) -> dict:
        losses = [(log["step"], log["loss"]) for log in trainer.state.log_history if "loss" in log]
        tokens = int(trainer.state.num_input_tokens_seen) if trainer.state.num_input_tokens_seen else None
        return {
            "stage": stage,
            "profile": cfg.profile,
            "seed": int(cfg.seed),
            "parameters": parameters,
            "steps": int(result.global_step),
            "final_train_loss": losses[-1][1] if losses else None,
            "mean_train_loss": float(result.training_loss),
            "loss_curve": losses,
            "train_seconds": round(seconds, 2),
            "tokens_seen": tokens,
            "numerics": describe(),  # the CPU and kernels these weights came from (ift.numerics)
        }

    wandb = (cfg.logger, start_point_run(cfg, stage, parameters)) if report_to == "wandb" else None
    return loop.train_and_save(trainer, tokenizer, run_dir=out_dir, work_dir=Path(trainer.args.output_dir),
                               metrics=metrics, wandb=wandb)


def run(stage: str, build) -> None:
    """Hydra entry shared by ``python -m ift.train.base`` and ``python -m ift.train.sft_beta``: ``build(cfg)`` trains
    the start point (tiny and smoke profiles); the paper profile records the hub checkpoint it stands for."""
    import hydra

    from ift.paths import CONF_DIR

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _app(cfg) -> None:
        check_chain(cfg, stage)
        if cfg.profile == "paper":
            record_hub_start_point(cfg, stage)
            return
        lean_options(cfg, stage)  # a bad recipe key fails here, before any model or data loads
        began = time.time()
        metrics = build(cfg)
        loss = metrics["final_train_loss"]
        print(f"[{stage}] {start_point_dir(cfg, stage).name} done in {time.time() - began:.1f} s: {metrics['steps']} steps, final loss "
              f"{'n/a' if loss is None else f'{loss:.4f}'}")

    _app()
