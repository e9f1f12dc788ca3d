"""The report: Table 2 / Table 3 numbers against hand computation, layout, missing cells, README sync."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ift.grid import parse_name
from ift.report.build import (
    IncompleteResults,
    build_report,
    readme_block,
    readme_section,
    update_readme,
)
from ift.report.tables import mean_std

TASKS = ("arc", "arc_gen", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")


def _write_eval(evals: Path, name: str, scores: dict[str, float], win_rate: float, lc: float | None = None):
    directory = evals / name
    directory.mkdir(parents=True)
    tasks = {task: {"metric": "acc", "value": value, "stderr": None, "n": 10, "num_fewshot": 0}
             for task, value in scores.items()}
    (directory / "leaderboard.json").write_text(json.dumps({"suite": "toy", "tasks": tasks}))
    (directory / "alpaca.json").write_text(json.dumps({"win_rate": win_rate, "lc_win_rate_minimal": lc}))


def _grid(tmp_path, seeds=(0, 1)):
    evals = tmp_path / "evals"
    for start in ("base", "sft_beta"):
        _write_eval(evals, start, {t: 0.25 for t in TASKS}, 10.0)
        for method in ("sft", "ift"):
            for seed in seeds:
                bump = 0.1 * seed + (0.05 if method == "ift" else 0.0)
                _write_eval(evals, f"{method}-{start}-s{seed}", {t: 0.3 + bump for t in TASKS}, 40.0 + 10 * seed)
    return evals


def test_mean_std_is_the_sample_std():
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert mean_std([3.0]) == (3.0, None)


def test_table2_values_layout_and_avg_against_hand_computation(tmp_path):
    evals = _grid(tmp_path)
    out = tmp_path / "report"
    result = build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=out, methods=["sft", "ift"],
                          starts=["base", "sft_beta"], seeds=[0, 1], profile="smoke", require_complete=True)
    rows = result["rows2"]
    assert [(r["start"], r["method"]) for r in rows] == [
        ("base", "-"), ("base", "sft"), ("base", "ift"), ("sft_beta", "-"), ("sft_beta", "sft"), ("sft_beta", "ift")]
    ift_base = rows[2]
    # seeds give 35% and 45% on every task: mean 40, sample std sqrt(50) = 7.07
    assert ift_base["gsm8k"][0] == pytest.approx(40.0) and ift_base["gsm8k"][1] == pytest.approx(math.sqrt(50))
    assert ift_base["avg"][0] == pytest.approx(40.0)  # Avg over the five non-ARC-Gen tasks
    assert rows[0]["arc"] == (pytest.approx(25.0), None, 1)  # a start point: one evaluation, no std
    table = (out / "table2.md").read_text()
    assert "| + IFT | 40.0 ± 7.1 |" in table
    assert (out / "table3.csv").read_text().splitlines()[2].startswith("base,sft,ours,45.0000,7.0711,2")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["base/ift/avg"] == pytest.approx(40.0) and summary["base/ift/avg_n"] == 2
    for name in ("table2.tex", "table3.md", "index.md", "plots/task_bars.png", "plots/training_curves.png"):
        assert (out / name).exists(), name


def test_avg_leaves_arc_gen_out(tmp_path):
    evals = tmp_path / "evals"
    scores = {"arc": 0.1, "arc_gen": 0.9, "mmlu": 0.2, "truthfulqa_mc2": 0.3, "winogrande": 0.4, "gsm8k": 0.5}
    _write_eval(evals, "base", scores, 0.0)
    result = build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=tmp_path / "r", methods=[],
                          starts=["base"], seeds=[0], profile="smoke", require_complete=True)
    assert result["rows2"][0]["avg"][0] == pytest.approx(30.0)


def test_each_table2_column_title_sits_over_its_own_tasks_value(tmp_path):
    """Every task gets a different score, so a title over another task's column (e.g. MMLU and TruthfulQA swapped)
    is caught in the Markdown and LaTeX tables (the CSV is keyed by task, not by title)."""
    evals = tmp_path / "evals"
    scores = {"arc": 0.11, "arc_gen": 0.22, "mmlu": 0.33, "truthfulqa_mc2": 0.44, "winogrande": 0.55, "gsm8k": 0.66}
    _write_eval(evals, "base", scores, 0.0)
    out = tmp_path / "report"
    build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=out, methods=[], starts=["base"], seeds=[0],
                 profile="smoke", require_complete=True)
    # written out by hand: the paper's column titles and the value (in %) each must sit over
    expected = {"ARC": "11.0", "ARC-Gen": "22.0", "MMLU": "33.0", "TruthfulQA": "44.0", "WinoGrande": "55.0",
                "GSM8K": "66.0", "Avg": "41.8"}  # Avg = (11 + 33 + 44 + 55 + 66) / 5, ARC-Gen left out

    table_lines = [line for line in (out / "table2.md").read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table_lines[0].strip("|").split("|")]
    values = [cell.strip() for cell in table_lines[2].strip("|").split("|")]
    assert header[0] == "Model" and set(header[1:]) == set(expected)
    for title, value in expected.items():
        assert values[header.index(title)] == value, f"table2.md: column {title!r} holds another task's value"

    tex_lines = (out / "table2.tex").read_text().splitlines()
    tex_header_at = next(i for i, line in enumerate(tex_lines) if line.startswith("Model &"))
    tex_header = [cell.strip() for cell in tex_lines[tex_header_at].removesuffix(r"\\").split("&")]
    tex_values = [cell.strip() for cell in tex_lines[tex_header_at + 2].removesuffix(r"\\").split("&")]
    assert set(tex_header[1:]) == set(expected)
    for title, value in expected.items():
        assert tex_values[tex_header.index(title)] == value, f"table2.tex: column {title!r} holds another task's value"


def test_missing_cells_fail_the_pipeline_but_not_an_exploration(tmp_path):
    evals = _grid(tmp_path, seeds=(0,))
    kwargs = dict(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=tmp_path / "r", methods=["sft", "ift"],
                  starts=["base", "sft_beta"], seeds=[0, 1], profile="smoke")
    with pytest.raises(IncompleteResults, match="sft-base-s1/leaderboard.json"):
        build_report(**kwargs, require_complete=True)
    assert not (tmp_path / "r" / "table2.md").exists()  # nothing half-written
    result = build_report(**kwargs, require_complete=False)
    assert result["rows2"][1]["arc"][2] == 1  # only seed 0 tabulated
    assert "Missing evaluations" in (tmp_path / "r" / "index.md").read_text()


def test_parse_name_rejects_unknown_directories():
    assert parse_name("ift-sft_beta-s2") == ("sft_beta", "ift", 2, 0)
    assert parse_name("base") == ("base", None, None, 0)
    assert parse_name("sft_beta-chain2") == ("sft_beta", None, None, 2)
    assert parse_name("sft_dpo-base-chain1-s1") == ("base", "sft_dpo", 1, 1)
    for name in ("junk", "base-chain0", "ift-base-chain0-s0", "ift-base-chain-s1"):  # chain 0 has no suffix
        with pytest.raises(ValueError, match=name):
            parse_name(name)


def test_update_readme_replaces_only_the_results_block(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "table2.md").write_text("T2\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n" + readme_section(tmp_path / "empty") + "\noutro\n")
    assert update_readme(readme, report) is True
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("\noutro\n")
    assert "T2" in readme_block(readme)
    assert update_readme(readme, report) is False  # idempotent


def test_committed_readme_matches_the_committed_report():
    """README's Results section must be exactly what the report renders (when a report is committed)."""
    from conftest import REPO_ROOT

    report = REPO_ROOT / "report"  # the report stage's committed outputs (DVC cache: false)
    block = readme_block(REPO_ROOT / "README.md")
    if not (report / "table2.md").exists():
        assert "not generated yet" in block
        return
    assert block == readme_section(report)


def test_check_complete_passes_a_full_report_and_names_each_empty_cell(tmp_path, capsys):
    from ift.report.check_complete import main as check_complete

    evals = _grid(tmp_path, seeds=(0,))
    for alpaca in evals.glob("*/alpaca.json"):  # the real evaluation always fills the length-controlled rate
        alpaca.write_text(json.dumps({**json.loads(alpaca.read_text()), "lc_win_rate_minimal": 12.5}))
    full = tmp_path / "full"
    build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=full, methods=["sft", "ift"],
                 starts=["base", "sft_beta"], seeds=[0], profile="smoke", require_complete=True)
    tables = [str(full / "table2.csv"), str(full / "table3.csv")]
    assert check_complete(tables) == 0

    for name in ("ift-sft_beta-s0/leaderboard.json", "ift-sft_beta-s0/alpaca.json"):
        (evals / name).unlink()
    partial = tmp_path / "partial"
    build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=partial, methods=["sft", "ift"],
                 starts=["base", "sft_beta"], seeds=[0], profile="smoke", require_complete=False)
    assert check_complete([str(partial / "table2.csv"), str(partial / "table3.csv")]) == 1
    err = capsys.readouterr().err
    assert "sft_beta/ift/arc_mean" in err and "sft_beta/ift/win_rate_mean" in err
    assert "sft_beta/sft/" not in err and "base/ift/" not in err
