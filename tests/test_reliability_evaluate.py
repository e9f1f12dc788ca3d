"""Evaluation reliability (issue #20): a bad batch size is refused naming its key before any model loads, and the
temporary ``ift-eval-*`` directories a killed evaluation left behind are removed by the next one (never a running
evaluation's)."""

from __future__ import annotations

import pytest

from conftest import compose


@pytest.fixture
def no_model_loading(monkeypatch):
    import ift.train.checkpoints as checkpoints

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
    import ift.evaluate.app as app
    import ift.evaluate.suites as suites
    from ift.evaluate.app import EvaluationConfigError, run_from_config

    # no world needed to get this far: without the check the model would load next
    monkeypatch.setattr(suites, "check_world_files", lambda suite: None)
    monkeypatch.setattr(app, "check_judge_inputs", lambda judge_cfg: None)
    cfg = compose(["profile=smoke", f"model_dir={tmp_path / 'ckpt'}", f"out={tmp_path / 'out'}", override],
                  root=tmp_path)
    with pytest.raises(EvaluationConfigError, match=rf"^{key}="):
        run_from_config(cfg)


@pytest.mark.parametrize("batch_size", [1, 32, "32", "auto", "auto:4"])
def test_valid_batch_sizes_pass(batch_size):
    from ift.evaluate.app import check_eval_config

    check_eval_config({"batch_size": batch_size, "generate_batch_size": 32}, ["leaderboard", "alpaca"])
