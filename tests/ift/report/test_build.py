"""The report reads exactly the grid (issue #20, items 8 and 10): the plots read the grid's run directories only
(no killed save's ``.<name>.*.tmp``, no run outside params.yaml) and name a missing one; a non-list grid in
params.yaml, a corrupt result file and a leaderboard.json missing a task fail clearly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from ift.grid import load_grid
from ift.report import plots
from ift.report.build import IncompleteResults, build_report

TASKS = ("arc", "arc_gen", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")


def _write_eval(evals: Path, name: str, tasks=TASKS, value: float = 0.5) -> None:
    directory = evals / name
    directory.mkdir(parents=True)
    board = {"suite": "toy", "tasks": {task: {"metric": "acc", "value": value, "stderr": None, "n": 10,
                                              "num_fewshot": 0} for task in tasks}}
    (directory / "leaderboard.json").write_text(json.dumps(board))
    (directory / "alpaca.json").write_text(json.dumps({"win_rate": 40.0, "lc_win_rate_minimal": 41.0}))


def _evals(tmp_path: Path, methods=("ift",), seeds=(0, 1)) -> Path:
    evals = tmp_path / "evals"
    _write_eval(evals, "base")
    for method in methods:
        for seed in seeds:
            _write_eval(evals, f"{method}-base-s{seed}", value=0.4 + 0.1 * seed)
    return evals


def _write_run(runs: Path, directory: str, method: str) -> None:
    (runs / directory).mkdir(parents=True)
    metrics = {"method": method, "log_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]}
    if method == "ift":
        metrics.update({"lambda": [0.1, 0.2], "pass1_sft_loss": [2.1, 1.6], "pass2_loss": [2.0, 1.5]})
    (runs / directory / "train_metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def plotted_labels(monkeypatch):
    """The line labels of every plot written, keyed by file name."""
    labels: dict[str, list[str]] = {}
    real = plots.write_png_atomic

    def capture(figure, path, **kwargs):
        labels[Path(path).name] = [line.get_label() for ax in figure.axes for line in ax.get_lines()]
        return real(figure, path, **kwargs)

    monkeypatch.setattr(plots, "write_png_atomic", capture)
    return labels


def test_plots_read_the_grids_runs_only_and_name_a_missing_one(tmp_path, plotted_labels, capsys):
    runs = tmp_path / "runs"
    _write_run(runs, "ift-base-s0", "ift")
    _write_run(runs, "sft-base-s0", "sft")
    _write_run(runs, ".ift-base-s1.k2j4x9.tmp", "ift")  # a save killed before its rename
    _write_run(runs, "ift-base-s7", "ift")  # a run outside params.yaml's seeds
    _write_run(runs, "orpo-base-s0", "orpo")  # a method outside the grid
    build_report(evals_dir=_evals(tmp_path, methods=("sft", "ift")), runs_dir=runs, out_dir=tmp_path / "report",
                 methods=["sft", "ift"], starts=["base"], seeds=[0, 1], profile="smoke", require_complete=True)

    dynamics = plotted_labels["ift_dynamics.png"]
    assert dynamics == ["ift-base-s0", "ift-base-s0 pass 1 (SFT)", "ift-base-s0 pass 2 (IFT)"]
    assert sorted(set(plotted_labels["training_curves.png"])) == ["ift", "sft"]  # one line per grid run read
    assert len(plotted_labels["training_curves.png"]) == 2
    out = capsys.readouterr().out
    assert "WARNING" in out and "ift-base-s1" in out and "sft-base-s1" in out  # the grid's runs not found
    assert "ift-base-s7" not in out and "orpo" not in out


def test_plots_take_the_grids_run_names():
    assert plots.run_names(["sft", "ift"], ["base", "sft_beta"], [0, 1]) == [
        "sft-base-s0", "sft-base-s1", "ift-base-s0", "ift-base-s1",
        "sft-sft_beta-s0", "sft-sft_beta-s1", "ift-sft_beta-s0", "ift-sft_beta-s1"]


@pytest.mark.parametrize("line, key", [
    ('seeds: "10"', "seeds"),
    ("seeds: 10", "seeds"),
    ("seeds: [0, 1.5]", "seeds"),
    ("seeds: [0, true]", "seeds"),
    ("seeds: [0, -1]", "seeds"),
    ("methods: sft", "methods"),
    ("starts: base", "starts"),
])
def test_a_grid_that_is_not_a_list_is_refused_naming_the_key(tmp_path, line, key):
    grid = {"methods": "methods: [sft, ift]", "starts": "starts: [base]", "seeds": "seeds: [0, 1]"}
    grid[key] = line
    params = tmp_path / "params.yaml"
    params.write_text("profile: tiny\n" + "\n".join(grid.values()) + "\n")
    with pytest.raises(ValueError, match=rf"{key} must be a list"):
        load_grid(params)


def test_a_list_grid_reads_as_before(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("profile: tiny\nmethods: [sft, ift]\nstarts: [base, sft_beta]\nseeds: [0, 1, 2]\n")
    assert load_grid(params) == (["sft", "ift"], ["base", "sft_beta"], [0, 1, 2], "tiny", [], [])
    from conftest import REPO_ROOT

    grid = load_grid(REPO_ROOT / "params.yaml")
    assert grid.seeds and all(isinstance(seed, int) for seed in grid.seeds) and grid.base_only == ["dpo"]
    assert grid.chains and 0 in grid.seeds and 0 not in grid.chains
    params.write_text("methods: [sft]\nstarts: [base]\nseeds: [0]\nbase_only_methods: dpo\n")
    with pytest.raises(ValueError, match="base_only_methods must be a list"):
        load_grid(params)


@pytest.mark.parametrize("filename", ["leaderboard.json", "alpaca.json"])
@pytest.mark.parametrize("content", ["", '{"suite": "toy", "tasks": {"arc": ', "[1, 2]"])
def test_a_corrupt_result_file_is_an_error_naming_it(tmp_path, filename, content):
    evals = _evals(tmp_path)
    broken = evals / "ift-base-s1" / filename
    broken.write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(broken))):
        build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=tmp_path / "report", methods=["ift"],
                     starts=["base"], seeds=[0, 1], profile="smoke", require_complete=False)


def test_a_leaderboard_missing_a_task_is_named_and_fails_a_complete_report(tmp_path):
    evals = _evals(tmp_path)
    board_file = evals / "ift-base-s1" / "leaderboard.json"
    board = json.loads(board_file.read_text())
    del board["tasks"]["gsm8k"]
    board_file.write_text(json.dumps(board))
    kwargs = dict(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=tmp_path / "report", methods=["ift"],
                  starts=["base"], seeds=[0, 1], profile="smoke")
    with pytest.raises(IncompleteResults, match=re.escape("ift-base-s1/leaderboard.json: task gsm8k")):
        build_report(**kwargs, require_complete=True)
    result = build_report(**kwargs, require_complete=False)
    assert result["missing"] == ["ift-base-s1/leaderboard.json: task gsm8k"]
    assert "ift-base-s1/leaderboard.json: task gsm8k" in (tmp_path / "report" / "index.md").read_text()
    assert result["rows2"][1]["gsm8k"][2] == 1 and result["rows2"][1]["arc"][2] == 2


def test_a_complete_grid_has_nothing_missing(tmp_path):
    result = build_report(evals_dir=_evals(tmp_path), runs_dir=tmp_path / "runs", out_dir=tmp_path / "report",
                          methods=["ift"], starts=["base"], seeds=[0, 1], profile="smoke", require_complete=True)
    assert result["missing"] == []


def test_a_paper_full_grid_adds_its_methods_and_refuses_one_already_in_the_default_grid(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("methods: [sft, ift]\nbase_only_methods: [dpo]\nstarts: [base]\nseeds: [0]\n"
                      "paper_full_methods: [tdpo, simpo]\n")
    assert load_grid(params).methods == ["sft", "ift"]
    assert load_grid(params, paper_full=True).methods == ["sft", "ift", "tdpo", "simpo"]
    params.write_text("methods: [sft, ift]\nstarts: [base]\nseeds: [0]\n")
    with pytest.raises(ValueError, match="paper_full_methods"):
        load_grid(params, paper_full=True)
    params.write_text("methods: [sft, ift]\nstarts: [base]\nseeds: [0]\npaper_full_methods: tdpo\n")
    with pytest.raises(ValueError, match="paper_full_methods must be a list"):
        load_grid(params, paper_full=True)
    params.write_text("methods: [sft, ift]\nstarts: [base]\nseeds: [0]\npaper_full_methods: [ift]\n")
    with pytest.raises(ValueError, match=r"paper_full_methods \['ift'\] are in the default grid"):
        load_grid(params, paper_full=True)


def _report_command(root: Path, out: Path, *extra: str) -> None:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "ift.report", f"paths.root={root}", f"paths.report={out}", "logger=none",
                    "bench_file=null", *extra], check=True, capture_output=True)


def test_the_paper_full_report_fills_the_extra_rows_from_its_own_directory_and_the_default_report_ignores_them(
        tmp_path):
    """`python -m ift.report paper_full=true` reads the default grid's evaluations and the paper_full cells' (under
    outputs/paper_full/), adds their rows and claims 7a-7c; the default report is the same with or without them."""
    root = tmp_path
    (root / "params.yaml").write_text("profile: tiny\nmethods: [sft, ift]\nbase_only_methods: [dpo]\n"
                                      "paper_full_methods: [tdpo, simpo]\nstarts: [base, sft_beta]\nseeds: [0, 1]\n")
    evals, extra = root / "outputs" / "evals", root / "outputs" / "paper_full" / "evals"
    for start in ("base", "sft_beta"):
        _write_eval(evals, start, value=0.3)
        for seed in (0, 1):
            for method in ("sft", "ift", *(["dpo"] if start == "base" else [])):
                _write_eval(evals, f"{method}-{start}-s{seed}", value=0.5 + 0.01 * seed)
            for method, value in (("tdpo", 0.35), ("simpo", 0.45)):
                _write_eval(extra, f"{method}-{start}-s{seed}", value=value + 0.01 * seed)
    (root / "report").mkdir()
    _report_command(root, root / "report" / "default")
    _report_command(root, root / "report" / "paper_full", "paper_full=true")
    full = (root / "report" / "paper_full" / "table2.md").read_text()
    assert "| + TDPO | 35.5 ± 0.7 |" in full and "| + SimPO | 45.5 ± 0.7 |" in full
    rows = [line.split(" |")[0] for line in full.splitlines() if line.startswith("| ")][1:]
    assert rows[:6] == ["| **base (Mistral-7B analog)**", "| + SFT", "| + DPO", "| + TDPO", "| + SimPO", "| + IFT"]
    claims_rows = {row["claim"]: row for row in
                   json.loads((root / "report" / "paper_full" / "claims.json").read_text())["claims"]}
    # 7a: SFT's Avg (50.5) minus the best of DPO (50.5), SimPO (45.5), TDPO (35.5) from base, per seed: 0
    assert claims_rows["7a"]["ours"]["estimate"] == pytest.approx(0.0, abs=1e-9)
    assert claims_rows["7b"]["ours"]["estimate"] == pytest.approx(5.0) and claims_rows["7c"]["paper"]["verdict"] == (
        "supported")
    default = root / "report" / "default"
    assert "TDPO" not in (default / "table2.md").read_text() and '"7a"' not in (default / "claims.json").read_text()
    shutil.rmtree(root / "outputs" / "paper_full")
    _report_command(root, root / "report" / "default_again")
    for name in ("table2.md", "table2.csv", "table3.md", "claims.md", "claims.json", "paper_deltas.md", "summary.json"):
        assert (default / name).read_text() == (root / "report" / "default_again" / name).read_text(), name


def test_every_method_has_its_own_plot_colour_and_the_default_grids_colours_stay():
    """A method added to the registry must not recolour the committed training_curves.png of the default grid."""
    from ift.methods import METHODS

    assert set(plots.COLOURS) >= set(METHODS) and len(set(plots.COLOURS.values())) == len(plots.COLOURS)
    assert [plots.COLOURS[m] for m in ("sft", "dpo", "sft_dpo", "orpo", "ift")] == ["C0", "C1", "C2", "C3", "C4"]
