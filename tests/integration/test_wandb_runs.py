"""W&B runs as the stages write them, read back from the offline run files (tests/wandb_records.py): one naming,
tagging and grouping scheme, the resolved Hydra config flattened with dots plus git_commit and dvc_stage, and an
evaluation that names its training run. Also the log lines the stages end with, and the noise filtered from them."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from conftest import compose
from wandb_records import offline_runs


def _scratch_root(smoke_root: Path, tmp_path: Path) -> Path:
    """A root that reads the session's smoke world and start points and writes its own runs (the session root's
    run directories belong to other tests)."""
    root = tmp_path / "root"
    (root / "outputs").mkdir(parents=True)
    for part in ("world", "models"):
        (root / "outputs" / part).symlink_to(smoke_root / "outputs" / part)
    return root


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
def test_a_cells_training_and_evaluation_runs_are_named_tagged_configured_and_linked(
        smoke_root, tmp_path, restore_wandb_env, monkeypatch, capsys, no_network):
    """sft_dpo from base (two training runs, then its evaluation), W&B offline, read back from the run files."""
    import wandb

    from ift.evaluate.checkpoint_eval import run_from_config
    from ift.tracking import training_run
    from ift.train.cell import run_training

    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    root = _scratch_root(smoke_root, tmp_path)
    logger = ["logger=wandb_offline", f"logger.dir={tmp_path / 'wandb'}"]
    cell_cfg = compose(["profile=smoke", "method=sft_dpo", "start=base", "seed=0", *logger], root=root)
    run_dir = run_training(cell_cfg)
    monkeypatch.setenv("DVC_STAGE", "eval@sft_dpo-base-0")  # what `dvc repro` exports to the stage's command
    run_from_config(compose(["profile=smoke", f"model_dir={run_dir}", f"out={root / 'outputs/evals' / run_dir.name}",
                             "evals=[alpaca]", *logger], root=root))
    wandb.teardown()  # flush the offline files
    out = capsys.readouterr().out

    runs = offline_runs(tmp_path / "wandb")  # the layout `wandb sync --sync-all` reads at a repo root
    assert sorted(runs) == ["sft_dpo-base-s0/dpo", "sft_dpo-base-s0/eval", "sft_dpo-base-s0/sft_half"]
    sft_half, dpo, evaluation = (runs[f"sft_dpo-base-s0/{part}"] for part in ("sft_half", "dpo", "eval"))
    for run, job_type in ((sft_half, "train"), (dpo, "train"), (evaluation, "eval")):
        assert run["project"] == "ift-replication" and run["job_type"] == job_type
        assert run["group"] == "smoke/sft_dpo-base-s0"  # <logger.group>/<cell>: the cell's runs together
        assert run["tags"] == ["sft_dpo", "base", "seed0", "smoke", job_type]
        config = run["config"]
        assert config["method.name"] == "sft_dpo" and config["start.name"] == "base"
        assert config["seed"] == 0 and config["profile"] == "smoke"
        assert config["method.dpo.beta"] == 0.1 and config["trainer.finetune.learning_rate"] == 2e-4
        assert config["data.n_prefs"] == 200
        assert config["git_commit"] == "unknown"  # the scratch root is no git checkout
        assert not {"method", "start", "model", "data", "trainer", "logger", "paths"} & set(config)  # flat, dotted
    assert sft_half["config"]["part"] == "sft_half" and dpo["config"]["part"] == "dpo"
    assert sft_half["config"]["dvc_stage"] == dpo["config"]["dvc_stage"] == "train@sft_dpo-base-0"  # derived
    assert evaluation["config"]["dvc_stage"] == "eval@sft_dpo-base-0"  # DVC_STAGE
    # transformers' W&B callback logged into our runs: its TrainingArguments and the training curve are there.
    assert dpo["config"]["beta"] == 0.1 and dpo["config"]["run_name"] == "sft_dpo-base-s0/dpo"
    assert "train/loss" in dpo["summary"] and "train/loss" in sft_half["summary"]

    # The evaluation names the run whose weights it evaluated (the DPO half), in that run's group.
    assert evaluation["config"]["train_run_name"] == dpo["name"]
    assert evaluation["config"]["train_run_id"] == dpo["id"]
    assert evaluation["config"]["model_dir"] == str(run_dir) and evaluation["config"]["suite.name"] == "toy"
    assert "alpaca/win_rate" in evaluation["summary"]
    # Ids: deterministic (the same cell and config give the same id) and distinct per run.
    assert dpo["id"] == training_run(cell_cfg, part="dpo").id
    assert len({run["id"] for run in runs.values()}) == 3
    assert not any(ch in run["id"] for run in runs.values() for ch in ":;,#?/'")

    # Each stage ends with one line: [stage] <name> done in <wall> s: <main figures>.
    assert re.search(r"^\[train\] sft_dpo-base-s0/sft_half done in \d+\.\d s: \d+ steps, final loss \d+\.\d{4}$",
                     out, re.M)
    assert re.search(r"^\[train\] sft_dpo-base-s0/dpo done in \d+\.\d s: \d+ steps, final loss \d+\.\d{4}$", out, re.M)
    assert re.search(r"^\[evaluate\] sft_dpo-base-s0 done in \d+\.\d s: win rate \d+\.\d%$", out, re.M)


@pytest.mark.xdist_group("smoke_pipeline")
def test_a_start_points_evaluation_names_the_start_points_run(smoke_root, tmp_path):
    """The evaluation of a start point reads back the id its training stage gave its W&B run."""
    from ift.tracking import eval_run, start_point_run

    model_dir = smoke_root / "outputs" / "models" / "sft_beta"
    metrics = json.loads((model_dir / "train_metrics.json").read_text())
    cfg = compose(["profile=smoke", "logger=wandb_offline"], root=smoke_root)
    trained = start_point_run(cfg, "sft_beta", metrics["parameters"])
    assert trained.name == "sft_beta" and trained.job_type == "start_point"
    assert trained.tags == ("sft_beta", "seed0", "smoke", "start_point")
    assert trained.config["start.name"] == "sft_beta" and trained.config["method.name"] == "none"
    assert trained.config["dvc_stage"] == "sft_beta"
    chain = start_point_run(compose(["profile=smoke", "logger=wandb_offline", "seed=2", "+chain=2"], root=smoke_root),
                            "sft_beta", metrics["parameters"])
    assert (chain.name, chain.config["dvc_stage"]) == ("sft_beta-chain2", "sft_beta_chain@2") and chain.id != trained.id

    spec = eval_run(compose(["profile=smoke", f"model_dir={model_dir}", f"out={tmp_path / 'sft_beta'}"],
                            root=smoke_root))
    assert (spec.name, spec.group) == ("sft_beta/eval", trained.group) == ("sft_beta/eval", "smoke/sft_beta")
    assert spec.config["train_run_name"] == "sft_beta" and spec.config["train_run_id"] == trained.id
    assert spec.config["dvc_stage"] == "eval_start@sft_beta" and spec.config["start.name"] == "sft_beta"
    assert spec.tags == ("sft_beta", "seed0", "smoke", "eval")


def test_run_ids_are_valid_wandb_ids_and_change_with_what_determines_the_numbers():
    from ift.tracking import flatten, run_id

    base = run_id("tiny", "sft_dpo-base-s0/dpo", {"method": {"beta": 0.1}})
    assert base == run_id("tiny", "sft_dpo-base-s0/dpo", {"method": {"beta": 0.1}})
    assert base.startswith("tiny-sft_dpo-base-s0_dpo-") and not set(":;,#?/'") & set(base)
    assert base != run_id("tiny", "sft_dpo-base-s0/dpo", {"method": {"beta": 0.2}})
    assert base != run_id("tiny", "sft_dpo-base-s0_dpo", {"method": {"beta": 0.1}})  # sanitising cannot collide
    assert flatten({"method": {"gamma": 0.95, "dpo": {"beta": 0.1}}, "seed": 0, "evals": ["a"], "empty": {}}) == {
        "method.gamma": 0.95, "method.dpo.beta": 0.1, "seed": 0, "evals": ["a"], "empty": {}}


def test_git_commit_and_dvc_stage(tmp_path, monkeypatch):
    from ift.tracking import dvc_stage, git_commit

    assert git_commit(tmp_path) == "unknown"
    assert git_commit(tmp_path / "missing") == "unknown"
    repo = Path(__file__).resolve().parents[2]
    if (repo / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", git_commit(repo))
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert dvc_stage("train@ift-base-0") == "train@ift-base-0"
    monkeypatch.setenv("DVC_STAGE", "train@ift-base-1")
    assert dvc_stage("train@ift-base-0") == "train@ift-base-1"


def test_the_wandb_folder_is_the_one_wandb_sync_reads_at_the_repo_root(tmp_path, monkeypatch, restore_wandb_env):
    """Runs land in <root>/wandb/offline-run-* (not <root>/wandb/wandb/): `wandb sync --sync-all` at the root."""
    from ift.tracking import configure_tracking

    monkeypatch.delenv("WANDB_DIR", raising=False)
    cfg = compose(["logger=wandb_offline"], root=tmp_path)
    assert cfg.logger.dir == f"{tmp_path}/wandb"
    configure_tracking(cfg.logger)
    assert os.environ["WANDB_DIR"] == str(tmp_path)  # W&B writes to <WANDB_DIR>/wandb/
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    assert compose(["logger=wandb_offline"], root=tmp_path).logger.dir == f"{tmp_path}/elsewhere/wandb"


def test_only_the_orpo_token_count_warning_is_filtered():
    from ift.train.trainers import _quiet_untrackable_token_count

    trainer_logger = logging.getLogger("transformers.trainer")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    trainer_logger.addHandler(handler)
    try:
        _quiet_untrackable_token_count()
        _quiet_untrackable_token_count()  # once
        trainer_logger.warning("Tried to track the number of tokens seen, however the current model is not "
                               "configured properly to know what item is the input.")
        trainer_logger.warning("Something else went wrong")
    finally:
        trainer_logger.removeHandler(handler)
    assert seen == ["Something else went wrong"]
    assert sum(type(f).__name__ == "_UntrackableTokenCount" for f in trainer_logger.filters) == 1


def test_the_glm_fit_drops_liblinears_class_label_lines_and_passes_every_other_line(capfd, monkeypatch):
    import contextlib
    import random

    from ift.evaluate import alpaca_eval as alpaca

    with alpaca._without_glm_fit_noise():
        os.write(2, b"WARNING: class label 1 specified in weight is not found\nsomething of ours\n")
    err = capfd.readouterr().err
    assert "something of ours" in err and "class label" not in err

    rng = random.Random(1)
    preferences = [2.0] + [1.0] * 31  # one win of 32: cross-validation fits without a win, where liblinear complains
    rng.shuffle(preferences)
    annotations = [{"preference": p, "output_1": "x" * rng.randint(5, 80), "output_2": "y" * rng.randint(5, 80)}
                   for p in preferences]
    filtered = alpaca.lc_win_rate_minimal(annotations)
    assert "class label" not in capfd.readouterr().err
    monkeypatch.setattr(alpaca, "_without_glm_fit_noise", contextlib.nullcontext)
    unfiltered = alpaca.lc_win_rate_minimal(annotations)
    assert "class label 1 specified in weight is not found" in capfd.readouterr().err  # the case that prints it
    assert filtered == unfiltered and 0.0 < filtered < 100.0
