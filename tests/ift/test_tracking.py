"""W&B tracking: a training run writes one offline W&B run (project, group, tags) and never waits on the network.
The stages' own runs (names, tags, config, the evaluation's link to its training run): tests/integration/test_wandb_runs.py."""

from __future__ import annotations

import os

import pytest

from ift.tracking import configure_tracking
from tiny_lm import qa_rows, tiny_model, tiny_tokenizer
from wandb_records import offline_runs


def test_a_training_run_is_the_wandb_run_we_start_and_transformers_logs_into_it(tmp_path, restore_wandb_env):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ift.tracking import RunSpec, finish_run, init_run

    logger = {"report_to": "wandb", "mode": "offline", "project": "ift-test", "dir": str(tmp_path / "wandb")}
    report_to = configure_tracking(logger)
    assert report_to == "wandb" and os.environ["WANDB_MODE"] == "offline"
    tok = tiny_tokenizer()
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, use_cpu=True,
                     bf16=False, activation_checkpointing=False, report_to=report_to, run_name="sft-base-s0",
                     logging_steps=1, save_strategy="no", max_length=64)
    trainer = SFTTrainer(model=tiny_model(tok), args=args, train_dataset=Dataset.from_list(qa_rows(4)),
                         processing_class=tok)
    spec = RunSpec(name="sft-base-s0", id="test-sft-base-s0-0123abcd", group="exp-42/sft-base-s0", job_type="train",
                   tags=("sft", "base", "seed0", "tiny", "train"), config={"method.name": "sft", "seed": 0})
    init_run(logger, spec)
    trainer.train()
    finish_run()
    import wandb

    wandb.teardown()  # stop the W&B service so the offline record is flushed to disk
    runs = offline_runs(tmp_path / "wandb")  # <dir>/offline-run-*: dir is W&B's own wandb/ folder
    assert list(runs) == ["sft-base-s0"]
    run = runs["sft-base-s0"]
    assert (run["id"], run["group"], run["project"]) == (spec.id, "exp-42/sft-base-s0", "ift-test")
    assert run["tags"] == list(spec.tags) and run["job_type"] == "train"
    assert run["config"]["method.name"] == "sft" and run["config"]["max_steps"] == 2  # ours + the Trainer's
    assert "train/loss" in run["summary"]


def test_logger_none_disables_wandb(restore_wandb_env):
    assert configure_tracking({"report_to": "none"}) == "none"
    assert os.environ["WANDB_MODE"] == "disabled"


def test_an_evaluation_writes_an_offline_wandb_run_with_its_headline_numbers(tmp_path, restore_wandb_env):
    from ift.tracking import RunSpec, eval_metrics, log_eval_run

    records = {"leaderboard": {"suite": "toy", "avg": 0.5, "tasks": {"arc": {"value": 0.25}, "gsm8k": {"value": 0.75}}},
               "alpaca": {"win_rate": 40.0, "standard_error": 2.0, "lc_win_rate_minimal": None, "n": 64}}
    metrics = eval_metrics(records)
    assert metrics == {"leaderboard/arc": 0.25, "leaderboard/gsm8k": 0.75, "leaderboard/avg": 0.5,
                       "alpaca/win_rate": 40.0, "alpaca/standard_error": 2.0, "alpaca/n": 64}
    logger = {"report_to": "wandb", "mode": "offline", "project": "ift-test", "dir": str(tmp_path / "wb")}
    spec = RunSpec(name="ift-base-s0/eval", id="test-ift-base-s0_eval-0123abcd", group="exp-7/ift-base-s0",
                   job_type="eval", tags=("ift", "base", "seed0", "tiny", "eval"),
                   config={"profile": "tiny", "train_run_id": "test-ift-base-s0-89abcdef"})
    assert log_eval_run(logger, spec, metrics)
    import wandb

    wandb.teardown()
    runs = offline_runs(tmp_path / "wb" / "wandb")  # a dir not named wandb gets W&B's wandb/ inside it
    assert list(runs) == ["ift-base-s0/eval"]
    run = runs["ift-base-s0/eval"]
    assert run["group"] == "exp-7/ift-base-s0" and run["config"]["train_run_id"] == "test-ift-base-s0-89abcdef"
    assert run["summary"]["leaderboard/gsm8k"] == 0.75 and run["summary"]["alpaca/win_rate"] == 40.0
    assert not log_eval_run({"report_to": "none"}, spec, metrics)


def test_the_no_network_guard_refuses_internet_sockets_but_not_local_ipc(no_network, tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as inet, pytest.raises(AssertionError, match="network"):
        inet.connect(("127.0.0.1", 9))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as local, pytest.raises(FileNotFoundError):
        local.connect(str(tmp_path / "no-such-socket"))  # reaches the OS: the guard let it through


def test_a_studys_runs_share_its_group_and_keep_ids_apart_from_the_grids(tmp_path):
    """``logger.study`` (set by python -m ift.study): the training run, its evaluation's link to it and the study's
    report are in ``<logger.group>/study-<study>``; a study cell computing what a grid cell computes is another W&B
    run (another id), and a grid cell's id is what it was before studies existed."""
    from omegaconf import OmegaConf

    from conftest import compose
    from ift.tracking import IDENTITY_KEYS, _portable, report_run, resolved, run_id, trained_by, training_run

    grid = compose(["method=ift"], root=tmp_path)
    study = compose(["method=ift", "+logger.study=ablation"], root=tmp_path)
    grid_run, study_run = training_run(grid), training_run(study)
    assert (grid_run.name, grid_run.group) == ("ift-base-s0", "tiny/ift-base-s0")
    assert (study_run.name, study_run.group) == ("ift-base-s0", "tiny/study-ablation")
    cell = resolved(grid)
    identity = _portable({key: cell.get(key) for key in IDENTITY_KEYS}, str(tmp_path))
    assert grid_run.id == run_id("tiny", "ift-base-s0", identity) != study_run.id
    run_dir = tmp_path / "runs" / "ift-base-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(study, resolve=True))
    linked = trained_by(run_dir, resolved(study))
    assert (linked["id"], linked["group"]) == (study_run.id, "tiny/study-ablation")
    assert report_run(study.logger, "tiny").group == "tiny/study-ablation"
