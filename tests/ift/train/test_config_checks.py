"""Training-side failures that used to be unclear (issue #20, item 10): a seed that is not a whole number, and a
work checkpoint whose trainer_state.json is empty or corrupt (a kill while the Trainer wrote it)."""

from __future__ import annotations

import json

import pytest

from conftest import compose
from ift.train.config_checks import ConfigError, validate_train_config


@pytest.mark.parametrize("seed", ["abc", "1.5", "-1", "true"])
def test_a_seed_that_is_not_a_whole_number_is_refused_naming_seed(tmp_path, seed):
    cfg = compose(["logger=none", f"seed={seed}"], root=tmp_path)
    with pytest.raises(ConfigError, match=r"^seed "):
        validate_train_config(cfg)


def test_a_whole_number_seed_passes_the_seed_check(tmp_path):
    from ift.train.config_checks import _check_seed

    for seed in (0, 2, 17, "3"):
        _check_seed(seed)
    cfg = compose(["logger=none", "seed=2"], root=tmp_path)
    assert cfg.run_name.endswith("-s2")
    _check_seed(cfg.seed)


def _checkpoint(work_dir, step: int, state: str | None) -> None:
    directory = work_dir / f"checkpoint-{step}"
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (directory / "trainer_state.json").write_text(state)


@pytest.mark.parametrize("broken", ["", '{"global_step": 3', "\0\0\0"])
def test_a_corrupt_trainer_state_falls_back_to_the_previous_complete_checkpoint(tmp_path, capsys, broken):
    from ift.train.resume import resume_point

    work_dir = tmp_path / "work" / "ift-base-s0"
    work_dir.mkdir(parents=True)
    (work_dir / "fingerprint.txt").write_text("abc\n")
    _checkpoint(work_dir, 10, json.dumps({"global_step": 10}))
    _checkpoint(work_dir, 20, json.dumps({"global_step": 20}))
    _checkpoint(work_dir, 30, broken)  # killed while trainer_state.json was written
    _checkpoint(work_dir, 40, None)  # killed before it was written

    assert resume_point(work_dir, "abc") == str(work_dir / "checkpoint-20")
    out = capsys.readouterr().out
    assert "WARNING" in out and str(work_dir / "checkpoint-30" / "trainer_state.json") in out
    assert (work_dir / "checkpoint-10").is_dir()  # nothing of the earlier work is deleted


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path):
    from ift.train.resume import resume_point

    work_dir = tmp_path / "work"
    work_dir.mkdir()
    (work_dir / "fingerprint.txt").write_text("abc\n")
    _checkpoint(work_dir, 5, "")
    assert resume_point(work_dir, "abc") is None
