"""Experiment tracking setup: W&B offline by default, configured through the environment TRL/transformers read.

transformers' W&B callback reads WANDB_PROJECT / WANDB_DIR / WANDB_MODE / WANDB_RUN_GROUP / WANDB_TAGS at init, so
exporting them here (before the trainer is built) is enough; nothing in the tiny profile may wait on the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def configure_tracking(logger_cfg: Mapping, *, group: str, tags: Sequence[str] = ()) -> str:
    """Export the W&B settings for this process and return the ``report_to`` value for TRL configs."""
    report_to = str(logger_cfg.get("report_to", "none"))
    if report_to != "wandb":
        os.environ["WANDB_MODE"] = "disabled"
        return "none"
    wandb_dir = Path(str(logger_cfg["dir"])).absolute()
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = str(logger_cfg.get("mode", "offline"))
    os.environ["WANDB_DIR"] = str(wandb_dir)
    os.environ["WANDB_PROJECT"] = str(logger_cfg.get("project", "ift-replication"))
    os.environ["WANDB_RUN_GROUP"] = group
    os.environ["WANDB_TAGS"] = ",".join(tags)
    os.environ.setdefault("WANDB_SILENT", "true")
    # The hub-free default: the W&B callback must not try to upload the model as an artifact.
    os.environ["WANDB_LOG_MODEL"] = "false"
    return "wandb"


def eval_metrics(records: Mapping[str, Mapping]) -> dict[str, float]:
    """The headline numbers of one evaluation (``ift.evaluate``'s records) as flat W&B summary keys."""
    metrics = {}
    board = records.get("leaderboard")
    if board:
        metrics.update({f"leaderboard/{task}": entry["value"] for task, entry in board["tasks"].items()})
        metrics["leaderboard/avg"] = board["avg"]
    alpaca = records.get("alpaca")
    if alpaca:
        for key in ("win_rate", "standard_error", "lc_win_rate_minimal", "n"):
            if alpaca.get(key) is not None:
                metrics[f"alpaca/{key}"] = alpaca[key]
    return metrics


def log_eval_run(logger_cfg: Mapping, *, name: str, group: str, metrics: Mapping[str, float],
                 config: Mapping) -> bool:
    """One W&B run (job_type ``eval``, offline by default) holding an evaluation's numbers in its summary.

    Returns False (and logs nothing) when the logger is not W&B.
    """
    if configure_tracking(logger_cfg, group=group, tags=["eval"]) != "wandb":
        return False
    import wandb

    run = wandb.init(job_type="eval", name=name, config=dict(config))
    run.summary.update(dict(metrics))
    run.finish()
    return True
