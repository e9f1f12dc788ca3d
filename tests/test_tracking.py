"""W&B tracking: a training run writes one offline W&B run (project, group, tags) and never waits on the network."""

from __future__ import annotations

import glob
import os

import pytest

from ift.tracking import configure_tracking
from tiny_lm import qa_rows, tiny_model, tiny_tokenizer


def test_training_run_writes_an_offline_wandb_run_with_group_and_tags(tmp_path, restore_wandb_env):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    logger = {"report_to": "wandb", "mode": "offline", "project": "ift-test", "dir": str(tmp_path / "wb")}
    report_to = configure_tracking(logger, group="exp-42", tags=["sft", "base", "seed0"])
    assert report_to == "wandb" and os.environ["WANDB_MODE"] == "offline"
    tok = tiny_tokenizer()
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, use_cpu=True,
                     bf16=False, activation_checkpointing=False, report_to=report_to, run_name="sft-base-s0",
                     logging_steps=1, save_strategy="no", max_length=64)
    SFTTrainer(model=tiny_model(tok), args=args, train_dataset=Dataset.from_list(qa_rows(4)),
               processing_class=tok).train()
    import wandb

    wandb.finish()
    wandb.teardown()  # stop the W&B service so the offline record is flushed to disk
    runs = glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(runs) == 1
    record = open(runs[0], "rb").read()
    for expected in (b"ift-test", b"exp-42", b"seed0", b"sft-base-s0"):
        assert expected in record, expected


def test_logger_none_disables_wandb(restore_wandb_env):
    assert configure_tracking({"report_to": "none"}, group="g") == "none"
    assert os.environ["WANDB_MODE"] == "disabled"


def test_an_evaluation_writes_an_offline_wandb_run_with_its_headline_numbers(tmp_path, restore_wandb_env):
    from ift.tracking import eval_metrics, log_eval_run

    records = {"leaderboard": {"suite": "toy", "avg": 0.5, "tasks": {"arc": {"value": 0.25}, "gsm8k": {"value": 0.75}}},
               "alpaca": {"win_rate": 40.0, "standard_error": 2.0, "lc_win_rate_minimal": None, "n": 64}}
    metrics = eval_metrics(records)
    assert metrics == {"leaderboard/arc": 0.25, "leaderboard/gsm8k": 0.75, "leaderboard/avg": 0.5,
                       "alpaca/win_rate": 40.0, "alpaca/standard_error": 2.0, "alpaca/n": 64}
    logger = {"report_to": "wandb", "mode": "offline", "project": "ift-test", "dir": str(tmp_path / "wb")}
    assert log_eval_run(logger, name="eval-ift-base-s0", group="exp-7", metrics=metrics, config={"profile": "tiny"})
    import wandb

    wandb.teardown()
    runs = glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(runs) == 1
    record = open(runs[0], "rb").read()
    for expected in (b"eval-ift-base-s0", b"exp-7", b"leaderboard/gsm8k", b"alpaca/win_rate"):
        assert expected in record, expected
    assert not log_eval_run({"report_to": "none"}, name="x", group="g", metrics=metrics, config={})


def test_the_no_network_guard_refuses_internet_sockets_but_not_local_ipc(no_network, tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as inet, pytest.raises(AssertionError, match="network"):
        inet.connect(("127.0.0.1", 9))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as local, pytest.raises(FileNotFoundError):
        local.connect(str(tmp_path / "no-such-socket"))  # reaches the OS: the guard let it through
