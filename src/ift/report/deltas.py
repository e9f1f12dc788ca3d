"""Each method's change from its own start point, ours beside the paper's (report/paper_deltas.{md,csv}).

Absolute scores of a 2M-parameter model in a miniature world and of Mistral-7B on the real benchmarks are not
comparable; the direction and ordering of each method's effect are. So for every (start, method) cell and column:
ours = per seed, the cell's value minus its start point's (the same seed's start point when start points have
seeds), mean ± sample std over seeds; the paper's = its published row minus its published start-point row.
"agree" counts the columns where both changes have the same sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ift.grid import methods_at
from ift.io import write_text_atomic
from ift.report.tables import mean_std, row_title

# (our column, the paper's column, title). Table 3: our win rate vs AlpacaEval 2's; our LC column vs AlpacaEval 2 LC.
TABLE2_PAIRS = (("arc", "arc", "ARC"), ("arc_gen", "arc_gen", "ARC-Gen"), ("mmlu", "mmlu", "MMLU"),
                ("truthfulqa_mc2", "truthfulqa_mc2", "TruthfulQA"), ("winogrande", "winogrande", "WinoGrande"),
                ("gsm8k", "gsm8k", "GSM8K"), ("avg", "avg", "Avg"))


def table3_pairs(profile: str) -> tuple[tuple[str, str, str], ...]:
    """Our Table 3 columns against the paper's AlpacaEval 2 columns (the tiny profile's LC is the minimal GLM)."""
    lc = "lc_win_rate" if profile == "paper" else "lc_win_rate_minimal"
    return (("win_rate", "win_rate", "Win rate"), (lc, "lc_win_rate", "LC win rate"))


def our_deltas(cells: Mapping, start: str, method: str, column: str) -> list[float]:
    """Per-seed change of ``column`` from the start point (empty when either side lacks it)."""
    cell, origin = cells.get((start, method)), cells.get((start, None))
    if cell is None or origin is None:
        return []
    values, base = cell.by_seed.get(column, {}), origin.by_seed.get(column, {})
    if not base:
        return []
    return [value - base.get(seed, base.get(None, math.nan)) for seed, value in sorted(
        values.items(), key=lambda kv: -1 if kv[0] is None else kv[0]) if seed in base or None in base]


def paper_delta(published: Mapping, start: str, method: str, column: str) -> float | None:
    row, origin = published.get((start, method), {}), published.get((start, None), {})
    if column in row and column in origin:
        return row[column] - origin[column]
    return None


def delta_rows(cells: Mapping, published: Mapping, methods: Sequence[str], starts: Sequence[str],
               pairs: Sequence[tuple[str, str, str]], base_only: Sequence[str] = ()) -> list[dict]:
    """One row per trained (start, method): per column (ours mean, std, n, paper delta) and the sign agreement."""
    rows = []
    for start in starts:
        for method in methods_at(start, methods, base_only):
            row = {"start": start, "method": method, "row": row_title(start, method), "columns": {}}
            agree = compared = 0
            for ours_key, paper_key, _ in pairs:
                deltas = our_deltas(cells, start, method, ours_key)
                mean, std = mean_std(deltas) if deltas else (None, None)
                paper = paper_delta(published, start, method, paper_key)
                row["columns"][ours_key] = {"mean": mean, "std": std, "n": len(deltas), "paper": paper}
                if mean is not None and paper is not None and paper != 0:
                    compared += 1
                    agree += (mean > 0) == (paper > 0)
            row["agree"], row["compared"] = agree, compared
            rows.append(row)
    return rows


def _cell(entry: Mapping) -> str:
    ours = "–" if entry["mean"] is None else (
        f"{entry['mean']:+.1f}" + ("" if entry["std"] is None else f" ± {entry['std']:.1f}"))
    paper = "–" if entry["paper"] is None else f"{entry['paper']:+.2f}"
    return f"{ours} / {paper}"


def markdown(rows: Sequence[dict], pairs: Sequence[tuple[str, str, str]], caption: str) -> str:
    header = ["Change from its start point", *(title for _, _, title in pairs), "same sign"]
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        label = f"{row['row']} (from {row['start']})"
        cells = [_cell(row["columns"][key]) for key, _, _ in pairs]
        agree = f"{row['agree']}/{row['compared']}" if row["compared"] else "–"
        lines.append("| " + " | ".join([label, *cells, agree]) + " |")
    return "\n".join(lines) + "\n"


def csv_text(tables: Mapping[str, Sequence[dict]]) -> str:
    lines = ["table,start,method,column,ours_mean,ours_std,ours_n,paper_delta"]
    for table, rows in tables.items():
        for row in rows:
            for key, entry in row["columns"].items():
                fields = [table, row["start"], row["method"], key,
                          "" if entry["mean"] is None else f"{entry['mean']:.4f}",
                          "" if entry["std"] is None else f"{entry['std']:.4f}", str(entry["n"]),
                          "" if entry["paper"] is None else f"{entry['paper']:.4f}"]
                lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def write_deltas(cells: Mapping, published: Mapping[str, Mapping], *, methods, starts, base_only, profile: str,
                 seeds_note: str, citation: str, out_dir: Path) -> dict[str, Path]:
    pairs3 = table3_pairs(profile)
    rows2 = delta_rows(cells, published.get("table2", {}), methods, starts, TABLE2_PAIRS, base_only)
    rows3 = delta_rows(cells, published.get("table3", {}), methods, starts, pairs3, base_only)
    lead = (f"Each cell: ours (change from our start point, percentage points, {seeds_note}) / the paper's (change "
            f"from its start point, {citation}).")
    text = "\n".join([
        "# Our effects beside the paper's",
        "",
        markdown(rows2, TABLE2_PAIRS, f"Table 2 tasks. {lead} Same sign: columns where both changes point the same "
                                      "way."),
        markdown(rows3, pairs3, "Table 3, AlpacaEval: ours (the world's judge; LC = its minimal length-controlled "
                                "GLM in the tiny profile) / the paper's AlpacaEval 2 (GPT-4 judge)."),
    ])
    return {
        "paper_deltas.md": write_text_atomic(Path(out_dir) / "paper_deltas.md", text),
        "paper_deltas.csv": write_text_atomic(Path(out_dir) / "paper_deltas.csv",
                                              csv_text({"table2": rows2, "table3": rows3})),
    }
