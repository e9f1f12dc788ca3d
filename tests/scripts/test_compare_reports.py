"""scripts/compare_reports.py, the check that another machine's tables agree with ours as replicates would."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import statistics
import subprocess
import sys

import pytest
from scipy.stats import ttest_ind

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "compare_reports.py"
ROWS = [("base", "-"), ("base", "ift")]


def _load():
    spec = importlib.util.spec_from_file_location("compare_reports", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _write_table(path, metrics, samples):
    """samples: {(start, method): {metric: [replicate values]}}; columns as ift.report writes them."""
    columns = ["start", "method", "source"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for (start, method), values in samples.items():
            row = [start, method, "ours"]
            for metric in metrics:
                xs = values[metric]
                row += [f"{statistics.mean(xs):.4f}", f"{statistics.stdev(xs):.4f}", len(xs)]
            writer.writerow(row)
        writer.writerow([start, method, "paper"] + ["99", "", "1"] * len(metrics))  # not ours: never compared


def _report(root, *, avg_ift=(46.0, 47.0, 45.5), gsm8k_base=(0.0, 0.0, 0.0), verdict="supported"):
    root.mkdir(parents=True)
    _write_table(root / "table2.csv", ["gsm8k", "avg"], {
        ROWS[0]: {"gsm8k": list(gsm8k_base), "avg": [42.0, 40.0, 44.5]},
        ROWS[1]: {"gsm8k": [10.0, 12.5, 7.5], "avg": list(avg_ift)}})
    _write_table(root / "table3.csv", ["win_rate"], {ROWS[0]: {"win_rate": [1.6, 1.0, 2.2]},
                                                     ROWS[1]: {"win_rate": [20.0, 25.0, 22.0]}})
    claims = {"claims": [{"claim": "1", "ours": {"verdict": verdict}}, {"claim": "2", "ours": {"verdict": "inconclusive"}}]}
    (root / "claims.json").write_text(json.dumps(claims))
    return root


def _compare(old, new):
    done = subprocess.run([sys.executable, str(SCRIPT), str(old), str(new)], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_identical_reports_agree_everywhere(tmp_path):
    code, out, _ = _compare(_report(tmp_path / "a"), _report(tmp_path / "b"))
    assert code == 0
    assert "0 of 5 (row, metric) pairs differ at p < 0.05" in out
    assert "1 pairs not testable (no spread in either run, or n < 2): 1 equal, 0 differ" in out
    assert "0 of 2 claims changed verdict" in out


def test_a_shifted_cell_is_flagged_with_welchs_p_from_the_raw_replicates(tmp_path):
    old, new = (46.0, 47.0, 45.5), (52.0, 53.5, 51.0)
    code, out, _ = _compare(_report(tmp_path / "a", avg_ift=old), _report(tmp_path / "b", avg_ift=new))
    assert code == 0
    assert "1 of 5 (row, metric) pairs differ at p < 0.05" in out
    expected = ttest_ind(new, old, equal_var=False).pvalue  # scipy from the samples, not from the summary columns
    assert f"| table2.csv | base + ift | avg | 46.2 ± 0.8 (3) | 52.2 ± 1.3 (3) | {expected:.3f} |" in out


def test_a_small_shift_within_the_spread_is_not_flagged(tmp_path):
    code, out, _ = _compare(_report(tmp_path / "a"), _report(tmp_path / "b", avg_ift=(46.5, 47.5, 45.0)))
    assert code == 0 and "0 of 5 (row, metric) pairs differ" in out


def test_welch_p_matches_scipy_and_refuses_what_it_cannot_test():
    module = _load()
    a, b = [1.0, 2.0, 4.0, 3.5], [2.5, 6.0, 5.0]
    cell = lambda xs: module.Cell(statistics.mean(xs), statistics.stdev(xs), len(xs))  # noqa: E731
    assert module.welch_p(cell(a), cell(b)) == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert math.isnan(module.welch_p(module.Cell(3.0, 0.0, 3), module.Cell(4.0, 0.0, 3)))  # no spread: no test
    assert math.isnan(module.welch_p(module.Cell(3.0, 1.0, 1), module.Cell(4.0, 1.0, 3)))  # one replicate


def test_a_difference_without_spread_is_listed_not_tested(tmp_path):
    code, out, _ = _compare(_report(tmp_path / "a"), _report(tmp_path / "b", gsm8k_base=(5.0, 5.0, 5.0)))
    assert code == 0
    assert "1 pairs not testable (no spread in either run, or n < 2): 0 equal, 1 differ" in out
    assert "table2.csv base gsm8k: 0 (n=3) -> 5 (n=3)" in out


def test_a_changed_verdict_is_listed(tmp_path):
    code, out, _ = _compare(_report(tmp_path / "a"), _report(tmp_path / "b", verdict="contradicted"))
    assert code == 0
    assert "1 of 2 claims changed verdict" in out and "claim 1: supported -> contradicted" in out


def test_a_missing_table_names_the_file(tmp_path):
    old, new = _report(tmp_path / "a"), _report(tmp_path / "b")
    (new / "table3.csv").unlink()
    code, _, err = _compare(old, new)
    assert code == 2 and f"{new / 'table3.csv'} not found" in err


def test_a_malformed_value_names_the_file_line_and_metric(tmp_path):
    old, new = _report(tmp_path / "a"), _report(tmp_path / "b")
    text = (new / "table2.csv").read_text().splitlines()
    text[2] = text[2].replace("46.1667", "n/a")
    (new / "table2.csv").write_text("\n".join(text) + "\n")
    code, _, err = _compare(old, new)
    assert code == 2 and "table2.csv line 3, avg" in err


def test_rows_in_one_run_only_are_refused(tmp_path):
    old, new = _report(tmp_path / "a"), _report(tmp_path / "b")
    lines = (new / "table3.csv").read_text().splitlines()
    (new / "table3.csv").write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # drop base + ift
    code, _, err = _compare(old, new)
    assert code == 2 and "rows/metrics in one run only" in err and "base + ift" in err


def test_a_claims_file_of_another_shape_is_refused(tmp_path):
    old, new = _report(tmp_path / "a"), _report(tmp_path / "b")
    (new / "claims.json").write_text(json.dumps({"rows": []}))
    code, _, err = _compare(old, new)
    assert code == 2 and "is not a claims file" in err
