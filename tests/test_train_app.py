"""The train app: config validation before any model loads, and every method training on the smoke profile."""

from __future__ import annotations

import json

import pytest

from conftest import compose
from ift.train.validate import ConfigError, validate_train_config


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail loudly if anything tries to load a model: validation must come first."""
    import ift.train.checkpoints as checkpoints

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(checkpoints, "load_causal_lm", forbidden)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["method.name=ppo"], "method"),
        (["start.name=chat"], "start"),
        (["method=ift", "method.max_lambda=1.5"], "max_lambda"),
        (["method=ift", "method.min_lambda=-0.1"], "min_lambda"),
        (["method=ift", "method.gamma=2"], "gamma"),
        (["method=ift", "method.propagation_type=entropy"], "propagation_type"),
        (["method=ift", "method.propagation_side=up"], "propagation_side"),
        (["method=ift", "method.propagation_norm=L7"], "propagation_norm"),
        (["method=ift", "+method.lamda=0.2"], "lamda"),
        (["method=dpo", "method.beta=0"], "beta"),
        (["trainer.finetune.learning_rate=0"], "learning_rate"),
        (["trainer.finetune.per_device_train_batch_size=0"], "per_device_train_batch_size"),
        (["run_name=a/b"], "run_name"),
    ],
)
def test_bad_config_fails_naming_the_key_before_any_model_loads(tmp_path, no_model_loading, overrides, key):
    from ift.train.app import run_training

    cfg = compose(["logger=none", *overrides], root=tmp_path)
    with pytest.raises(ConfigError, match=key):
        run_training(cfg)


def test_missing_start_checkpoint_names_the_stage_to_run(tmp_path, no_model_loading):
    cfg = compose(["start=sft_beta", "logger=none"], root=tmp_path)
    with pytest.raises(ConfigError, match=r"start\.checkpoint.*dvc repro sft_beta"):
        validate_train_config(cfg)


def test_missing_init_from_is_a_config_error(tmp_path, no_model_loading):
    cfg = compose(["method=dpo", f"init_from={tmp_path / 'nope'}", "logger=none"], root=tmp_path)
    with pytest.raises(ConfigError, match="init_from"):
        validate_train_config(cfg)


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
@pytest.mark.parametrize("method", ["sft", "ift", "dpo", "orpo"])
def test_each_method_trains_on_the_smoke_profile_and_its_loss_falls(smoke_root, method):
    from ift.train.app import run_training
    from ift.train.checkpoints import check_checkpoint_dir

    cfg = compose(["profile=smoke", f"method={method}", "logger=none"], root=smoke_root)
    run_dir = run_training(cfg)
    assert run_dir == smoke_root / "outputs" / "runs" / f"{method}-base-s0"
    check_checkpoint_dir(run_dir)
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    losses = [entry["loss"] for entry in metrics["log_history"]]
    assert len(losses) >= 3, losses
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, f"{method} loss did not fall: {losses}"
    assert (run_dir / "config.yaml").read_text().count(f"name: {method}") >= 1
    data = json.loads((run_dir / "data.json").read_text())
    assert data["rows"] > 0
    if method == "ift":
        assert all(lam == pytest.approx(0.2) for lam in metrics["lambda"])
        assert all(v is not None for v in metrics["pass1_sft_loss"] + metrics["pass2_loss"])
    if method == "dpo":
        assert any(m is not None for m in metrics["reward_margins"])
    assert not (smoke_root / "outputs" / "work" / f"{method}-base-s0").exists()  # scratch removed on success
