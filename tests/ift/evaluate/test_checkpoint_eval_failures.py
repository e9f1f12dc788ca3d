"""Evaluation reliability (issue #20): a bad batch size is refused naming its key before any model loads, and the
temporary ``ift-eval-*`` directories a killed evaluation left behind are removed by the next one (never a running
evaluation's)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import pytest

from conftest import compose


@pytest.fixture
def no_model_loading(monkeypatch):
    import ift.checkpoints as checkpoints

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr(checkpoints, "load_causal_lm", forbidden)


@pytest.mark.parametrize("override, key", [
    ("eval.batch_size=-1", "eval.batch_size"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.batch_size=1.5", "eval.batch_size"),
    ("eval.batch_size=big", "eval.batch_size"),
    ("eval.batch_size=auto:0", "eval.batch_size"),
    ("eval.generate_batch_size=-1", "eval.generate_batch_size"),
])
def test_a_bad_batch_size_is_refused_naming_the_key_before_any_model_loads(tmp_path, monkeypatch, no_model_loading,
                                                                            override, key):
    import ift.evaluate.checkpoint_eval as app
    import ift.evaluate.suites as suites
    from ift.evaluate.checkpoint_eval import EvaluationConfigError, run_from_config

    # no world needed to get this far: without the check the model would load next
    monkeypatch.setattr(suites, "check_world_files", lambda suite: None)
    monkeypatch.setattr(app, "check_judge_inputs", lambda judge_cfg: None)
    cfg = compose(["profile=smoke", f"model_dir={tmp_path / 'ckpt'}", f"out={tmp_path / 'out'}", override],
                  root=tmp_path)
    with pytest.raises(EvaluationConfigError, match=rf"^{key}="):
        run_from_config(cfg)


@pytest.mark.parametrize("batch_size", [1, 32, "32", "auto", "auto:4"])
def test_valid_batch_sizes_pass(batch_size):
    from ift.evaluate.checkpoint_eval import check_eval_config

    check_eval_config({"batch_size": batch_size, "generate_batch_size": 32}, ["leaderboard", "alpaca"])


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class _FakeModel:
    config = SimpleNamespace(max_position_embeddings=None)

    def to(self, device):
        return self

    def eval(self):
        return self


def test_the_next_evaluation_removes_a_killed_ones_work_dir_only(tmp_path, monkeypatch):
    """Through evaluate_checkpoint: a dead pid's ift-eval dir goes; a running process's, an unnamed (older) one and
    anything else stay; this evaluation's own dir carries its pid and is gone afterwards."""
    import ift.checkpoints as checkpoints
    import ift.evaluate.checkpoint_eval as app

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    dead = temp / f"ift-eval-{_dead_pid()}-abc_123x"
    alive = temp / f"ift-eval-{os.getppid()}-k2j4x9z0"  # pytest's parent: running
    unnamed = temp / "ift-eval-q8w7e6r5"  # made before the names carried a pid
    other = temp / "ift-evaluation-notes"
    for directory in (dead, alive, unnamed, other):
        (directory / "tasks").mkdir(parents=True)
        (directory / "tasks" / "arc.yaml").write_text("task: arc\n")

    monkeypatch.setattr(checkpoints, "load_causal_lm",
                        lambda *args, **kwargs: (_FakeModel(), SimpleNamespace(model_max_length=512)))
    used = []

    def fake_alpaca(model, tokenizer, judge_cfg, eval_cfg, work_dir, model_dir):
        used.append(work_dir)
        assert work_dir.is_dir()
        return {"win_rate": 50.0}, []

    monkeypatch.setattr(app, "_alpaca", fake_alpaca)
    app.evaluate_checkpoint(model_dir="ckpt", out=tmp_path / "out", evals=["alpaca"], judge_cfg={},
                            eval_cfg={"device": "cpu", "dtype": "float32", "parallel": False})

    assert not dead.exists()
    assert alive.is_dir() and unnamed.is_dir() and other.is_dir()
    assert used and used[0].name.startswith(f"ift-eval-{os.getpid()}-") and not used[0].exists()
