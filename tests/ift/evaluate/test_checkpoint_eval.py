"""``python -m ift.evaluate`` end to end on the smoke world: result files and their format, no network for the toy
suite and judge, a clear failure for a missing or broken checkpoint, and no partial results after an interruption.
The model is a small random Mistral with the world's tokenizer (its scores mean nothing; the plumbing does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO_ROOT, build_world, compose

TASK_KEYS = ["arc", "arc_gen", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A repo-like root: the smoke world under outputs/world and a random small checkpoint under ckpt/."""
    from transformers import AutoTokenizer

    from ift.checkpoints import save_checkpoint
    from ift.train.start_points import build_tiny_model
    root = tmp_path_factory.mktemp("eval_root")
    cfg = compose(["profile=smoke"], root=root)
    build_world("smoke", cfg.paths.world, root=root)
    tokenizer = AutoTokenizer.from_pretrained(Path(cfg.paths.world) / "tokenizer")
    shape = OmegaConf.create({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "num_key_value_heads": 2,
                              "max_position_embeddings": 512, "rope_theta": 10000.0, "tie_word_embeddings": False})
    save_checkpoint(build_tiny_model(shape, tokenizer, seed=0), tokenizer, root / "ckpt")
    return root


def _cfg(root: Path, out: Path, *overrides: str):
    return compose(["profile=smoke", f"model_dir={root / 'ckpt'}", f"out={out}", *overrides], root=root)


@pytest.mark.slow
def test_both_evaluations_write_their_documented_files_offline(root, tmp_path, no_network):
    from ift.evaluate.checkpoint_eval import run_from_config

    out = tmp_path / "out"
    records = run_from_config(_cfg(root, out))
    assert sorted(p.name for p in out.iterdir()) == ["alpaca.json", "alpaca_annotations.json", "leaderboard.json"]

    board = json.loads((out / "leaderboard.json").read_text())
    assert board == json.loads(json.dumps(records["leaderboard"]))
    assert board["suite"] == "toy" and board["model_dir"] == str(root / "ckpt")
    assert sorted(board["tasks"]) == sorted(TASK_KEYS)
    for key, row in board["tasks"].items():
        assert set(row) >= {"metric", "value", "stderr", "n", "num_fewshot"}
        assert 0.0 <= row["value"] <= 1.0 and row["n"] == 32, key
    assert board["tasks"]["arc"]["metric"] == "acc_norm"
    assert board["tasks"]["gsm8k"]["metric"] == "exact_match"
    five = [board["tasks"][k]["value"] for k in TASK_KEYS if k != "arc_gen"]
    assert board["avg"] == pytest.approx(sum(five) / 5)
    assert board["truncated_requests"] == {"loglikelihood": 0, "generate_until": 0}
    assert "toy_arc" in board["lm_eval"]["results"] and board["seconds"] > 0

    alpaca = json.loads((out / "alpaca.json").read_text())
    assert alpaca["judge"] == "toy" and alpaca["annotator"] == "toy_world_judge"
    assert 0.0 <= alpaca["win_rate"] <= 100.0 and alpaca["n"] == 32
    assert {"standard_error", "lc_win_rate_minimal", "avg_length", "seconds"} <= set(alpaca)
    assert alpaca["lc_win_rate"] is None  # the official LC is for AlpacaEval 2 only
    annotations = json.loads((out / "alpaca_annotations.json").read_text())
    assert len(annotations) == 32 and {a["generator_2"] for a in annotations} == {"ckpt"}


@pytest.mark.parametrize("breakage", ["missing", "no_weights", "bad_config"])
def test_a_missing_or_broken_checkpoint_fails_at_once(root, tmp_path, breakage):
    from ift.checkpoints import CheckpointError
    from ift.evaluate.checkpoint_eval import run_from_config

    ckpt = tmp_path / "ckpt"
    if breakage != "missing":
        ckpt.mkdir()
        for item in (root / "ckpt").iterdir():
            (ckpt / item.name).write_bytes(item.read_bytes())
        if breakage == "no_weights":
            (ckpt / "model.safetensors").unlink()
        else:
            (ckpt / "config.json").write_text("{not json")
    out = tmp_path / "out"
    cfg = compose(["profile=smoke", f"model_dir={ckpt}", f"out={out}"], root=root)
    with pytest.raises(CheckpointError, match=str(ckpt)):
        run_from_config(cfg)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_an_interrupted_evaluation_leaves_no_partial_or_stale_results(root, tmp_path, monkeypatch):
    import ift.evaluate.alpaca_eval as alpaca
    from ift.evaluate.checkpoint_eval import run_from_config

    out = tmp_path / "out"
    out.mkdir()
    (out / "alpaca.json").write_text('{"stale": true}')  # from an earlier evaluation of another checkpoint

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(alpaca, "annotate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_from_config(_cfg(root, out))
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.json"]  # finished before the interruption
    json.loads((out / "leaderboard.json").read_text())


def test_unknown_eval_and_missing_arguments_are_named(root, tmp_path):
    from ift.evaluate.checkpoint_eval import EvaluationConfigError, run_from_config

    with pytest.raises(EvaluationConfigError, match="model_dir"):
        run_from_config(compose(["profile=smoke", f"out={tmp_path}"], root=root))
    with pytest.raises(EvaluationConfigError, match="evals"):
        run_from_config(_cfg(root, tmp_path / "out", "evals=[leaderboard,mtbench]"))


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "IFT_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ift.evaluate", "profile=smoke", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_runs_one_evaluation_and_fails_clearly(root, tmp_path):
    out = tmp_path / "out"
    done = _cli(root, f"model_dir={root / 'ckpt'}", f"out={out}", "evals=[alpaca]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["alpaca.json", "alpaca_annotations.json"]
    assert "win_rate" in done.stdout

    failed = _cli(root, f"model_dir={tmp_path / 'nowhere'}", f"out={out}")
    assert failed.returncode != 0
    assert "does not exist" in failed.stderr and str(tmp_path / "nowhere") in failed.stderr


def _recording_simple_evaluate(monkeypatch, log: Path):
    """Wrap lm_eval.simple_evaluate to append (pid, tasks) to a file: a forked child's calls are seen too."""
    import lm_eval

    original = lm_eval.simple_evaluate

    def recorded(*args, **kwargs):
        with log.open("a") as handle:
            handle.write(json.dumps([os.getpid(), kwargs["tasks"]]) + "\n")
        return original(*args, **kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", recorded)


def _numbers(records: dict) -> dict:
    """What an evaluation measured, without its wall times, dates and temporary paths."""
    board = records["leaderboard"]
    alpaca = {k: v for k, v in records["alpaca"].items() if not k.endswith("seconds")}
    return {"tasks": board["tasks"], "avg": board["avg"], "truncated": board["truncated_requests"],
            "results": board["lm_eval"]["results"], "n_samples": board["lm_eval"]["n-samples"], "alpaca": alpaca}


@pytest.mark.slow
def test_parallel_evaluation_forks_the_generation_work_and_measures_the_same(root, tmp_path, monkeypatch):
    from ift.evaluate.checkpoint_eval import run_from_config

    log = tmp_path / "calls.jsonl"
    _recording_simple_evaluate(monkeypatch, log)
    # a 200-token window cuts prompts in both lanes: the truncation counts of the two processes are added up
    serial = run_from_config(_cfg(root, tmp_path / "serial", "eval.parallel=false", "eval.max_length=200"))
    serial_calls = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    parallel = run_from_config(_cfg(root, tmp_path / "parallel", "eval.parallel=true", "eval.max_length=200"))
    parallel_calls = [json.loads(line) for line in log.read_text().splitlines()]

    assert {pid for pid, _ in serial_calls} == {os.getpid()}
    assert [tasks for _, tasks in serial_calls] == [
        ["toy_arc", "toy_arc_gen", "toy_mmlu", "toy_truthfulqa_mc2", "toy_gsm8k"], ["toy_winogrande"]]
    here = [tasks for pid, tasks in parallel_calls if pid == os.getpid()]
    forked = [tasks for pid, tasks in parallel_calls if pid != os.getpid()]
    assert here == [["toy_arc", "toy_mmlu", "toy_truthfulqa_mc2"], ["toy_winogrande"]]
    assert forked == [["toy_arc_gen", "toy_gsm8k"]]

    assert _numbers(parallel) == _numbers(serial)
    assert min(parallel["leaderboard"]["truncated_requests"].values()) > 0
    for name in ("leaderboard.json", "alpaca.json", "alpaca_annotations.json"):
        assert json.loads((tmp_path / "parallel" / name).read_text()) is not None
    annotations = [json.loads((tmp_path / d / "alpaca_annotations.json").read_text()) for d in ("serial", "parallel")]
    assert [[a["output_2"], a["preference"]] for a in annotations[0]] == \
        [[a["output_2"], a["preference"]] for a in annotations[1]]


@pytest.mark.slow
def test_a_failing_generation_lane_fails_the_evaluation_with_its_own_error(root, tmp_path, monkeypatch):
    import ift.evaluate.leaderboard as leaderboard
    from ift.evaluate.checkpoint_eval import run_from_config

    original = leaderboard.run_lm_eval
    parent = os.getpid()

    def fails_in_the_child(lm, calls, *args, **kwargs):
        if os.getpid() != parent:
            raise ValueError("generation broke")
        return original(lm, calls, *args, **kwargs)

    monkeypatch.setattr(leaderboard, "run_lm_eval", fails_in_the_child)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="generation broke") as raised:
        run_from_config(_cfg(root, out))
    assert any("forked process" in note for note in raised.value.__notes__)
    assert not out.exists() or not any(out.iterdir())  # no leaderboard.json without its generation tasks


@pytest.mark.parametrize("value", ["yes", "2"])
def test_eval_parallel_must_be_a_boolean(root, tmp_path, value):
    from ift.evaluate.checkpoint_eval import EvaluationConfigError, run_from_config

    with pytest.raises(EvaluationConfigError, match="eval.parallel"):
        run_from_config(_cfg(root, tmp_path / "out", f"eval.parallel={value}"))


def test_parallel_applies_on_cpu_only():
    from ift.evaluate.checkpoint_eval import _in_two_processes

    assert _in_two_processes({"parallel": True}, "cpu")
    assert not _in_two_processes({"parallel": True}, "cuda")
    assert not _in_two_processes({"parallel": False}, "cpu")
