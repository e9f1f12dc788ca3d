"""Experiment tracking: W&B, offline by default. Every stage's run is named, tagged, grouped and configured here.

One scheme for every run (docs/wandb.md):

* name: ``<method>-<start>-s<seed>`` (the cell's run directory name), ``<cell>/<part>`` for the halves of SFT+DPO
  (``sft_half``, ``dpo``), ``<cell>/eval`` for an evaluation, ``base`` / ``sft_beta`` for the start points,
  ``report`` for the report;
* group: ``<logger.group>/<cell>``: a cell's training run(s) and its evaluation share one group;
  a study's runs (``python -m ift.study``) all share ``<logger.group>/study-<study>``;
* tags: method, start, ``seed<N>``, profile, job type (train | eval | start_point | report);
* config: the stage's resolved Hydra config flattened with dots (``method.gamma``, ``trainer.finetune.learning_rate``)
  plus ``git_commit`` and ``dvc_stage``; an evaluation also carries its training run's config (method, start, model,
  data, trainer, seed) and ``train_run_name`` / ``train_run_id``;
* id: deterministic, ``<profile>-<name>-<hash>`` with the hash of what determines the run's numbers, so that an
  evaluation can name its training run's id without reading anything the training wrote for W&B (run directories
  are DVC outputs whose bytes must not depend on logging).

Each run is started by :func:`init_run` with explicit arguments. The W&B SDK reads WANDB_* variables once per process
(at its first ``wandb.init``), so a second run in the same process (the DPO half of SFT+DPO) cannot be renamed or
retagged through the environment. For training runs the run is started before ``Trainer.train``; transformers' W&B
callback then logs into it (its documented "run created manually" path) and adds the TrainingArguments to its config.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ift.paths import start_point_name

# The parts of a training run's saved config.yaml that describe what was trained: an evaluation's W&B config takes
# them from the run it evaluates (its own Hydra config holds only the defaults there).
TRAINING_KEYS = ("method", "start", "model", "data", "trainer", "seed", "init_from", "run_name")
# What determines a fine-tuning run's numbers (the run id's hash); paths are made relative to paths.root.
IDENTITY_KEYS = ("method", "start", "model", "data", "trainer", "seed", "init_from", "profile")
START_POINTS = ("base", "sft_beta")
NO_METHOD = "none"  # method.name of a start point's runs (no fine-tuning method)


@dataclass(frozen=True)
class RunSpec:
    """Everything ``wandb.init`` is given for one run."""

    name: str
    id: str | None  # None: W&B picks a random one
    group: str
    job_type: str
    tags: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)


def configure_tracking(logger_cfg: Mapping) -> str:
    """Export the W&B settings for this process and return the ``report_to`` value for TRL configs.

    ``logger.dir`` is the folder the runs land in (default ``<root>/wandb``, so ``wandb sync --sync-all`` at the
    repository root finds them). W&B always writes to ``<WANDB_DIR>/wandb/``, so WANDB_DIR is its parent; a folder
    with another name gets a ``wandb/`` inside it.
    """
    report_to = str(logger_cfg.get("report_to", "none"))
    if report_to != "wandb":
        os.environ["WANDB_MODE"] = "disabled"
        return "none"
    runs_dir = Path(str(logger_cfg["dir"])).absolute()
    wandb_dir = runs_dir.parent if runs_dir.name == "wandb" else runs_dir
    (wandb_dir / "wandb").mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = str(logger_cfg.get("mode", "offline"))
    os.environ["WANDB_DIR"] = str(wandb_dir)
    os.environ["WANDB_PROJECT"] = str(logger_cfg.get("project", "ift-replication"))
    os.environ.setdefault("WANDB_SILENT", "true")
    # The hub-free default: the W&B callback must not try to upload the model as an artifact.
    os.environ["WANDB_LOG_MODEL"] = "false"
    return "wandb"


def init_run(logger_cfg: Mapping, spec: RunSpec):
    """Start the W&B run ``spec`` (offline by default); None when the logger is not W&B."""
    if configure_tracking(logger_cfg) != "wandb":
        return None
    import wandb

    return wandb.init(project=str(logger_cfg.get("project", "ift-replication")), dir=os.environ["WANDB_DIR"],
                      mode=os.environ["WANDB_MODE"], id=spec.id, name=spec.name, group=spec.group,
                      job_type=spec.job_type, tags=list(spec.tags), config=spec.config)


def finish_run() -> None:
    """Finish the current W&B run, if any (the training stages' runs are finished after ``Trainer.train``)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


# --- the pieces of a run's identity -----------------------------------------------------------------------------


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys: {"method": {"gamma": 0.95}} -> {"method.gamma": 0.95}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def resolved(cfg) -> dict:
    """A Hydra/OmegaConf config as plain data, as the run's saved config.yaml reads back (YAML round trip, so that
    the training side and an evaluation reading config.yaml hash the same values)."""
    import yaml
    from omegaconf import OmegaConf

    if isinstance(cfg, Mapping) and not OmegaConf.is_config(cfg):
        return json.loads(json.dumps(cfg, default=str))
    return yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))


def git_commit(root: str | Path | None) -> str:
    """HEAD's sha of the git checkout at ``root``; "unknown" when it is not one (or git is missing)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=str(root or "."), capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else "unknown"


def dvc_stage(derived: str) -> str:
    """The DVC stage running this process: DVC exports DVC_STAGE (e.g. ``train@ift-base-0``) to every stage
    command; outside DVC, ``derived``: the stage that would run it."""
    return os.environ.get("DVC_STAGE") or derived


def _portable(value: Any, root: str) -> Any:
    """``value`` with absolute paths under ``root`` written relative to it (a run's id must not depend on where
    the checkout lies)."""
    if isinstance(value, Mapping):
        return {key: _portable(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [_portable(item, root) for item in value]
    if isinstance(value, str) and root and (value == root or value.startswith(root.rstrip("/") + "/")):
        return "<root>" + value[len(root.rstrip("/")):]
    return value


def run_id(profile: str, name: str, identity: Mapping) -> str:
    """A W&B run id that is the same for the same computation: sanitised ``<profile>-<name>`` (W&B forbids
    ``:;,#?/'``) and 8 hex digits of the hash of name, profile and ``identity``."""
    digest = hashlib.sha256(json.dumps({"profile": profile, "name": name, "identity": identity}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{profile}-{name}")
    return f"{slug}-{digest}"


def group_name(logger_cfg: Mapping, unit: str) -> str:
    """``<logger.group>/<unit>``: the experiment (DVC_EXP_NAME or the profile) and the cell (or start point). A study's
    runs (``logger.study``, set by ``python -m ift.study``) share one group, ``<logger.group>/study-<study>``."""
    study = logger_cfg.get("study")
    return f"{logger_cfg.get('group') or 'default'}/{f'study-{study}' if study else unit}"


def run_tags(*, method: str | None, start: str | None, seed: int | None, profile: str, job_type: str) -> tuple:
    return tuple(tag for tag in (method, start, None if seed is None else f"seed{seed}", profile, job_type) if tag)


def _cell_identity(cell: Mapping) -> dict:
    root = str((cell.get("paths") or {}).get("root") or "")
    identity = {key: cell.get(key) for key in IDENTITY_KEYS}
    study = (cell.get("logger") or {}).get("study")
    if study:  # a study's cell may compute what a grid cell of the same name does: it is still another W&B run
        identity["study"] = study
    return _portable(identity, root)


def _start_identity(seed: int, profile: str, parameters: int) -> dict:
    """What names a start point's computation, as its evaluation can read it back from train_metrics.json (a start
    point's directory holds no config): seed, profile and the model's parameter count. A changed recipe keeps the
    id (docs/wandb.md)."""
    return {"seed": int(seed), "profile": str(profile), "parameters": int(parameters)}


# --- the runs of each stage ---------------------------------------------------------------------------------------


def training_run(cell_cfg, *, part: str | None = None) -> RunSpec:
    """A fine-tuning cell's training run (job type ``train``); ``part``: one half of SFT+DPO (``sft_half``,
    ``dpo``). ``cell_cfg`` is the cell's config (the one saved as the run's config.yaml)."""
    cell = resolved(cell_cfg)
    method, start, seed, profile = cell["method"]["name"], cell["start"]["name"], int(cell["seed"]), cell["profile"]
    unit = str(cell["run_name"])
    name = f"{unit}/{part}" if part else unit
    config = {**flatten(cell), "part": part, "git_commit": git_commit(cell["paths"]["root"]),
              "dvc_stage": dvc_stage(f"train_chain@{method}-{start}-{cell['chain']}" if cell.get("chain")
                                     else f"train@{method}-{start}-{seed}")}
    return RunSpec(name=name, id=run_id(profile, name, _cell_identity(cell)), group=group_name(cell["logger"], unit),
                   job_type="train", tags=run_tags(method=method, start=start, seed=seed, profile=profile,
                                                   job_type="train"), config=config)


def final_part(cell: Mapping) -> str | None:
    """The part of a cell whose weights its run directory holds (SFT+DPO: the DPO half)."""
    return "dpo" if cell["method"]["name"] == "sft_dpo" else None


def _without(flat: Mapping[str, Any], prefixes: Sequence[str]) -> dict[str, Any]:
    return {key: value for key, value in flat.items()
            if not any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)}


def start_point_run(cfg, stage: str, parameters: int) -> RunSpec:
    """A start point's training run (job type ``start_point``): ``stage`` (base | sft_beta) of a model with
    ``parameters`` parameters, named as its directory (``base``; ``base-chain1`` in chain replicate 1, whose start
    points are trained with seed 1). The fine-tuning groups of its Hydra config (method, start) are defaults the stage
    does not read; they are replaced by method.name ``none`` and start.name ``<stage>``."""
    plain = resolved(cfg)
    seed, profile = int(plain["seed"]), str(plain["profile"])
    name = start_point_name(stage, seed)
    stage_name = stage if seed == 0 else f"{stage}_chain@{seed}"  # the DVC stage: base, or base_chain@<c>
    config = {**_without(flatten(plain), ("method", "start")), "method.name": NO_METHOD, "start.name": stage,
              "git_commit": git_commit(plain["paths"]["root"]), "dvc_stage": dvc_stage(stage_name)}
    return RunSpec(name=name, id=run_id(profile, name, _start_identity(seed, profile, parameters)),
                   group=group_name(plain["logger"], name), job_type="start_point",
                   tags=run_tags(method=None, start=stage, seed=seed, profile=profile, job_type="start_point"),
                   config=config)


def trained_by(model_dir: str | Path, plain: Mapping) -> dict | None:
    """The W&B training run behind a checkpoint directory, as the training stage named it: {"name", "id",
    "group", "unit", "method", "start", "seed", "config"} (``config``: the flattened training keys), or None
    (a hub id, or a directory no stage of this pipeline wrote). ``plain``: the evaluation's resolved config."""
    import yaml

    path = Path(str(model_dir))
    saved = path / "config.yaml"
    cell = yaml.safe_load(saved.read_text()) if saved.is_file() else None
    if isinstance(cell, dict) and {"run_name", "method", "start", "seed", "profile"} <= set(cell):  # ift.train's
        unit, part = str(cell["run_name"]), final_part(cell)
        name = f"{unit}/{part}" if part else unit
        return {"name": name, "id": run_id(str(cell["profile"]), name, _cell_identity(cell)),
                "group": group_name(plain["logger"], unit), "unit": unit, "method": cell["method"]["name"],
                "start": cell["start"]["name"], "seed": int(cell["seed"]),
                "config": flatten({key: cell[key] for key in TRAINING_KEYS if key in cell})}
    metrics_file = path / "train_metrics.json"
    if metrics_file.is_file():  # a start point (ift.train.base / ift.train.sft_beta)
        metrics = json.loads(metrics_file.read_text())
        stage = metrics.get("stage")
        if stage in START_POINTS:
            seed, profile = int(metrics["seed"]), str(metrics["profile"])
            name = start_point_name(stage, seed)  # chain c's start points are trained with seed c: base-chain1 ...
            return {"name": name, "id": run_id(profile, name, _start_identity(seed, profile, metrics["parameters"])),
                    "group": group_name(plain["logger"], name), "unit": name, "method": None, "start": stage,
                    "seed": seed, "config": {"method.name": NO_METHOD, "start.name": stage, "seed": seed,
                                             **flatten({key: plain.get(key) for key in ("model", "data", "trainer")})}}
    return None


def eval_run(cfg) -> RunSpec:
    """An evaluation's run (job type ``eval``): in its training run's group, with that run's name and id and its
    training config (method, start, model, data, trainer, seed) in place of the evaluation's own defaults."""
    plain = resolved(cfg)
    profile = str(plain["profile"])
    train = trained_by(plain["model_dir"], plain)
    flat = flatten(plain)
    if train is None:
        unit, method, start, seed = Path(str(plain["out"])).name, None, None, None
        group, derived = group_name(plain["logger"], unit), "eval"
    else:
        unit, method, start, seed, group = train["unit"], train["method"], train["start"], train["seed"], train["group"]
        flat = {**_without(flat, TRAINING_KEYS), **train["config"]}
        derived = f"eval@{method}-{start}-{seed}" if method else f"eval_start@{start}"
    name = f"{unit}/eval"
    root = str(plain["paths"]["root"])
    identity = {"train_run_id": train and train["id"],
                **_portable({key: plain.get(key) for key in ("model_dir", "suite", "judge", "eval", "evals")}, root)}
    config = {**flat, "train_run_name": train and train["name"], "train_run_id": train and train["id"],
              "git_commit": git_commit(root), "dvc_stage": dvc_stage(derived)}
    return RunSpec(name=name, id=run_id(profile, name, identity), group=group, job_type="eval",
                   tags=run_tags(method=method, start=start, seed=seed, profile=profile, job_type="eval"),
                   config=config)


def report_run(logger_cfg: Mapping, profile: str, cfg=None) -> RunSpec:
    """The report's run (job type ``report``); ``cfg``: the report's Hydra config. Its id is W&B's own (random): the
    report's numbers depend on every evaluation, which no short config names."""
    plain = resolved(cfg) if cfg is not None else {}
    root = (plain.get("paths") or {}).get("root")
    config = {**flatten(plain), "profile": profile, "git_commit": git_commit(root), "dvc_stage": dvc_stage("report")}
    return RunSpec(name="report", id=None, group=group_name(logger_cfg, "report"), job_type="report",
                   tags=run_tags(method=None, start=None, seed=None, profile=profile, job_type="report"),
                   config=config)


# --- an evaluation's numbers --------------------------------------------------------------------------------------


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


def log_eval_run(logger_cfg: Mapping, spec: RunSpec, metrics: Mapping[str, float]) -> bool:
    """One W&B run (job_type ``eval``, offline by default) holding an evaluation's numbers in its summary.

    Returns False (and logs nothing) when the logger is not W&B.
    """
    run = init_run(logger_cfg, spec)
    if run is None:
        return False
    run.summary.update(dict(metrics))
    run.finish()
    return True
