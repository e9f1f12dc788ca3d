"""Do two runs' tables agree as replicate samples would? For a run on another CPU, GPU or seed set.

    python scripts/compare_reports.py OLD_REPORT NEW_REPORT      # e.g. the committed report/ and another machine's

A run on another CPU type computes other floats (docs/reproducibility.md), so its tables are compared as a new set of
replicates, not byte for byte. For every row of ``table2.csv`` and ``table3.csv`` (start point x method, our rows only)
and every metric, both runs' mean +- sample std over their n whole-chain replicates and Welch's two-sided t-test of
the difference; the pairs with p < 0.05 are listed. If both runs draw from one distribution, about 5% of the tested
pairs should be listed (more or fewer by chance: the pairs share start points and are not independent). A pair whose
replicates have no spread in either run (e.g. 0.0 on a task every model fails) cannot be tested: it is counted, and
listed when its means differ. Then every claim of ``claims.json`` whose verdict differs between the runs. Exit
status 0 whatever the comparison says; 2 when a file is missing or malformed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import t as student_t

TABLES = ("table2.csv", "table3.csv")
ALPHA = 0.05


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Pair:
    table: str
    row: str
    metric: str
    old: Cell
    new: Cell
    p: float


def read_table(path: Path) -> dict[tuple[str, str], Cell]:
    """{(row, metric): Cell} of one table's rows with source 'ours', from its `<metric>_mean/_std/_n` columns."""
    if not path.is_file():
        raise SystemExit(f"compare_reports: {path} not found (run `dvc repro` first, or name a report directory)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"start", "method", "source"} <= set(rows[0]):
        raise SystemExit(f"compare_reports: {path} has no start/method/source columns")
    metrics = [column[: -len("_mean")] for column in rows[0] if column.endswith("_mean")]
    cells = {}
    for line, row in enumerate(rows, start=2):
        if row["source"] != "ours":
            continue
        name = f"{row['start']} + {row['method']}" if row["method"] != "-" else row["start"]
        for metric in metrics:
            try:
                cells[name, metric] = Cell(float(row[f"{metric}_mean"]), float(row[f"{metric}_std"] or 0),
                                           int(row[f"{metric}_n"]))
            except (KeyError, TypeError, ValueError) as error:
                raise SystemExit(f"compare_reports: {path} line {line}, {metric}: {error}") from None
    return cells


def welch_p(old: Cell, new: Cell) -> float:
    """Two-sided p of Welch's t-test that the two cells' means are equal; nan when it cannot be tested (no spread in
    either run, or fewer than two replicates)."""
    var_old, var_new = old.std ** 2 / old.n, new.std ** 2 / new.n
    if var_old + var_new == 0 or old.n < 2 or new.n < 2:
        return math.nan
    t = (new.mean - old.mean) / math.sqrt(var_old + var_new)
    df = (var_old + var_new) ** 2 / (var_old ** 2 / (old.n - 1) + var_new ** 2 / (new.n - 1))
    return float(2 * student_t.sf(abs(t), df))


def compare_tables(old_dir: Path, new_dir: Path) -> list[Pair]:
    pairs = []
    for table in TABLES:
        old, new = read_table(old_dir / table), read_table(new_dir / table)
        missing = sorted(set(old) ^ set(new))
        if missing:
            raise SystemExit(f"compare_reports: {table}: rows/metrics in one run only: {missing[:5]}")
        pairs += [Pair(table, row, metric, old[row, metric], new[row, metric], welch_p(old[row, metric], new[row, metric]))
                  for row, metric in old]
    return pairs


def verdicts(path: Path) -> dict[str, str]:
    try:
        return {c["claim"]: c["ours"]["verdict"] for c in json.loads(path.read_text())["claims"]}
    except FileNotFoundError:
        raise SystemExit(f"compare_reports: {path} not found") from None
    except (KeyError, TypeError, ValueError) as error:
        raise SystemExit(f"compare_reports: {path} is not a claims file: {error!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    try:
        pairs = compare_tables(args.old, args.new)
        old_claims, new_claims = verdicts(args.old / "claims.json"), verdicts(args.new / "claims.json")
    except SystemExit as error:
        print(error, file=sys.stderr)
        return 2

    tested = [p for p in pairs if not math.isnan(p.p)]
    flagged = [p for p in tested if p.p < ALPHA]
    print(f"{len(flagged)} of {len(tested)} (row, metric) pairs differ at p < {ALPHA} (Welch's t-test; "
          f"~{ALPHA * len(tested):.1f} expected by chance if both runs are replicates of one distribution)")
    untested = [p for p in pairs if math.isnan(p.p)]
    unequal = [p for p in untested if not math.isclose(p.old.mean, p.new.mean, abs_tol=1e-9)]
    print(f"{len(untested)} pairs not testable (no spread in either run, or n < 2): {len(untested) - len(unequal)} "
          f"equal, {len(unequal)} differ" + "".join(f"\n  {p.table} {p.row} {p.metric}: {p.old.mean:.4g} (n={p.old.n}) "
                                                   f"-> {p.new.mean:.4g} (n={p.new.n})" for p in unequal))
    if flagged:
        print("\n| table | row | metric | old mean ± std (n) | new mean ± std (n) | p |\n|---|---|---|---|---|---|")
        for p in flagged:
            print(f"| {p.table} | {p.row} | {p.metric} | {p.old.mean:.1f} ± {p.old.std:.1f} ({p.old.n}) | "
                  f"{p.new.mean:.1f} ± {p.new.std:.1f} ({p.new.n}) | {p.p:.3f} |")
    changed = {c: (old_claims.get(c), new_claims.get(c)) for c in sorted(set(old_claims) | set(new_claims))
               if old_claims.get(c) != new_claims.get(c)}
    print(f"\n{len(changed)} of {len(set(old_claims) | set(new_claims))} claims changed verdict")
    for claim, (old, new) in changed.items():
        print(f"  claim {claim}: {old} -> {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
