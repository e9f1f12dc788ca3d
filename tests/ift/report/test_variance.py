"""The report over whole-chain replicates: which runs a row averages, the start-point / fine-tuning variance split
(on constructed numbers, against hand-computed values), and the files and captions that say so."""

from __future__ import annotations

import csv
import io

import pytest
from test_tables import TASKS, _write_eval

from ift.grid import eval_name, load_grid
from ift.report import variance
from ift.report.build import build_report
from ift.report.tables import collect


def test_the_split_on_constructed_numbers():
    # chains 10, 12, 14: var 4; chain 0's seeds 11, 12, 13: var 1 -> start-point var 3, share 3/4
    entry = variance.split([10.0, 12.0, 14.0], [11.0, 12.0, 13.0])
    assert entry == {"total": pytest.approx(4.0), "finetune": pytest.approx(1.0), "start": pytest.approx(3.0),
                     "start_share": pytest.approx(0.75), "n_chains": 3, "n_finetune": 3}
    # fine-tuning noisier than the chains: the difference is negative sampling noise, truncated at 0
    entry = variance.split([10.0, 11.0], [8.0, 12.0, 16.0])
    assert entry["start"] == 0.0 and entry["start_share"] == 0.0 and entry["total"] == pytest.approx(0.5)
    # a start point has no fine-tuning: all of its spread is the start point's
    entry = variance.split([40.0, 44.0, 42.0], None)
    assert entry["finetune"] == 0.0 and entry["start"] == pytest.approx(4.0) and entry["start_share"] == 1.0
    assert variance.split([1.0], [1.0, 2.0]) is None and variance.split([1.0, 2.0], [1.0]) is None
    assert variance.split([5.0, 5.0], [5.0, 5.0])["start_share"] is None  # no spread at all: no share


def _chain_grid(tmp_path, chains=(1, 2), seeds=(0, 1, 2)):
    """Start points score 20 + 2c; a cell scores 30 + 10c (chain part) + s (fine-tuning part), in every task."""
    evals = tmp_path / "evals"
    for start in ("base", "sft_beta"):
        for chain in (0, *chains):
            _write_eval(evals, eval_name(start, None, None, chain), {t: (20 + 2 * chain) / 100 for t in TASKS}, 10.0)
        for method in ("sft", "ift"):
            runs = {(0, seed) for seed in seeds} | {(chain, chain) for chain in chains}
            for chain, seed in runs:
                score = 30 + 10 * chain + seed
                _write_eval(evals, eval_name(start, method, seed, chain), {t: score / 100 for t in TASKS},
                            float(score))
    return evals


def test_rows_average_whole_chain_replicates_and_the_split_uses_chain_0s_seeds(tmp_path):
    cells, finetune, missing = collect(_chain_grid(tmp_path), ["sft", "ift"], ["base", "sft_beta"], [0, 1, 2],
                                       chains=[1, 2])
    assert not missing
    # chain c's replicate is its seed-c cell: 30 + 10c + c -> 30, 41, 52 (not chain 0's seeds 30, 31, 32)
    assert cells[("base", "ift")].by_seed["avg"] == {0: pytest.approx(30), 1: pytest.approx(41), 2: pytest.approx(52)}
    assert cells[("base", None)].by_seed["avg"] == {0: pytest.approx(20), 1: pytest.approx(22), 2: pytest.approx(24)}
    assert finetune[("sft_beta", "sft")].by_seed["win_rate"] == {0: 30.0, 1: 31.0, 2: 32.0}
    assert ("base", None) not in finetune
    rows = variance.variance_rows(cells, finetune, methods=["sft", "ift"], starts=["base", "sft_beta"])
    ift = next(r for r in rows if (r["start"], r["method"]) == ("base", "ift"))["avg"]
    assert ift["total"] == pytest.approx(121.0) and ift["finetune"] == pytest.approx(1.0)  # var(30,41,52), var(0,1,2)
    assert ift["start"] == pytest.approx(120.0)
    table = list(csv.DictReader(io.StringIO(variance.to_csv(rows))))
    assert float(table[0]["avg_start"]) == pytest.approx(4.0) and table[0]["avg_n_finetune"] == "0"


def test_a_missing_chain_evaluation_is_named(tmp_path):
    evals = _chain_grid(tmp_path)
    (evals / "ift-sft_beta-chain2-s2" / "alpaca.json").unlink()
    (evals / "base-chain1" / "leaderboard.json").unlink()
    _, _, missing = collect(evals, ["sft", "ift"], ["base", "sft_beta"], [0, 1, 2], chains=[1, 2])
    assert missing == ["base-chain1/leaderboard.json", "ift-sft_beta-chain2-s2/alpaca.json"]


def test_without_chains_rows_average_the_fine_tuning_seeds(tmp_path):
    cells, finetune, _ = collect(_chain_grid(tmp_path, chains=()), ["ift"], ["base"], [0, 1, 2])
    assert cells[("base", "ift")].by_seed["avg"] == {0: pytest.approx(30), 1: pytest.approx(31), 2: pytest.approx(32)}
    assert finetune == {} and cells[("base", None)].by_seed["avg"] == {None: pytest.approx(20)}


def test_the_report_says_what_its_spread_covers_and_writes_the_split(tmp_path):
    evals, out = _chain_grid(tmp_path), tmp_path / "report"
    result = build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=out, methods=["sft", "ift"],
                          starts=["base", "sft_beta"], seeds=[0, 1, 2], profile="tiny", require_complete=True,
                          chains=[1, 2])
    assert "whole-chain replicates" in (out / "table2.md").read_text().splitlines()[0]
    assert result["rows2"][1]["avg"][2] == 3  # three replicates, not five runs
    split = (out / "variance.md").read_text()
    assert "| + IFT | 11.0 | 1.0 | 11.0 | 99% |" in split  # std 11 over chains, 1 over seeds, sqrt(120) = 11.0
    assert "variance.md" in (out / "index.md").read_text()
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "variance.md").write_text("a previous run's split\n")  # replaced, never left stale
    build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=alone, methods=["sft", "ift"],
                 starts=["base", "sft_beta"], seeds=[0, 1, 2], profile="tiny", require_complete=True)
    assert "every seed shares one base and sft_beta" in (alone / "table2.md").read_text()
    assert (alone / "variance.md").read_text().startswith("No start-point vs fine-tuning split")
    assert (alone / "variance.csv").read_text().splitlines() == [(out / "variance.csv").read_text().splitlines()[0]]


@pytest.mark.parametrize("line, message", [
    ("chains: [0, 1]", "chains must be a list of whole numbers >= 1"),
    ("chains: 1", "chains must be a list"),
    ("chains: [1, 1]", "distinct"),
])
def test_impossible_chains_are_refused_naming_params(tmp_path, line, message):
    params = tmp_path / "params.yaml"
    params.write_text(f"methods: [sft]\nstarts: [base]\nseeds: [0, 1]\n{line}\n")
    with pytest.raises(ValueError, match=message) as err:
        load_grid(params)
    assert str(params) in str(err.value)
    params.write_text("methods: [sft]\nstarts: [base]\nseeds: [1, 2]\nchains: [1]\n")
    with pytest.raises(ValueError, match="need seed 0 in seeds"):
        load_grid(params)

