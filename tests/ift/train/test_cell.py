"""The train app: config validation before any model loads, and every method training on the smoke profile."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import compose
from ift.train.config_checks import ConfigError, validate_train_config


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail loudly if anything tries to load a model: validation must come first."""
    import ift.checkpoints as checkpoints

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
        (["method=simpo", "method.beta=0"], r"method\.beta"),
        (["method=simpo", "method.beta=two"], r"method\.beta"),
        (["method=simpo", "method.gamma_beta_ratio=-0.8"], r"method\.gamma_beta_ratio"),
        (["method=simpo", "~method.gamma_beta_ratio"], r"method\.gamma_beta_ratio"),
        (["method=simpo", "+method.gamma=1.6"], r"method\.gamma\b"),
        (["method=simpo", "method.memory_efficient=no"], r"method\.memory_efficient"),
        (["method=simpo", "method.chunk_size=0"], r"method\.chunk_size"),
        (["method=tdpo", "method.beta=-0.1"], r"method\.beta"),
        (["method=tdpo", "method.variant=tdpo3"], r"method\.variant"),
        (["method=tdpo", "method.alpha=-0.5"], r"method\.alpha"),
        (["method=tdpo", "+method.memory_efficient=true"], r"method\.memory_efficient: TDPO has no"),
        (["method=tdpo", "+method.chunk_size=64"], r"method\.chunk_size: TDPO has no"),
        (["method=tdpo", "+method.precompute_ref_log_probs=true"], r"method\.precompute_ref_log_probs"),
        (["method=sft", "method.reduction=sum"], r"method\.reduction"),
        (["method=sft_dpo", "method.sft.reduction=sum"], r"method\.sft\.reduction"),
        (["method=sft", "method.memory_efficient=yes"], r"method\.memory_efficient"),
        (["method=dpo", "method.chunk_size=0"], r"method\.chunk_size"),
        (["method=orpo", "method.memory_efficient=1"], r"method\.memory_efficient"),
        (["method=orpo", "method.chunk_size=many"], r"method\.chunk_size"),
        (["method=sft_dpo", "method.dpo.memory_efficient=both"], r"method\.dpo\.memory_efficient"),
        (["method=sft_dpo", "method.sft.chunk_size=-4"], r"method\.sft\.chunk_size"),
        (["trainer.finetune.learning_rate=0"], "learning_rate"),
        (["trainer.finetune.per_device_train_batch_size=0"], "per_device_train_batch_size"),
        (["run_name=a/b"], "run_name"),
        (["trainer.finetune.save_steps=15"], "save_steps"),
    ],
)
def test_bad_config_fails_naming_the_key_before_any_model_loads(tmp_path, no_model_loading, overrides, key):
    from ift.train.cell import run_training

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
@pytest.mark.parametrize("method", ["sft", "ift", "dpo", "orpo", "sft_dpo", "simpo", "tdpo"])
def test_each_method_trains_on_the_smoke_profile_and_its_loss_falls(smoke_root, method):
    from ift.checkpoints import check_checkpoint_dir
    from ift.train.cell import run_training

    cfg = compose(["profile=smoke", f"method={method}", "logger=none"], root=smoke_root)
    run_dir = run_training(cfg)
    assert run_dir == smoke_root / "outputs" / "runs" / f"{method}-base-s0"
    check_checkpoint_dir(run_dir)
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    losses = [entry["loss"] for entry in metrics["log_history"]]
    assert len(losses) >= 3, losses
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, f"{method} loss did not fall: {losses}"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["method"]["name"] == method and saved["trainer"] and saved["seed"] == 0
    assert not set(saved) & {"suite", "judge", "eval", "model_dir", "out", "evals"}  # evaluation keys go stale here
    data = json.loads((run_dir / "data.json").read_text())
    assert data["rows"] > 0
    if method == "ift":
        assert all(lam == pytest.approx(0.2) for lam in metrics["lambda"])
        assert all(v is not None for v in metrics["pass1_sft_loss"] + metrics["pass2_loss"])
    if method in ("dpo", "sft_dpo"):
        assert metrics["method"] == "dpo" and any(m is not None for m in metrics["reward_margins"])
    if method == "sft_dpo":  # the SFT half trained on chat answers only and is kept beside the DPO checkpoint
        check_checkpoint_dir(run_dir / "sft_half")
        assert json.loads((run_dir / "sft_half" / "data.json").read_text())["parts"] == ["chat"]
        assert data["parts"] == ["pairs"]
    assert not (smoke_root / "outputs" / "work" / f"{method}-base-s0").exists()  # scratch removed on success


def test_paper_profile_runs_its_code_path_up_to_training_with_a_local_stand_in(tmp_path, monkeypatch):
    """profile=paper composes, validates, loads the start model and the hub-schema data, and builds the paper's
    optimiser settings; a tiny local model stands in for Mistral-7B and the fixtures for the hub datasets."""
    import ift.train.cell as app
    from conftest import REPO_ROOT
    from tiny_lm import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    stand_in = tmp_path / "mistral-stand-in"
    tiny_model(tok).save_pretrained(stand_in)
    tok.save_pretrained(stand_in)
    fixtures = REPO_ROOT / "tests" / "fixtures"
    cfg = compose(
        ["profile=paper", "method=ift", "start=base", "logger=none", f"start_checkpoints.base={stand_in}",
         f"data.chat_train.source={fixtures / 'ultrachat_200k'}",
         f"data.prefs_train.source={fixtures / 'ultrafeedback_binarized'}",
         "data.n_chat=4", "data.n_prefs=4", "data.max_prompt_tokens=64"],
        root=tmp_path,
    )
    captured = {}

    class Stop(Exception):
        pass

    def fake_build_trainer(method, *, model, tokenizer, dataset, common_args, max_length, callbacks=()):
        captured.update(method=method, model=model, dataset=dataset, args=common_args, max_length=max_length)
        raise Stop

    monkeypatch.setattr("ift.train.trainers.build_trainer", fake_build_trainer)
    with pytest.raises(Stop):
        app.run_training(cfg)
    args = captured["args"]
    assert captured["method"]["name"] == "ift" and captured["max_length"] == 1024
    assert captured["model"].config.hidden_size == 32  # the stand-in was loaded from the start checkpoint
    assert len(captured["dataset"]) == 8  # 4 UltraChat answers + 4 UltraFeedback chosen answers (from base)
    assert args["bf16"] is True and args["use_cpu"] is False and args["activation_checkpointing"] is True
    assert args["optim"] == "rmsprop" and args["learning_rate"] == 5e-7 and args["lr_scheduler_type"] == "cosine"
    assert args["warmup_steps"] == 0.1 and args["num_train_epochs"] == 3
    assert args["max_grad_norm"] == 10.0  # the authors' config.yaml (their run scripts keep it)
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 512  # one process


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
def test_a_killed_run_resumes_and_ends_with_the_same_metrics(smoke_root):
    """SIGKILL mid-run, re-run: it resumes from the last checkpoint and matches an uninterrupted run exactly."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO_ROOT

    def command(run_name):
        return [sys.executable, "-m", "ift.train", "profile=smoke", "method=ift", "logger=none",
                f"run_name={run_name}", "trainer.finetune.save_steps=4", f"paths.root={smoke_root}"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command("ift-uninterrupted"), check=True, env=env, cwd=REPO_ROOT, capture_output=True)
    work = smoke_root / "outputs" / "work" / "ift-killed"
    proc = subprocess.Popen(command("ift-killed"), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(work.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(work.glob("checkpoint-*/trainer_state.json")), "no checkpoint was written before the kill"
    assert not (smoke_root / "outputs" / "runs" / "ift-killed").exists()  # nothing half-written
    done = subprocess.run(command("ift-killed"), check=True, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert "resuming from" in done.stdout
    runs = smoke_root / "outputs" / "runs"
    resumed = json.loads((runs / "ift-killed" / "train_metrics.json").read_text())
    reference = json.loads((runs / "ift-uninterrupted" / "train_metrics.json").read_text())
    assert resumed["resumed_from"] is not None and resumed["steps"] == reference["steps"]
    by_step = {entry["step"]: entry["loss"] for entry in reference["log_history"]}
    after_resume = [entry for entry in resumed["log_history"] if entry["step"] in by_step]
    assert after_resume, "no overlapping logged steps"
    for entry in after_resume:
        assert entry["loss"] == pytest.approx(by_step[entry["step"]], rel=1e-5, abs=1e-6)
