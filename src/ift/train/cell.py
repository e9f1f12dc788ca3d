"""``python -m ift.train``: train one grid cell (method x start x seed) and write its run directory.

    python -m ift.train method=ift start=base seed=0            # -> outputs/runs/ift-base-s0/
    python -m ift.train method=sft_dpo start=base seed=0        # SFT on the chat data, then DPO from it
    python -m ift.train method=dpo start=base init_from=<any SFT run>   # DPO from any checkpoint
    python -m ift.train -m method=sft,ift start=base,sft_beta seed=0,1      # Hydra multirun, same layout

A run directory holds the HF checkpoint (model, tokenizer, chat template), the resolved ``config.yaml``,
``train_metrics.json`` and ``data.json`` (what the training set was made of, and any skipped rows). It appears
atomically when training has finished. Periodic Trainer checkpoints go to ``outputs/work/<run>/``; re-running a
killed run resumes from the last one when the config and the contents of the checkpoint it starts from are unchanged
(ift.train.resume).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.io import write_json_atomic, write_text_atomic
from ift.methods import METHODS

# Keys only ift.evaluate reads. A run's saved config.yaml leaves them out: they are not the training stage's DVC deps,
# so editing them never retrains the cell, and a saved copy would go stale beside the weights it describes.
EVALUATION_KEYS = ("suite", "judge", "eval", "model_dir", "out", "evals")


def saved_config(cfg) -> str:
    """The resolved config.yaml a run directory keeps: everything training read, none of the evaluation's keys."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.to_yaml({key: value for key, value in resolved.items() if key not in EVALUATION_KEYS})


def _metrics(trainer, method: str, seconds: float, resumed_from: str | None) -> dict:
    """train_metrics.json: final/per-step losses, steps, tokens, time; plus the method's own logged values."""
    from ift.numerics import describe

    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    final = trainer.state.log_history[-1] if trainer.state.log_history else {}
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    metrics = {
        "method": method,
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0),
        "final_loss": history[-1]["loss"] if history else None,
        "train_loss": final.get("train_loss"),
        "tokens_seen": tokens,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 and tokens else None,
        "resumed_from": resumed_from,
        "numerics": describe(),  # the CPU and kernels these weights came from (ift.numerics)
        "log_history": history,
    }
    if resumed_from is not None:  # transformers' train_loss covers only the steps after the resume (ift.train.resume)
        from ift.train.resume import resumed_loss_entries

        metrics.update(resumed_loss_entries(trainer, metrics["train_loss"]))
    for key, logged_as in METHODS[method].logged.items():  # the method's own per-step values (ift.methods)
        metrics[key] = [entry.get(logged_as) for entry in history]
    return metrics


def run_training(cfg, *, run_dir: Path | None = None, work_dir: Path | None = None, callbacks=()) -> Path:
    """Validate, load, train, save; returns the run directory. ``method=sft_dpo`` runs its two halves.

    ``run_dir`` / ``work_dir``: instead of ``paths.runs/<run_name>`` and ``paths.outputs/work/<run_name>``;
    ``callbacks``: extra TrainerCallbacks for the run's final part (the DPO half of SFT+DPO); ift.selection's
    snapshots. Neither changes what is trained."""
    from ift.train.config_checks import validate_train_config

    validate_train_config(cfg)  # before any model loads
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.paths.runs) / str(cfg.run_name)
    work_dir = Path(work_dir) if work_dir is not None else Path(cfg.paths.outputs) / "work" / str(cfg.run_name)
    if METHODS[cfg.method.name].halves:
        return _run_sft_dpo(cfg, run_dir, work_dir, callbacks)  # the only method made of halves
    return _train_one(cfg, run_dir=run_dir, work_dir=work_dir, callbacks=callbacks)


def _with_method(cfg, method: dict):
    """A copy of ``cfg`` whose method node is replaced (the halves of sft_dpo)."""
    from omegaconf import OmegaConf, open_dict

    half = cfg.copy()
    with open_dict(half):
        half.method = OmegaConf.create(method)
    return half


def _run_sft_dpo(cfg, run_dir: Path, work_dir: Path, callbacks=()) -> Path:
    """SFT+DPO as two dependent training runs: SFT on the chat data, then DPO from that checkpoint (which is
    also DPO's reference). From sft_beta the SFT half is sft_beta itself (the Zephyr recipe), so only DPO runs.

    The finished SFT half is kept inside the cell's run directory as ``sft_half/``; while the cell is in progress it
    lives in ``outputs/work/<run>/sft_half`` so that a killed DPO half does not redo the SFT half.
    """
    from omegaconf import OmegaConf

    from ift.train.resume import checkpoint_digest, config_hash, fingerprint_change, run_fingerprint

    carry: dict[str, Path] = {}
    init_ref = None
    if cfg.start.name == "base":
        sft_method = {"name": "sft", **OmegaConf.to_container(cfg.method.sft, resolve=True)}
        sft_dir, stamp = work_dir / "sft_half", work_dir / "sft_half.fingerprint"
        # A kept SFT half is reused only if it was trained with the SFT config and start checkpoint asked for now.
        wanted = run_fingerprint(config_hash(_with_method(cfg, sft_method)), checkpoint_digest(_default_init(cfg)))
        if (sft_dir / "train_metrics.json").exists():
            kept = stamp.read_text().strip() if stamp.exists() else ""
            if kept != wanted:
                print(f"[train] {cfg.run_name}: not reusing the SFT half in {sft_dir}: "
                      f"{fingerprint_change(kept, wanted)}; training it again")
                shutil.rmtree(sft_dir, ignore_errors=True)
        if not (sft_dir / "train_metrics.json").exists():
            _train_one(_with_method(cfg, sft_method), run_dir=sft_dir, work_dir=work_dir / "sft_half.work",
                       cell=cfg, part="sft_half")
            write_text_atomic(stamp, wanted + "\n")
        carry["sft_half"] = init_ref = sft_dir
    dpo_method = {"name": "dpo", **OmegaConf.to_container(cfg.method.dpo, resolve=True)}
    result = _train_one(_with_method(cfg, dpo_method), run_dir=run_dir, work_dir=work_dir / "dpo.work",
                        init_ref=init_ref, carry=carry, config_to_save=cfg, cell=cfg, part="dpo",
                        callbacks=callbacks)
    shutil.rmtree(work_dir, ignore_errors=True)
    return result


def _default_init(cfg) -> str:
    """The checkpoint a run starts from unless told otherwise: ``init_from`` or the start point."""
    return str(cfg.init_from) if cfg.get("init_from") else str(cfg.start.checkpoint)


def _train_one(cfg, *, run_dir: Path, work_dir: Path, init_ref=None, carry=None, config_to_save=None, cell=None,
               part: str | None = None, callbacks=()) -> Path:
    """One TRL training run from ``init_ref`` (default: init_from or the start point) into ``run_dir``.

    ``cell``/``part``: the grid cell's config and which half of it this is (SFT+DPO), for its W&B run's name
    (``<cell>/<part>``), tags and config (ift.tracking); by default the run is the whole cell ``cfg``.
    """
    from transformers import set_seed

    from ift.checkpoints import load_causal_lm
    from ift.data import DataConfig, training_data
    from ift.tracking import configure_tracking, training_run
    from ift.train import lora
    from ift.train.arguments import training_kwargs
    from ift.train.loop import train_and_save
    from ift.train.resume import RunLossSum, checkpoint_digest, config_hash, resume_point, run_fingerprint
    from ift.train.trainers import build_trainer

    began = time.time()
    cell = cfg if cell is None else cell
    name = f"{cell.run_name}/{part}" if part else str(cell.run_name)
    method, start, seed = str(cfg.method.name), str(cfg.start.name), int(cfg.seed)
    if init_ref is None:
        init_ref = _default_init(cfg)
    set_seed(seed)
    model, tokenizer = load_causal_lm(init_ref, what=f"initial checkpoint of {run_dir.name}")
    model = lora.wrap(model, cell.method)  # method.peft (absent: the model itself); sft_dpo: both halves
    recipe = cfg.trainer.finetune
    # max_length: a row whose prompt leaves the trainer no answer token is skipped and counted here
    # (ift.data.fit), not dropped silently by TRL, so data.json describes exactly the rows the trainer sees.
    data = training_data(METHODS[method], start, DataConfig.from_mapping(cfg.data), seed, tokenizer=tokenizer,
                         targets=cfg.method.get("targets"), max_length=int(recipe.max_length))
    report_to = configure_tracking(cfg.logger)
    common = training_kwargs(cfg.trainer, recipe, output_dir=work_dir, seed=seed, run_name=name,
                             report_to=report_to)
    trainer = build_trainer(cfg.method, model=model, tokenizer=tokenizer, dataset=data.dataset,
                            common_args=common, max_length=int(recipe.max_length))
    for callback in callbacks:
        trainer.add_callback(callback)
    loss_sum = RunLossSum(trainer)
    trainer.add_callback(loss_sum)
    resume = resume_point(work_dir, run_fingerprint(config_hash(cfg), checkpoint_digest(init_ref)),
                           trainer.accelerator)
    loss_sum.resume_from(resume)
    print(f"[train] {name}: {method} from {init_ref} on {len(data.dataset)} rows "
          f"({data.part_sizes}){f', resuming from {resume}' if resume else ''}")
    wandb = (cfg.logger, training_run(cell, part=part)) if report_to == "wandb" else None

    def write_extras(tmp: Path) -> None:
        write_text_atomic(tmp / "config.yaml", saved_config(config_to_save or cfg))
        write_json_atomic(tmp / "data.json", data.summary())
        for half, source in (carry or {}).items():
            shutil.move(str(source), str(tmp / half))

    metrics = train_and_save(trainer, tokenizer, run_dir=run_dir, work_dir=work_dir, resume=resume, wandb=wandb,
                             metrics=lambda trainer, _, seconds: _metrics(trainer, method, seconds, resume),
                             write_extras=write_extras)
    loss = metrics["final_loss"]
    print(f"[train] {name} done in {time.time() - began:.1f} s: {metrics['steps']} steps, final loss "
          f"{'n/a' if loss is None else f'{loss:.4f}'}")
    return run_dir


def main() -> None:
    import hydra

    from ift.paths import CONF_DIR

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _app(cfg) -> None:
        run_training(cfg)

    _app()
