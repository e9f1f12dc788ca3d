"""One study cell (ift.study.job.run_cell): train then evaluate, each skipped when its stamp (ift.train.resume's
fingerprint) says the finished work is the work asked for. The commands are recorded, not run: a fake runner writes
what ``python -m ift.train`` and ``python -m ift.evaluate`` would."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import compose
from ift.study import job


@pytest.fixture
def cell(tmp_path, monkeypatch):
    """A cell's config under a fake root whose start point is a directory with one weights file."""
    monkeypatch.setattr(job, "validate_train_config", lambda cfg: None)  # no real checkpoint here
    start = tmp_path / "outputs" / "models" / "base"
    start.mkdir(parents=True)
    (start / "model.safetensors").write_bytes(b"start point weights")

    def make(*overrides):
        return compose(["profile=smoke", "logger=none", "run_name=sft-base-s0",
                        "paths.outputs=${paths.root}/outputs/studies/s", "paths.models=${paths.root}/outputs/models",
                        "model_dir=${paths.runs}/${run_name}", "out=${paths.outputs}/evals/${run_name}",
                        *overrides], root=tmp_path)
    return make


class FakeRunner:
    """Records each command; ``python -m ift.train`` writes a run directory, ``python -m ift.evaluate`` results."""

    def __init__(self, cfg, weights=b"trained weights"):
        self.cfg, self.weights, self.commands = cfg, weights, []

    def __call__(self, command, check):
        assert check and command[0] == sys.executable
        self.commands.append(command)
        module = command[2]
        if module == "ift.train":
            run_dir = Path(str(self.cfg.paths.runs)) / str(self.cfg.run_name)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "model.safetensors").write_bytes(self.weights)
            (run_dir / "train_metrics.json").write_text("{}")
        else:
            out = Path(str(self.cfg.out))
            out.mkdir(parents=True, exist_ok=True)
            for name in ("leaderboard.json", "alpaca.json"):
                (out / name).write_text(json.dumps({"ok": True}))

    def modules(self):
        return [command[2] for command in self.commands]


def test_a_new_cell_is_trained_then_evaluated_with_the_jobs_overrides(cell, tmp_path):
    cfg = cell()
    runner = FakeRunner(cfg)
    overrides = ["method=sft", "start=base", "seed=0"]
    done = job.run_cell(cfg, overrides, log_dir=tmp_path / "logs", run=runner)
    assert done == {"name": "sft-base-s0", "trained": True, "evaluated": True}
    assert runner.commands == [
        [sys.executable, "-m", "ift.train", *overrides, f"hydra.run.dir={tmp_path / 'logs' / 'train'}"],
        [sys.executable, "-m", "ift.evaluate", *overrides, f"hydra.run.dir={tmp_path / 'logs' / 'evaluate'}"]]
    runs = tmp_path / "outputs" / "studies" / "s" / "runs"
    assert (runs / "sft-base-s0.fingerprint").read_text().startswith("config=")


def test_a_finished_cell_is_neither_trained_nor_evaluated_again(cell, capsys):
    cfg = cell()
    job.run_cell(cfg, [], run=FakeRunner(cfg))
    again = FakeRunner(cfg)
    assert job.run_cell(cfg, [], run=again) == {"name": "sft-base-s0", "trained": False, "evaluated": False}
    assert again.commands == []
    assert "sft-base-s0: trained already" in capsys.readouterr().out


def test_a_finished_run_with_another_config_is_retrained_and_the_log_says_why(cell, capsys):
    job.run_cell(cell(), [], run=FakeRunner(cell()))
    changed = cell("trainer.finetune.learning_rate=1e-4")
    runner = FakeRunner(changed, weights=b"other weights")
    assert job.run_cell(changed, [], run=runner)["trained"]
    assert runner.modules() == ["ift.train", "ift.evaluate"]  # new weights: evaluated again too
    out = capsys.readouterr().out
    assert "trained before, but the run's config differs: redoing it" in out
    assert "evaluated before, but its weights changed: redoing it" in out


def test_a_cell_finished_by_other_code_is_trained_and_evaluated_again(cell, monkeypatch, capsys):
    cfg = cell()
    job.run_cell(cfg, [], run=FakeRunner(cfg))
    monkeypatch.setattr(job, "code_digest", lambda: "0123456789abcdef")  # as after an edit of the training code
    runner = FakeRunner(cfg)
    assert job.run_cell(cfg, [], run=runner) == {"name": "sft-base-s0", "trained": True, "evaluated": True}
    out = capsys.readouterr().out
    assert "trained before, but the ift source code it ran differs: redoing it" in out
    assert "evaluated before, but the ift source code it ran differs: redoing it" in out


def test_the_code_digest_covers_the_training_code_and_not_the_report(tmp_path, monkeypatch):
    import ift

    package = tmp_path / "ift"
    for relative in ("__init__.py", "losses.py", "report/tables.py"):
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(f"# {relative}\n")
    monkeypatch.setattr(ift, "__file__", str(package / "__init__.py"))
    before = job.code_digest()
    (package / "report" / "tables.py").write_text("# another table layout\n")
    assert job.code_digest() == before
    (package / "losses.py").write_text("# another loss\n")
    assert job.code_digest() != before


def test_a_replaced_start_point_retrains_the_cell(cell, tmp_path, capsys):
    cfg = cell()
    job.run_cell(cfg, [], run=FakeRunner(cfg))
    (tmp_path / "outputs" / "models" / "base" / "model.safetensors").write_bytes(b"another base")
    runner = FakeRunner(cfg)
    job.run_cell(cfg, [], run=runner)
    assert runner.modules() == ["ift.train"]  # same weights come out of the fake: the evaluation stands
    assert "the checkpoint it starts from has other contents" in capsys.readouterr().out


def test_a_run_killed_before_its_stamp_was_written_is_trained_again(cell, tmp_path, capsys):
    cfg = cell()
    job.run_cell(cfg, [], run=FakeRunner(cfg))
    (tmp_path / "outputs" / "studies" / "s" / "runs" / "sft-base-s0.fingerprint").unlink()
    runner = FakeRunner(cfg)
    job.run_cell(cfg, [], run=runner)
    assert runner.modules() == ["ift.train"]
    assert "no fingerprint was recorded for it" in capsys.readouterr().out


def test_an_evaluation_killed_midway_or_with_other_settings_is_redone_alone(cell, tmp_path, capsys):
    cfg = cell()
    job.run_cell(cfg, [], run=FakeRunner(cfg))
    (tmp_path / "outputs" / "studies" / "s" / "evals" / "sft-base-s0" / "alpaca.json").unlink()
    runner = FakeRunner(cfg)
    assert job.run_cell(cfg, [], run=runner) == {"name": "sft-base-s0", "trained": False, "evaluated": True}
    assert runner.modules() == ["ift.evaluate"]
    other = cell("eval.max_new_tokens=7")
    runner = FakeRunner(other)
    job.run_cell(other, [], run=runner)
    assert runner.modules() == ["ift.evaluate"]
    assert "evaluated before, but its settings changed" in capsys.readouterr().out
    only_leaderboard = cell("evals=[leaderboard]")
    job.run_cell(only_leaderboard, [], run=FakeRunner(only_leaderboard))  # a subset of the evaluations: settings
    assert job.eval_stamp(only_leaderboard, Path(str(only_leaderboard.model_dir))) != job.eval_stamp(
        other, Path(str(other.model_dir)))
