"""Resuming a killed cell (issue #20): work is resumed only from the same start checkpoint's contents (item 5), a kept
SFT half of sft_dpo is reused only if it was trained as the cell now asks (item 6), and a resumed run's train_loss
is the whole run's, or is named for what it covers (item 11).

The runs are stopped in-process right after a checkpoint is complete (a callback raises), which leaves the work
directory as a SIGKILL at that moment would (tests/ift/train/test_cell.py kills a real process).
"""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import TrainerCallback

from conftest import compose

# Smoke profile, SFT: 32 steps. Logging every 3 steps leaves steps 31-32 unlogged, so the final checkpoint carries a
# loss that no log entry holds.
RECIPE = ["trainer.logging_steps=3", "trainer.finetune.save_steps=6"]


class Stopped(Exception):
    pass


class StopAfter(TrainerCallback):
    """Stop training right after the first checkpoint is saved (``save``) or after the final one (``end``)."""

    def __init__(self, when: str):
        self.when = when

    def on_save(self, args, state, control, **kwargs):
        if self.when == "save":
            raise Stopped(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.when == "end":
            raise Stopped(state.global_step)


def _train(cfg, out, callbacks=()):
    from ift.train.cell import run_training

    return run_training(cfg, run_dir=out / "run", work_dir=out / "work", callbacks=callbacks)


def _stop(cfg, out, when: str) -> None:
    with pytest.raises(Stopped):
        _train(cfg, out, callbacks=[StopAfter(when)])
    assert not (out / "run").exists() and list((out / "work").rglob("checkpoint-*/trainer_state.json"))


def _metrics(run_dir) -> dict:
    return json.loads((run_dir / "train_metrics.json").read_text())


# ---- item 5: the fingerprint covers the start checkpoint's contents ------------------------------------------------

def test_the_checkpoint_digest_follows_contents_not_paths_times_or_records(tmp_path):
    from ift.train.resume import checkpoint_digest
    from tiny_lm import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    first = tmp_path / "first"
    tiny_model(tok).save_pretrained(first)
    tok.save_pretrained(first)
    digest = checkpoint_digest(first)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)  # another path, new modification times, same bytes
    (copy / "train_metrics.json").write_text('{"train_seconds": 12.5}')  # a record beside the weights
    (copy / "sft_half").mkdir()  # another checkpoint inside
    assert checkpoint_digest(copy) == digest
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # one bit of one weight, same size
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert checkpoint_digest(copy) != digest
    shutil.copy(first / "model.safetensors", copy / "model.safetensors")
    assert checkpoint_digest(copy) == digest
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + "\n")
    assert checkpoint_digest(copy) != digest
    assert checkpoint_digest("mistralai/Mistral-7B-v0.1") == "hub:mistralai/Mistral-7B-v0.1"


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
def test_a_killed_run_whose_start_checkpoint_was_replaced_starts_fresh(smoke_root, tmp_path, capsys):
    start = tmp_path / "base"
    shutil.copytree(smoke_root / "outputs" / "models" / "base", start)
    cfg = compose(["profile=smoke", "method=sft", "logger=none", f"start_checkpoints.base={start}", *RECIPE],
                  root=smoke_root)
    _stop(cfg, tmp_path, "save")
    # Other weights of the same shape at the same path (a retrained base after `dvc checkout` or `dvc repro base`).
    shutil.copy(smoke_root / "outputs" / "models" / "sft_beta" / "model.safetensors", start / "model.safetensors")
    capsys.readouterr()
    run_dir = _train(cfg, tmp_path)
    out = capsys.readouterr().out
    assert ", resuming from" not in out
    assert "are not resumed: " in out and "the checkpoint it starts from has other contents" in out
    assert _metrics(run_dir)["resumed_from"] is None


# ---- item 11: train_loss after a resume ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(smoke_root, tmp_path_factory):
    cfg = compose(["profile=smoke", "method=sft", "logger=none", *RECIPE], root=smoke_root)
    return _metrics(_train(cfg, tmp_path_factory.mktemp("uninterrupted")))


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
@pytest.mark.parametrize("when", ["save", "end"])
def test_a_resumed_run_reports_the_whole_runs_train_loss(smoke_root, tmp_path, uninterrupted, when):
    cfg = compose(["profile=smoke", "method=sft", "logger=none", *RECIPE], root=smoke_root)
    _stop(cfg, tmp_path, when)
    resumed = _metrics(_train(cfg, tmp_path))
    resumed_at = 6 if when == "save" else uninterrupted["steps"]
    assert resumed["resumed_from"].endswith(f"checkpoint-{resumed_at}") and resumed["steps"] == uninterrupted["steps"]
    assert uninterrupted["steps"] % 3, "the final step should be one that is not logged"
    assert resumed["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-6)
    assert "train_loss_since_resume" not in resumed and "train_loss_since_resume" not in uninterrupted


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
@pytest.mark.parametrize("when", ["save", "end"])
def test_a_checkpoint_without_the_loss_sum_gives_the_loss_since_the_resume_by_that_name(smoke_root, tmp_path,
                                                                                      uninterrupted, when):
    """A checkpoint written before the sum was carried (older code): the whole run's loss cannot be known."""
    cfg = compose(["profile=smoke", "method=sft", "logger=none", *RECIPE], root=smoke_root)
    _stop(cfg, tmp_path, when)
    for state_file in (tmp_path / "work").glob("checkpoint-*/trainer_state.json"):
        state = json.loads(state_file.read_text())
        state.get("stateful_callbacks", {}).pop("RunLossSum", None)
        state_file.write_text(json.dumps(state))
    resumed = _metrics(_train(cfg, tmp_path))
    assert resumed["train_loss"] is None
    if when == "end":  # no step ran after the resume: no loss, and never 0.0
        assert resumed["resumed_at_step"] == uninterrupted["steps"] and resumed["train_loss_since_resume"] is None
        return
    assert resumed["resumed_at_step"] == 6
    # The steps up to 6 are logged at steps 1, 3 and 6 (means over 1, 2 and 3 steps).
    logged = {entry["step"]: entry["loss"] for entry in uninterrupted["log_history"]}
    before = logged[1] * 1 + logged[3] * 2 + logged[6] * 3
    steps = uninterrupted["steps"]
    expected = (uninterrupted["train_loss"] * steps - before) / (steps - 6)
    assert resumed["train_loss_since_resume"] == pytest.approx(expected, rel=1e-5)


# ---- item 6: a kept SFT half of sft_dpo is reused only if it is what the cell asks for ----------------------------

@pytest.mark.slow
@pytest.mark.xdist_group("smoke_pipeline")
@pytest.mark.parametrize("change", ["none", "sft_reduction", "start_weights"])
def test_sft_dpo_killed_in_its_dpo_half_reuses_its_sft_half_only_if_unchanged(smoke_root, tmp_path, capsys, change):
    import yaml

    start = tmp_path / "base"
    shutil.copytree(smoke_root / "outputs" / "models" / "base", start)
    overrides = ["profile=smoke", "method=sft_dpo", "logger=none", f"start_checkpoints.base={start}",
                 "trainer.finetune.save_steps=4"]
    _stop(compose(overrides, root=smoke_root), tmp_path, "save")  # the callback stops the DPO half
    assert (tmp_path / "work" / "sft_half" / "train_metrics.json").exists()
    if change == "sft_reduction":  # the case: the SFT half was trained with sequence_mean
        overrides.append("method.sft.reduction=token_mean")
    if change == "start_weights":
        shutil.copy(smoke_root / "outputs" / "models" / "sft_beta" / "model.safetensors", start / "model.safetensors")
    capsys.readouterr()
    run_dir = _train(compose(overrides, root=smoke_root), tmp_path)
    out = capsys.readouterr().out

    cell = yaml.safe_load((run_dir / "config.yaml").read_text())
    sft_half = yaml.safe_load((run_dir / "sft_half" / "config.yaml").read_text())
    assert sft_half["method"] == {"name": "sft", **cell["method"]["sft"]}  # the halves agree
    dpo = _metrics(run_dir)
    if change == "none":
        assert "not reusing the SFT half" not in out and "/sft_half: sft from" not in out
        assert ", resuming from" in out and dpo["resumed_from"] is not None
        return
    reason = {"sft_reduction": "the run's config differs",
              "start_weights": "the checkpoint it starts from has other contents"}[change]
    assert f"not reusing the SFT half in {tmp_path / 'work' / 'sft_half'}: {reason}" in out
    assert "/sft_half: sft from" in out  # trained again
    # The DPO half starts from the new SFT half, so its old checkpoints are not resumed either.
    assert "are not resumed: " in out and dpo["resumed_from"] is None
    if change == "sft_reduction":
        assert sft_half["method"]["reduction"] == "token_mean"
