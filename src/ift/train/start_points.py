"""The two start points of the paper's grid, as DVC stages:

* ``python -m ift.train.base``: pretrain a tiny Mistral-shaped LM from scratch on the world's
  corpus (the analog of Mistral-7B-v0.1) and save it to ``outputs/models/base``.
* ``python -m ift.train.sft_beta``: SFT that model on the whole chat train set with TRL (the
  analog of mistral-7b-sft-beta, i.e. Mistral SFT-trained on UltraChat-200k), save it to
  ``outputs/models/sft_beta`` and measure both start points into ``outputs/models/sft_beta/quality.json``.

In the paper profile both stages only record the hub id they stand for (they cannot be trained here).
"""

from __future__ import annotations

import time
from pathlib import Path

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.io import write_json_atomic


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


def _train_and_save(cfg, *, stage: str, model, tokenizer, dataset, recipe, sft_kwargs: dict) -> dict:
    """Run TRL's SFTTrainer with a recipe from conf/trainer and save the result atomically with its metrics."""
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from ift.numerics import describe
    from ift.tracking import configure_tracking
    from ift.train.checkpoints import save_checkpoint
    from ift.train.recipe import training_kwargs

    out_dir = Path(cfg.paths.models) / stage
    work_dir = Path(cfg.paths.outputs) / "work" / stage
    report_to = configure_tracking(cfg.logger, group=f"{cfg.profile}-start", tags=[stage, cfg.profile])
    set_seed(int(cfg.seed))
    args = SFTConfig(
        **training_kwargs(cfg.trainer, recipe, output_dir=work_dir, seed=int(cfg.seed), run_name=stage,
                          report_to=report_to),
        max_length=int(recipe.max_length),
        **sft_kwargs,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    started = time.time()
    result = trainer.train()
    seconds = time.time() - started
    save_checkpoint(trainer.model, tokenizer, out_dir)
    losses = [(log["step"], log["loss"]) for log in trainer.state.log_history if "loss" in log]
    tokens = int(trainer.state.num_input_tokens_seen) if trainer.state.num_input_tokens_seen else None
    metrics = {
        "stage": stage,
        "profile": cfg.profile,
        "seed": int(cfg.seed),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "steps": int(result.global_step),
        "final_train_loss": losses[-1][1] if losses else None,
        "mean_train_loss": float(result.training_loss),
        "loss_curve": losses,
        "train_seconds": round(seconds, 2),
        "tokens_seen": tokens,
        "numerics": describe(),  # the CPU and kernels these weights came from (ift.numerics)
    }
    write_json_atomic(out_dir / "train_metrics.json", metrics)
    if report_to == "wandb":
        import wandb

        if wandb.run is not None:
            wandb.finish()
    print(f"[{stage}] {metrics['steps']} steps in {seconds:.0f}s, final loss {metrics['final_train_loss']:.3f}"
          f" -> {out_dir}")
    return metrics


def build_base(cfg) -> dict:
    """Pretrain the tiny base model on the world's corpus (plain text, no chat template)."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(cfg.data.tokenizer))
    model = build_tiny_model(cfg.model, tokenizer, int(cfg.seed))
    corpus = load_dataset("json", data_files={"train": str(Path(cfg.data.dir) / "corpus" / "train.jsonl")},
                          split="train")
    # "wrapped" packing = classic LM pretraining: documents joined with eos and cut into fixed blocks.
    sft_kwargs = dict(packing=True, packing_strategy="wrapped", dataset_text_field="text",
                      completion_only_loss=False)
    return _train_and_save(cfg, stage="base", model=model, tokenizer=tokenizer, dataset=corpus,
                           recipe=cfg.trainer.pretrain, sft_kwargs=sft_kwargs)


def build_sft_beta(cfg) -> dict:
    """SFT the base model on the whole chat train set, then measure both start points."""
    from ift.data import load_chat_for_sft
    from ift.train.checkpoints import load_causal_lm
    from ift.train.quality import measure_start_points

    base_dir = Path(cfg.paths.models) / "base"
    model, tokenizer = load_causal_lm(base_dir, what="base start point", hint="run `dvc repro base` first")
    dataset, skips = load_chat_for_sft(cfg.data, tokenizer=tokenizer, seed=int(cfg.seed))
    metrics = _train_and_save(cfg, stage="sft_beta", model=model, tokenizer=tokenizer, dataset=dataset,
                              recipe=cfg.trainer.sft_beta, sft_kwargs=dict(completion_only_loss=True))
    out_dir = Path(cfg.paths.models) / "sft_beta"
    write_json_atomic(out_dir / "data_skips.json", skips.to_dict())
    quality = measure_start_points(cfg, base_dir=base_dir, sft_beta_dir=out_dir)
    write_json_atomic(out_dir / "quality.json", quality)
    return metrics


def run(stage: str) -> None:
    """Hydra entry shared by ``python -m ift.train.base`` and ``python -m ift.train.sft_beta``."""
    import hydra

    from ift.paths import CONF_DIR

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _app(cfg) -> None:
        if cfg.profile == "paper":
            record_hub_start_point(cfg, stage)
        elif stage == "base":
            build_base(cfg)
        else:
            build_sft_beta(cfg)

    _app()
