"""``python -m ift.study``: every cell composed and checked before anything runs, seeds and chains paired in the
composed configs, and (slow) a 2-cell study on the smoke profile run, interrupted and run again: the second run
trains nothing, redoes only the evaluation that was cut, and every run sits in the study's W&B group."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

from ift.methods import ConfigError
from ift.study import launch
from ift.study.spec import cell_overrides, load_study, parse_study


@pytest.fixture(autouse=True)
def _root(monkeypatch):
    monkeypatch.setenv("IFT_ROOT", "/r")  # paths.root of every composed config (no Hydra app runs here)


def test_every_cell_composes_to_its_own_name_and_reads_its_chains_start_point():
    """One cell per variant and swept value of each committed study (chain 2, sft_beta): the run_name Hydra
    resolves is the name ift.study.spec gives it, so the report finds what the jobs write."""
    for name in ("ablation", "lambda", "recipe"):
        study = dataclasses.replace(load_study(name), starts=("sft_beta",), chains=(2,))
        assert launch.preflight(study, ["profile=tiny"], start_points=False) == len(study.cells())
    study = load_study("recipe")
    cell = next(c for c in study.cells() if c.name == "ift-lr5e-05-epochs3-sft_beta-chain2-s2")
    cfg = launch.resolvable(launch.compose(cell_overrides(study, cell, ["hydra/launcher=slurm"]))[0])
    assert cfg.hydra.launcher.submitit_folder == "/r/outputs/studies/recipe/hydra/ift/.submitit/%j"  # the SLURM one
    assert (cfg.seed, cfg.chain, cfg.method.name) == (2, 2, "ift")  # replicate c: seed c and chain c's start points
    assert cfg.start.checkpoint == "/r/outputs/models/sft_beta-chain2"
    assert (cfg.trainer.finetune.learning_rate, cfg.trainer.finetune.num_train_epochs) == (5e-05, 3)
    assert cfg.model_dir == f"/r/outputs/studies/recipe/runs/{cell.name}"
    assert cfg.out == f"/r/outputs/studies/recipe/evals/{cell.name}"
    assert cfg.paths.world == "/r/outputs/world" and cfg.logger.study == "recipe"
    assert cfg.hydra.sweep.dir == "/r/outputs/studies/recipe/hydra/ift" and cfg.hydra.sweep.subdir == cell.name
    lam = next(c for c in load_study("lambda").cells() if c.name == "ift-lambda0.4-base-s0")
    cfg = launch.resolvable(launch.compose(cell_overrides(load_study("lambda"), lam))[0])
    assert (cfg.method.max_lambda, cfg.method.min_lambda, cfg.seed, cfg.chain) == (0.4, 0.4, 0, 0)
    assert cfg.start.checkpoint == "/r/outputs/models/base"


@pytest.mark.parametrize("root", ["/data/runs", "/data/a,b", "/data/it's", "C:\\runs\\ift", "/data/end\\"])
def test_the_root_given_to_every_job_parses_back_to_itself(root):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override(launch.root_override(root))
    assert (override.key_or_group, override.value(), override.is_sweep_override()) == ("paths.root", root, False)


def _study(**variants):
    return parse_study({"title": "t", "knob": "variant", "reference": {"variant": next(iter(variants))},
                       "starts": ["base"], "chains": [0, 1], "variants": variants}, name="t")


def test_a_typo_in_a_key_or_a_bad_value_fails_before_anything_runs_naming_it():
    with pytest.raises(ConfigError, match=r"study t: Could not override 'method\.lamda'"):
        launch.preflight(_study(ift={"overrides": ["method=ift", "method.lamda=0"]}), [], start_points=False)
    with pytest.raises(ConfigError, match=r"cell ift-base-s0: .*max_lambda"):
        launch.preflight(_study(ift={"overrides": ["method=ift", "method.max_lambda=1.5"]}), [], start_points=False)
    with pytest.raises(ConfigError, match=r"Could not override 'trainer\.finetune\.lr'"):
        launch.preflight(_study(sft={"overrides": []}, ift={"sweep": {"lr": {"key": "trainer.finetune.lr",
                                                                            "values": [0.1]}}}), [],
                         start_points=False)


def test_a_swept_value_hydra_would_read_differently_fails_before_the_names_go_wrong():
    """YAML reads `1e-4` (no dot) as the string the cell is named with; Hydra reads the override as the float 0.0001:
    the job would write ...-lr0.0001-... where the report looks for ...-lr1e-4-..."""
    study = _study(sft={"overrides": []}, ift={"sweep": {"lr": {"key": "trainer.finetune.learning_rate",
                                                               "values": ["1e-4"]}}})
    with pytest.raises(ConfigError, match=r"the cell ift-lr1e-4-base-s0 would run as ift-lr0\.0001-base-s0"):
        launch.preflight(study, [], start_points=False)


def test_a_missing_start_point_fails_naming_the_cell_and_the_stage_to_run():
    with pytest.raises(ConfigError, match=r"cell sft-base-s0: start\.checkpoint.*dvc repro base"):
        launch.preflight(_study(sft={"overrides": []}), [])


def test_the_command_line_takes_one_study_and_passes_everything_else_on():
    assert launch.parse_args(["study=lambda", "profile=smoke", "--dry-run", "hydra/launcher=slurm"]) == (
        "lambda", {"--dry-run"}, ["profile=smoke", "hydra/launcher=slurm"])
    for argv, message in ((["profile=smoke"], "exactly one study"), (["study=a", "study=b"], "exactly one study"),
                          (["study=a", "--fast"], "unknown option --fast"),
                          (["study=a", "--dry-run", "--report-only"], "exclude each other")):
        with pytest.raises(ConfigError, match=message):
            launch.parse_args(argv)
    assert launch.main(["study=nope"]) == 2


def test_each_variant_is_one_multirun_of_the_job_app_with_the_launcher_passed_on():
    study = load_study("ablation")
    command = launch.multirun_command(study, study.variants[1], ["hydra/launcher=slurm"])
    assert command[:4] == [sys.executable, "-m", "ift.study.job", "--multirun"]
    assert command[4:8] == ["method=ift", "method.max_lambda=0", "method.min_lambda=0", "method.gamma=0.95"]
    assert command[-4:] == ["start=base,sft_beta", "seed=0,1,2", "+chain=${seed}", "hydra/launcher=slurm"]


def _read_runs(wandb_dir):
    from wandb_records import read_run

    return [read_run(path) for path in sorted(glob.glob(str(wandb_dir / "wandb" / "offline-run-*" / "run-*.wandb")))]


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
def test_a_killed_study_resumes_without_training_its_finished_cells_again(smoke_root, tmp_path, monkeypatch):
    monkeypatch.delenv("IFT_ROOT")
    (tmp_path / "mini.yaml").write_text(
        "title: two SFT cells\nknob: variant\nreference: {variant: sft}\nstarts: [base, sft_beta]\nchains: [0]\n"
        "variants:\n  sft:\n    overrides: [method=sft]\n")
    # As DVC runs it: from the root, no paths.root and no IFT_ROOT (the root is Hydra's working directory).
    command = [sys.executable, "-m", "ift.study", f"study={tmp_path / 'mini.yaml'}", "profile=smoke"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_DIR": str(tmp_path)}

    def study():
        done = subprocess.run(command, env=env, cwd=smoke_root, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    first = study()
    assert first.count("[train] sft-base-s0 done") == first.count("[train] sft-sft_beta-s0 done") == 1
    base, beta = (smoke_root / "outputs" / "studies" / "mini" / part for part in ("runs", "evals"))
    metrics = base / "sft-base-s0" / "train_metrics.json"
    before = (metrics.read_bytes(), metrics.stat().st_mtime_ns)
    (beta / "sft-sft_beta-s0" / "alpaca.json").unlink()  # killed while evaluating its second cell

    second = study()
    assert "[train]" not in second  # nothing trained
    assert second.count("trained already, with this config and input; not trained again") == 2
    assert "[study] sft-base-s0: evaluated already" in second
    assert second.count("[evaluate] sft-sft_beta-s0 done") == 1 and "[evaluate] sft-base-s0" not in second
    assert (metrics.read_bytes(), metrics.stat().st_mtime_ns) == before
    report = (smoke_root / "report" / "studies" / "mini.md").read_text()
    assert "All 2 cells' results are present." in report
    runs = _read_runs(tmp_path)
    assert {run["group"] for run in runs} == {"smoke/study-mini"}
    assert sorted(run["name"] for run in runs) == sorted(
        ["sft-base-s0", "sft-sft_beta-s0", "sft-base-s0/eval", "sft-sft_beta-s0/eval", "sft-sft_beta-s0/eval",
         "study-mini/report", "study-mini/report"])
    report_run = next(run for run in runs if run["name"] == "study-mini/report")
    summary = report_run["summary"]
    assert report_run["job_type"] == "report" and summary["cells"] == 2 and summary["missing_result_files"] == 0
    assert (summary["study_mini/_type"], summary["study_mini/nrows"]) == ("table-file", 2)
    table = json.loads(next((tmp_path / "wandb").glob(f"offline-run-*/files/{summary['study_mini/path']}")).read_text())
    with_csv = (smoke_root / "report" / "studies" / "mini.csv").read_text().splitlines()
    assert table["columns"] == with_csv[0].split(",") and [row[:2] for row in table["data"]] == [
        ["base", "sft"], ["sft_beta", "sft"]]
