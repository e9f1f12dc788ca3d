"""Faults at the DVC level: a `dvc repro` killed mid-training resumes on the next `dvc repro`.

The stage is the pipeline's own `train` command for one smoke cell, run by real DVC in a scratch project that holds
the smoke world and start points (the session's ``smoke_root``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

CELL = "ift-base-s0"
TRAIN = [sys.executable, "-m", "ift.train", "profile=smoke", "method=ift", "start=base", "seed=0", "logger=none",
         "trainer.finetune.save_steps=4"]


def scratch_project(smoke_root: Path, tmp_path: Path) -> tuple[Path, dict]:
    project = tmp_path / "project"
    for part in ("world", "models"):
        shutil.copytree(smoke_root / "outputs" / part, project / "outputs" / part)
    stage = {"cmd": " ".join(["python", *TRAIN[1:]]), "deps": ["outputs/world", "outputs/models/base"],
             "outs": [f"outputs/runs/{CELL}"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IFT_ROOT": str(project), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=project, env=env, check=True)
    return project, env


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
def test_a_killed_dvc_repro_resumes_the_training_stage_and_matches_an_uninterrupted_run(smoke_root, tmp_path):
    reference_root = tmp_path / "reference"
    shutil.copytree(smoke_root / "outputs" / "world", reference_root / "outputs" / "world")
    shutil.copytree(smoke_root / "outputs" / "models", reference_root / "outputs" / "models")
    subprocess.run([*TRAIN, f"paths.root={reference_root}"], check=True, cwd=REPO_ROOT, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    reference = json.loads((reference_root / "outputs" / "runs" / CELL / "train_metrics.json").read_text())

    project, env = scratch_project(smoke_root, tmp_path)
    work = project / "outputs" / "work" / CELL
    repro = subprocess.Popen(["dvc", "repro"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not list(work.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    os.killpg(repro.pid, signal.SIGKILL)  # dvc and the training process under it
    repro.wait()
    assert list(work.glob("checkpoint-*/trainer_state.json")), "no checkpoint was written before the kill"
    assert not (project / "outputs" / "runs" / CELL).exists()  # nothing half-written for DVC to accept
    assert not (project / "dvc.lock").exists()  # DVC recorded no result for the killed stage

    done = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stdout
    resumed = json.loads((project / "outputs" / "runs" / CELL / "train_metrics.json").read_text())
    assert resumed["resumed_from"] is not None and resumed["steps"] == reference["steps"]
    by_step = {entry["step"]: entry["loss"] for entry in reference["log_history"] if "loss" in entry}
    after_resume = [entry for entry in resumed["log_history"] if entry["step"] in by_step and "loss" in entry]
    assert after_resume, "no overlapping logged steps"
    for entry in after_resume:
        assert entry["loss"] == pytest.approx(by_step[entry["step"]], rel=1e-5, abs=1e-6)
    assert resumed["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-5)
    status = subprocess.run(["dvc", "status"], cwd=project, env=env, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout  # the resumed result is accepted and a further repro is a no-op
