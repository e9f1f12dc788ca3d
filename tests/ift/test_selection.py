"""The paper's checkpoint selection (ift.selection, eval.select=best_avg): which steps are snapshot, which one is
kept, the verdict-change table, and one real run on the smoke world (snapshots, the final-weights check, the files)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose
from ift.report.claims import verdict_changes
from ift.selection import SelectionError, choose, grid_file_text, select_run, snapshot_steps


def test_snapshot_steps_are_the_rounded_fractions_without_the_final_step():
    assert snapshot_steps(38, [0.25, 0.5, 0.75]) == [10, 19, 28]  # 9.5 -> 10, 19, 28.5 -> 28 (half to even)
    assert snapshot_steps(88, [0.5]) == [44]
    assert snapshot_steps(2, [0.25, 0.5, 0.75]) == [1]  # 0 -> 1, 1, 2 is the final step itself
    for bad in ([0.0], [1.0], [-0.5], [1.5]):
        with pytest.raises(ValueError, match="select_fractions"):
            snapshot_steps(38, bad)


def test_the_best_avg_is_kept_and_a_tie_goes_to_the_later_step():
    assert choose({10: 0.41, 19: 0.47, 28: 0.44, 38: 0.45}) == 19
    assert choose({10: 0.45, 19: 0.40, 38: 0.45}) == 38  # the final weights win a tie
    with pytest.raises(SelectionError, match="no evaluated checkpoint"):
        choose({})


def _claim(claim, verdict, estimate):
    return {"claim": claim, "paper_claim": f"claim {claim}", "ours": {"verdict": verdict, "estimate": estimate,
                                                                      "low": estimate - 1, "high": estimate + 1},
            "paper": {"verdict": "supported"}}


def test_the_verdict_change_table_marks_exactly_the_changed_claims():
    baseline = {"claims": [_claim("1", "inconclusive", 0.5), _claim("2", "contradicted", -3.0)]}
    text = verdict_changes(baseline, [_claim("1", "supported", 2.0), _claim("2", "contradicted", -2.0)],
                           "report/claims.json", "selection/claims.json")
    rows = [line for line in text.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows[0].endswith("| inconclusive: +0.50 [-0.50, +1.50] | supported: +2.00 [+1.00, +3.00] | **yes** | "
                            "supported |")
    assert "| no |" in rows[1]
    with pytest.raises(Exception, match="claim 3"):
        verdict_changes(baseline, [_claim("3", "supported", 1.0)], "a", "b")


def test_the_selection_grid_keeps_the_tables_replicates_only():
    from ift.grid import Grid

    grid = Grid(["sft", "ift"], ["base", "sft_beta"], [0, 1, 2], "tiny", ["dpo"], [1, 2])
    data = yaml.safe_load(grid_file_text(grid))
    assert data["seeds"] == [0] and data["chains"] == [1, 2] and data["base_only_methods"] == ["dpo"]
    assert yaml.safe_load(grid_file_text(grid._replace(chains=[])))["seeds"] == [0, 1, 2]


@pytest.mark.xdist_group("smoke_pipeline")
def test_a_real_selection_on_the_smoke_world(smoke_root, tmp_path):
    from ift.evaluate.suites import suite_from_config
    from ift.train.cell import run_training

    root = tmp_path / "root"  # the session's smoke world and start points, read-only; runs land here
    (root / "outputs").mkdir(parents=True)
    for part in ("world", "models"):
        (root / "outputs" / part).symlink_to(smoke_root / "outputs" / part)
    root_cfg = compose(["profile=smoke", "logger=none", "method=sft", "start=base", "seed=0"], root=root)
    run_training(root_cfg)  # the committed run: outputs/runs/sft-base-s0
    committed = root / "outputs" / "runs" / "sft-base-s0"
    steps = json.loads((committed / "train_metrics.json").read_text())["steps"]
    # evaluations at 2 threads: a retrain after an evaluation in the same process must still reproduce the committed
    # weights (the selection stage runs many in one process)
    eval_cfg = {**OmegaConf.to_container(root_cfg.eval, resolve=True), "parallel": False, "threads": 2}
    kwargs = dict(method="sft", start="base", seed=0, chain=0, profile="smoke", root_cfg=root_cfg,
                  fractions=[0.5], suite=suite_from_config(OmegaConf.to_container(root_cfg.suite, resolve=True)),
                  judge_cfg=OmegaConf.to_container(root_cfg.judge, resolve=True), eval_cfg=eval_cfg)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        summary = select_run(work=tmp_path / "work", out=tmp_path / "out", **kwargs)
        assert summary["final_step"] == steps and set(summary["avg_by_step"]) == {str(round(steps / 2)), str(steps)}
        best = max(summary["avg_by_step"].items(), key=lambda kv: (kv[1], int(kv[0])))
        assert summary["chosen_step"] == int(best[0])
        board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
        assert board["avg"] == summary["avg_by_step"][best[0]]
        assert (tmp_path / "out" / "alpaca.json").is_file() and not (tmp_path / "work").exists()
        assert json.loads((tmp_path / "out" / "selection.json").read_text()) == summary
        assert select_run(work=tmp_path / "work", out=tmp_path / "again", **kwargs) == summary  # after evaluations

        # a committed run whose weights the retrain does not reproduce: refused before any evaluation
        weights = committed / "model.safetensors"
        shutil.copyfile(weights, tmp_path / "kept.safetensors")
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        try:
            with pytest.raises(SelectionError, match="differ from .*sft-base-s0"):
                select_run(work=tmp_path / "work2", out=tmp_path / "out2", **kwargs)
            assert not (tmp_path / "out2").exists()
        finally:
            shutil.copyfile(tmp_path / "kept.safetensors", weights)
