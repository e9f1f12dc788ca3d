"""A study's report on a hand-written study directory: means and sample stds over the replicates, the Δ to the
reference paired by chain, and a missing cell named and left out of the numbers, never averaged in."""

from __future__ import annotations

import csv
import io
import json

import pytest
from omegaconf import OmegaConf

from ift.report.tables import ResultFileError
from ift.study.report import aggregate, paired_delta, reference_row, write_study_report
from ift.study.spec import parse_study

STUDY = parse_study({
    "title": "A toy ladder", "knob": "variant", "reference": {"variant": "sft"}, "starts": ["base"],
    "chains": [0, 1, 2],
    "variants": {"sft": {"overrides": ["method=sft"]}, "ift": {"overrides": ["method=ift"]}},
}, name="toy")
TASKS = ("arc", "arc_gen", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")
# (cell -> every task's value, as a fraction): Avg = that value x 100 (the five Avg tasks are equal)
SCORES = {"sft-base-s0": 0.40, "sft-base-chain1-s1": 0.44, "sft-base-chain2-s2": 0.42,
          "ift-base-s0": 0.50, "ift-base-chain1-s1": 0.40}  # ift-base-chain2-s2: missing (killed study)
WIN_RATES = {"sft-base-s0": 10.0, "sft-base-chain1-s1": 20.0, "sft-base-chain2-s2": 30.0, "ift-base-s0": 40.0,
             "ift-base-chain1-s1": 50.0}


def write_evals(evals, scores=SCORES, win_rates=WIN_RATES):
    for name, value in scores.items():
        (evals / name).mkdir(parents=True)
        board = {"tasks": {task: {"value": value} for task in TASKS}, "avg": value}
        (evals / name / "leaderboard.json").write_text(json.dumps(board))
        (evals / name / "alpaca.json").write_text(json.dumps({"win_rate": win_rates[name],
                                                              "lc_win_rate_minimal": None}))


@pytest.fixture
def evals(tmp_path):
    write_evals(tmp_path / "evals")
    return tmp_path / "evals"


def test_rows_average_over_the_replicates_present_and_name_the_missing_cell(evals):
    sft, ift = aggregate(STUDY, evals)
    assert (sft.variant, ift.variant) == ("sft", "ift")
    mean, std, n = sft.stat("avg")
    assert (mean, n) == (pytest.approx(42.0), 3) and std == pytest.approx(2.0)  # 40, 44, 42: sample std 2
    assert sft.missing == []
    mean, std, n = ift.stat("avg")
    assert (mean, n) == (pytest.approx(45.0), 2)  # (50 + 40) / 2: the missing chain 2 is not a zero
    assert std == pytest.approx(50 ** 0.5)
    assert ift.missing == ["ift-base-chain2-s2/leaderboard.json", "ift-base-chain2-s2/alpaca.json"]
    assert ift.stat("win_rate")[:1] == (pytest.approx(45.0),)


def test_the_delta_to_the_reference_pairs_replicates_by_chain(evals):
    rows = aggregate(STUDY, evals)
    reference = reference_row(rows, STUDY, "base")
    assert reference.variant == "sft"
    mean, std, n = paired_delta(rows[1], reference)
    # chain 0: 50 - 40 = +10, chain 1: 40 - 44 = -4; chain 2 has no IFT cell, so it is not paired
    assert (mean, n) == (pytest.approx(3.0), 2) and std == pytest.approx(98 ** 0.5)
    assert paired_delta(reference, reference) is None


def test_the_report_files_name_the_missing_cell_and_mark_the_short_row(evals, tmp_path):
    cfg = OmegaConf.create({"paths": {"root": str(tmp_path), "outputs": str(evals.parent)},
                            "evals": ["leaderboard", "alpaca"], "profile": "smoke", "logger": {"report_to": "none"}})
    result = write_study_report(STUDY, cfg, out_dir=tmp_path / "report")
    assert set(result["files"]) == {"md", "csv", "png"}
    assert (tmp_path / "report" / "toy.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (tmp_path / "report" / "toy.md").read_text()
    assert "| **sft** | 42.0 ± 2.0 | – |" in markdown
    assert "| ift | 45.0 ± 7.1 (2/3) | +3.0 ± 9.9 (n=2) |" in markdown
    assert "Missing (2 result files" in markdown and "ift-base-chain2-s2/leaderboard.json" in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report" / "toy.csv").read_text())))
    assert [(r["variant"], r["avg_mean"], r["avg_n"], r["n_expected"]) for r in rows] == [
        ("sft", "42.0000", "3", "3"), ("ift", "45.0000", "2", "3")]
    assert rows[1]["missing"] == "ift-base-chain2-s2/leaderboard.json;ift-base-chain2-s2/alpaca.json"
    assert rows[1]["avg_delta_mean"] == "3.0000" and rows[0]["avg_delta_n"] == "0"


def test_a_complete_study_says_so_and_only_the_evaluations_asked_for_are_expected(tmp_path):
    write_evals(tmp_path / "evals", {**SCORES, "ift-base-chain2-s2": 0.45},
                {**WIN_RATES, "ift-base-chain2-s2": 60.0})
    (tmp_path / "evals" / "sft-base-s0" / "alpaca.json").unlink()
    rows = aggregate(STUDY, tmp_path / "evals", ["leaderboard"])
    assert [row.missing for row in rows] == [[], []] and rows[1].stat("avg")[2] == 3
    assert "win_rate" not in rows[0].scores.values  # not read, since not asked for
    cfg = OmegaConf.create({"paths": {"root": str(tmp_path), "outputs": str(tmp_path)}, "evals": ["leaderboard"],
                            "profile": "smoke", "logger": {"report_to": "none"}})
    write_study_report(STUDY, cfg, out_dir=tmp_path / "report")
    assert "All 6 cells' results are present." in (tmp_path / "report" / "toy.md").read_text()


def test_a_task_absent_from_a_leaderboard_is_named_and_a_corrupt_file_names_itself(evals):
    board = json.loads((evals / "sft-base-s0" / "leaderboard.json").read_text())
    del board["tasks"]["gsm8k"]
    (evals / "sft-base-s0" / "leaderboard.json").write_text(json.dumps(board))
    sft = aggregate(STUDY, evals)[0]
    assert sft.missing == ["sft-base-s0/leaderboard.json: task gsm8k"]
    assert sft.stat("avg")[2] == 2 and sft.stat("arc")[2] == 3  # no Avg without GSM8K; the other tasks stand
    (evals / "sft-base-s0" / "alpaca.json").write_text("{not json")
    with pytest.raises(ResultFileError, match="sft-base-s0/alpaca.json"):
        aggregate(STUDY, evals)
