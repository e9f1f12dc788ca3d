"""``python -m ift.report.check_complete <table.csv>...``: fail unless every cell of the report tables is filled
(and every claim of claims.csv was evaluated).

Used by ``make smoke`` (and CI): a table with an empty cell means a stage silently produced nothing.
"""

from __future__ import annotations

import csv
import sys


def empty_cells(path: str) -> list[str]:
    """'row/column' labels of empty mean cells of our rows in a report CSV (columns ending in _mean); for the claims
    table (claims.csv), the claims our grid could not evaluate ('claim N: not available')."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return [f"{path}: no rows"]
    if "verdict" in rows[0]:
        return [f"claim {row['claim']}: {row['verdict']}" for row in rows if row["verdict"] in ("", "not available")]
    return [f"{row['start']}/{row['method']}/{column}" for row in rows for column, value in row.items()
            if column.endswith("_mean") and value in ("", None)
            and row.get("source", "ours") == "ours"]  # the paper's rows leave out what it did not report


def main(paths: list[str]) -> int:
    missing = [f"{path}: {cell}" for path in paths for cell in empty_cells(path)]
    for line in missing:
        print(f"empty cell: {line}", file=sys.stderr)
    print(f"{len(paths)} tables checked, {len(missing)} empty cells")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
