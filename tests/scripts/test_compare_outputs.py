"""scripts/compare_outputs.py, the check that a rerun reproduced every weight byte and every number."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "compare_outputs.py"


def _tree(root, *, weights=b"\x00\x01weights", loss=0.5, seconds=12.0, extra=None):
    run = root / "runs" / "ift-base-s0"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(weights)
    metrics = {"final_loss": loss, "train_seconds": seconds, "log_history": [{"loss": loss, "train_runtime": seconds}],
               "nan": float("nan")}
    (run / "train_metrics.json").write_text(json.dumps(metrics))
    if extra:
        (root / extra).write_text("x")
    return root


def _compare(old, new, *args):
    done = subprocess.run([sys.executable, str(SCRIPT), str(old), str(new), *args], capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout


def test_only_wall_clock_fields_differing_is_a_match_and_is_reported(tmp_path):
    code, out = _compare(_tree(tmp_path / "a"), _tree(tmp_path / "b", seconds=13.5))
    assert code == 0, out
    assert "2 files compared (1 weight files), 0 differ" in out
    assert "'train_runtime': 1" in out and "'train_seconds': 1" in out  # what was left out is said


def test_a_changed_weight_byte_is_caught(tmp_path):
    code, out = _compare(_tree(tmp_path / "a"), _tree(tmp_path / "b", weights=b"\x00\x02weights"))
    assert code == 1
    assert "DIFFERS runs/ift-base-s0/model.safetensors: bytes differ" in out


def test_a_changed_number_is_caught_with_its_path(tmp_path):
    code, out = _compare(_tree(tmp_path / "a"), _tree(tmp_path / "b", loss=0.5000001))
    assert code == 1
    assert "$.final_loss: 0.5 -> 0.5000001" in out and "$.log_history[0].loss" in out


def test_a_missing_file_is_caught(tmp_path):
    code, out = _compare(_tree(tmp_path / "a"), _tree(tmp_path / "b", extra="stray.txt"))
    assert code == 1
    assert "DIFFERS stray.txt: only in new" in out


def test_volatile_keys_can_be_narrowed_so_a_timing_difference_counts(tmp_path):
    code, out = _compare(_tree(tmp_path / "a"), _tree(tmp_path / "b", seconds=13.5), "--volatile", "train_runtime")
    assert code == 1
    assert "$.train_seconds: 12.0 -> 13.5" in out


def test_a_path_that_is_not_a_directory_is_refused(tmp_path):
    code, out = _compare(tmp_path / "missing", _tree(tmp_path / "b"))
    assert code == 2


def test_lm_evals_volatile_records_are_left_out_but_its_results_are_not(tmp_path):
    """lm-eval records where it read each task (a temporary directory), the commit, and task functions by repr."""
    def record(root, source, address, acc):
        root.mkdir()
        (root / "leaderboard.json").write_text(json.dumps({"lm_eval": {
            "git_hash": source, "configs": {"toy_arc": {"metadata": {"config_source": f"/tmp/{source}/arc.yaml"},
                                                        "doc_to_text": f"<function doc_to_text at {address}>"}},
            "results": {"toy_arc": {"acc,none": acc}}}}))
        return root

    code, out = _compare(record(tmp_path / "a", "abc", "0x7f12", 0.5), record(tmp_path / "b", "def", "0x7f56", 0.5))
    assert code == 0, out
    code, out = _compare(record(tmp_path / "c", "abc", "0x7f12", 0.5), record(tmp_path / "d", "abc", "0x7f12", 0.75))
    assert code == 1 and "$.lm_eval.results.toy_arc.acc,none: 0.5 -> 0.75" in out
