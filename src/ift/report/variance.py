"""How much of each cell's spread comes from its start points, and how much from fine-tuning.

A cell's score in whole-chain replicate c is y_c = mu + a_c + e_c: a_c is what retraining base and sft_beta with
seed c did (the start-point part), e_c what fine-tuning with seed c did. Over the chain replicates (the tables'
mean ± std) the sample variance estimates var(a) + var(e). Chain 0's fine-tuning seeds share one start point, so
their sample variance estimates var(e) alone. The start-point part is the difference:

    s2_start = max(s2_chains - s2_finetune, 0)

(the one-way nested estimator; truncated at 0, where sampling noise makes the difference negative). With three
replicates on each side these are rough: a share near 0 or 1 means "most", not a measured fraction.

A start point's own row has no fine-tuning: all its spread is the start-point part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ift.grid import methods_at
from ift.io import write_text_atomic
from ift.report.tables import row_title

# The columns the split is reported for: Table 2's Avg and Table 3's win rate (the tables' headline numbers).
COLUMNS = (("avg", "Avg"), ("win_rate", "Win rate"))


def sample_variance(values: Sequence[float]) -> float | None:
    """Sample variance (ddof=1); None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return sum((v - mean) ** 2 for v in values) / (n - 1)


def split(chain_values: Sequence[float], finetune_values: Sequence[float] | None) -> dict | None:
    """{total, finetune, start, start_share, n_chains, n_finetune} of one cell and column (variances, in the
    column's squared units). ``finetune_values``: None for a start point (no fine-tuning: finetune part 0).
    None when the chains give no variance (fewer than two replicates)."""
    total = sample_variance(chain_values)
    if total is None:
        return None
    if finetune_values is None:
        finetune, n_finetune = 0.0, 0
    else:
        finetune, n_finetune = sample_variance(finetune_values), len(finetune_values)
        if finetune is None:
            return None
    start = max(total - finetune, 0.0)
    return {"total": total, "finetune": finetune, "start": start,
            "start_share": start / total if total > 0 else None,
            "n_chains": len(chain_values), "n_finetune": n_finetune}


def variance_rows(cells: Mapping, finetune_cells: Mapping, *, methods: Sequence[str], starts: Sequence[str],
                  base_only: Sequence[str] = (), columns=COLUMNS) -> list[dict]:
    """One row per table row (start points and cells), each column's split (or None)."""
    rows = []
    for start in starts:
        for method in [None, *methods_at(start, methods, base_only)]:
            cell = cells.get((start, method))
            finetune = finetune_cells.get((start, method)) if method is not None else None
            row = {"start": start, "method": method or "-", "row": row_title(start, method)}
            for key, _ in columns:
                chain_values = cell.values.get(key, []) if cell else []
                finetune_values = None if method is None else (finetune.values.get(key, []) if finetune else [])
                row[key] = split(chain_values, finetune_values)
            rows.append(row)
    return rows


def _std(variance: float | None) -> str:
    return "–" if variance is None else f"{variance ** 0.5:.1f}"


def to_markdown(rows: Sequence[dict], columns=COLUMNS) -> str:
    header = ["Model"]
    for _, title in columns:
        header += [f"{title}: std over chains", "fine-tuning std", "start-point std", "start-point share"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        fields = [f"**{row['row']}**" if row["method"] == "-" else row["row"]]
        for key, _ in columns:
            entry = row[key]
            if entry is None:
                fields += ["–"] * 4
                continue
            share = entry["start_share"]
            fields += [_std(entry["total"]), "–" if row["method"] == "-" else _std(entry["finetune"]),
                       _std(entry["start"]), "–" if share is None else f"{100 * share:.0f}%"]
        lines.append("| " + " | ".join(fields) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict], columns=COLUMNS) -> str:
    stats = ("total", "finetune", "start", "start_share", "n_chains", "n_finetune")
    lines = [",".join(["start", "method", *(f"{key}_{stat}" for key, _ in columns for stat in stats)])]
    for row in rows:
        fields = [row["start"], row["method"]]
        for key, _ in columns:
            entry = row[key] or {}
            for stat in stats:
                value = entry.get(stat)
                fields.append("" if value is None else str(value) if stat.startswith("n_") else f"{value:.4f}")
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def write_variance(rows: Sequence[dict], out_dir, *, chains: Sequence[int], seeds: Sequence[int]) -> dict:
    """variance.md and variance.csv under ``out_dir``; returns {file name: path}. Without chains (the paper profile's
    fixed start points) there is no split: the files say so, and hold no rows."""
    if not chains:
        note = ("No start-point vs fine-tuning split: this grid has no whole-chain replicates (chains: []), so every "
                "seed shares one base and sft_beta and the tables' spread is the fine-tuning seeds' alone.")
        return {"variance.md": write_text_atomic(out_dir / "variance.md", note + "\n"),
                "variance.csv": write_text_atomic(out_dir / "variance.csv", to_csv([]))}
    caption = (f"Where each cell's spread comes from: the std over whole-chain replicates (chains "
               f"{[0, *chains]}: base, sft_beta and the cell retrained with seed c) split into fine-tuning (std over "
               f"chain 0's fine-tuning seeds {list(seeds)}, one shared start point) and start points "
               "(sqrt(max(var over chains - var over fine-tuning seeds, 0))). Three replicates a side: rough shares. "
               "A start point's own row is all start-point spread. Units: percentage points.")
    return {"variance.md": write_text_atomic(out_dir / "variance.md", f"{caption}\n\n{to_markdown(rows)}"),
            "variance.csv": write_text_atomic(out_dir / "variance.csv", to_csv(rows))}
