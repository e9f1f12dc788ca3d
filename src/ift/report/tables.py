"""The paper's Table 2 (leaderboard tasks) and Table 3 (AlpacaEval) from evaluation results, mean ± std over seeds.

Inputs are the evaluation directories written by ``python -m ift.evaluate``: ``<evals>/<name>/leaderboard.json``
and ``<evals>/<name>/alpaca.json``, where ``name`` is a start point (``base``, ``sft_beta``; ``base-chain1`` in
whole-chain replicate 1) or a trained cell (``<method>-<start>-s<seed>``; ``<method>-<start>-chain<c>-s<c>``).
Everything here is pure (dicts in, rows and strings out) so it is testable.

What a table's mean ± std is taken over (params.yaml): with ``chains`` (the tiny and smoke profiles), over the
whole-chain replicates: chain 0 (``base``, ``sft_beta`` and each cell's seed 0) and every chain c (start points
and cell retrained with seed c), so the spread includes the start points' own noise; chain 0's other ``seeds``
feed the variance split (ift.report.variance). Without chains (the paper profile's fixed hub start points), over
the fine-tuning ``seeds``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ift.grid import check_chains, eval_name, methods_at, replicates
from ift.methods import METHODS

# Table 2's columns, in the paper's order: (key in leaderboard.json, column title).
LEADERBOARD_COLUMNS = (
    ("arc", "ARC"),
    ("arc_gen", "ARC-Gen"),
    ("mmlu", "MMLU"),
    ("truthfulqa_mc2", "TruthfulQA"),
    ("winogrande", "WinoGrande"),
    ("gsm8k", "GSM8K"),
)
AVG_TASKS = ("arc", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")  # the paper's Avg leaves ARC-Gen out
ALPACA_COLUMNS = (("win_rate", "Win rate"), ("lc_win_rate_minimal", "LC win rate (minimal GLM)"))
# The paper profile also has AlpacaEval 2's official length-controlled win rate (the paper's Table 3 column).
ALPACA_COLUMNS_PAPER = (("win_rate", "Win rate"), ("lc_win_rate", "LC win rate"),
                        ("lc_win_rate_minimal", "LC win rate (minimal GLM)"))
METHOD_TITLES = {method.name: method.title for method in METHODS.values()}
# Rows the paper does not have (start, method) -> note added to the title: it never ran SFT then DPO from the base
# model (its "+ DPO" is DPO directly on base); we keep the cell because it is the sequential recipe's base analog.
NOT_IN_PAPER = {("base", "sft_dpo"): "not in the paper"}
START_TITLES = {"base": "base (Mistral-7B analog)", "sft_beta": "sft_beta (Mistral-7B-sft-beta analog)"}


@dataclass
class Cell:
    """One table row's values over seeds: column -> list of per-seed numbers."""

    start: str
    method: str | None  # None: the start point itself
    values: dict[str, list[float]] = field(default_factory=dict)
    by_seed: dict[str, dict[int | None, float]] = field(default_factory=dict)  # column -> seed -> value

    def add(self, column: str, value: float | None, seed: int | None = None) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.values.setdefault(column, []).append(float(value))
            self.by_seed.setdefault(column, {})[seed] = float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); std is None for a single value."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def row_title(start: str, method: str | None) -> str:
    """A table row's title: the start point's, or the method's ("+ DPO"), marked when the paper has no such row."""
    if method is None:
        return START_TITLES.get(start, start)
    title = METHOD_TITLES.get(method, method)
    note = NOT_IN_PAPER.get((start, method))
    return f"{title} ({note})" if note else title


def leaderboard_row_values(result: Mapping) -> dict[str, float]:
    """Headline metric per Table 2 column from one leaderboard.json, as percentages, plus the paper's Avg."""
    tasks = result["tasks"]
    values = {key: 100.0 * float(tasks[key]["value"]) for key, _ in LEADERBOARD_COLUMNS if key in tasks}
    if all(key in values for key in AVG_TASKS):
        values["avg"] = sum(values[key] for key in AVG_TASKS) / len(AVG_TASKS)
    return values


Roots = Path | Sequence[Path]  # a directory of runs or evaluations, or several searched in order


def roots_of(roots: Roots) -> tuple[Path, ...]:
    return (Path(roots),) if isinstance(roots, str | Path) else tuple(Path(root) for root in roots)


def locate(roots: Roots, name: str) -> Path:
    """``<root>/<name>`` in the first of ``roots`` that has it, else in the first root. The opt-in paper_full grid
    keeps its cells apart (outputs/paper_full/) from the default grid's, whose start points and cells it also reads."""
    found = roots_of(roots)
    return next((root / name for root in found if (root / name).is_dir()), found[0] / name)


def describe_roots(roots: Roots) -> str:
    return ", ".join(str(root) for root in roots_of(roots))


class ResultFileError(ValueError):
    """An evaluation result file the report reads is not valid JSON or lacks what the report needs."""


def _read_result(path: Path, reader) -> dict:
    try:
        return reader(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # JSONDecodeError is a ValueError
        raise ResultFileError(f"{path}: unreadable evaluation result ({type(err).__name__}: {err}); re-run its "
                              "evaluation") from err


def collect(evals_dir: Roots, methods: Iterable[str], starts: Iterable[str], seeds: Iterable[int],
            base_only: Iterable[str] = (), chains: Iterable[int] = ()):
    """Read every expected evaluation; returns (cells, finetune_cells, missing names).

    ``cells`` ((start, method) -> Cell): the runs each table row averages over (``replicates``). ``finetune_cells``
    (same keys, cells only): chain 0's fine-tuning seeds, keyed by seed, for the variance split; empty without
    chains (then they are ``cells``). Missing are absent result files (``<name>/leaderboard.json``) and Table 2
    tasks absent from a present leaderboard.json (``<name>/leaderboard.json: task gsm8k``): tabulated anyway, that
    cell would hold fewer seeds than the others and still look complete. A result file that is not valid JSON raises
    ResultFileError naming it.
    """
    methods, starts, seeds, base_only, chains = list(methods), list(starts), list(seeds), list(base_only), list(chains)
    check_chains(seeds, chains)
    cells: dict[tuple[str, str | None], Cell] = {}
    finetune_cells: dict[tuple[str, str | None], Cell] = {}
    missing: list[str] = []
    read: dict[str, dict[str, float] | None] = {}

    def values_of(name: str) -> dict[str, float]:
        if name not in read:
            values: dict[str, float] = {}
            for filename, reader in (("leaderboard.json", leaderboard_row_values), ("alpaca.json", _alpaca_values)):
                path = locate(evals_dir, name) / filename
                if not path.exists():
                    missing.append(f"{name}/{filename}")
                    continue
                found = _read_result(path, reader)
                if filename == "leaderboard.json":
                    missing.extend(f"{name}/{filename}: task {key}" for key, _ in LEADERBOARD_COLUMNS
                                   if key not in found)
                values.update(found)
            read[name] = values
        return read[name]

    for start in starts:
        for method in [None, *methods_at(start, methods, base_only)]:
            cell = cells.setdefault((start, method), Cell(start=start, method=method))
            for chain, seed, key in replicates(method, seeds, chains):
                for column, value in values_of(eval_name(start, method, seed, chain)).items():
                    cell.add(column, value, key)
            if chains and method is not None:
                finetune = finetune_cells.setdefault((start, method), Cell(start=start, method=method))
                for seed in seeds:
                    for column, value in values_of(eval_name(start, method, seed)).items():
                        finetune.add(column, value, seed)
    return cells, finetune_cells, missing


def _alpaca_values(result: Mapping) -> dict[str, float | None]:
    return {key: result.get(key) for key, _ in ALPACA_COLUMNS_PAPER}


def table_rows(cells, methods, starts, columns: Sequence[tuple[str, str]],
               published: Mapping[tuple[str, str | None], Mapping[str, float]] | None = None,
               base_only: Sequence[str] = ()) -> list[dict]:
    """Rows in the paper's layout: each start point, then each method under it; cells as (mean, std, n).

    ``published`` ((start, method) -> column -> value, from ift.report.published) adds the paper's own row right
    under ours, marked ``source: paper``; its cells are (value, None, 0): one published number, no seeds of ours.
    """
    rows = []
    for start in starts:
        for method in [None, *methods_at(start, methods, base_only)]:
            cell = cells.get((start, method))
            title = row_title(start, method)
            row = {"start": start, "method": method or "-", "row": title, "source": "ours"}
            for key, _ in columns:
                values = cell.values.get(key, []) if cell else []
                row[key] = (*mean_std(values), len(values)) if values else None
            rows.append(row)
            paper = (published or {}).get((start, method))
            if paper:
                rows.append({"start": start, "method": method or "-", "row": f"{title} (paper)", "source": "paper",
                             **{key: (paper[key], None, 0) if key in paper else None for key, _ in columns}})
    return rows


def _fmt(entry) -> str:
    if entry is None:
        return "–"
    mean, std, _ = entry
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def to_markdown(rows: Sequence[dict], columns: Sequence[tuple[str, str]], title_column: str = "Model") -> str:
    header = [title_column, *(title for _, title in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        label = f"**{row['row']}**" if row["method"] == "-" else row["row"]
        label = f"*{row['row']}*" if row.get("source") == "paper" else label
        lines.append("| " + " | ".join([label, *(_fmt(row[key]) for key, _ in columns)]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    header = ["start", "method", "source"] + [f"{key}_{stat}" for key, _ in columns for stat in ("mean", "std", "n")]
    lines = [",".join(header)]
    for row in rows:
        fields = [row["start"], row["method"], row.get("source", "ours")]
        for key, _ in columns:
            entry = row[key]
            if entry is None:
                fields += ["", "", "0"]
            else:
                mean, std, n = entry
                fields += [f"{mean:.4f}", "" if std is None else f"{std:.4f}", str(n)]
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def to_latex(rows: Sequence[dict], columns: Sequence[tuple[str, str]], caption: str) -> str:
    def cell(entry) -> str:
        if entry is None:
            return "--"
        mean, std, _ = entry
        return f"{mean:.1f}" if std is None else f"{mean:.1f}$\\pm${std:.1f}"

    spec = "l" + "c" * len(columns)
    lines = [r"\begin{table}[t]", r"\centering", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(["Model", *(title for _, title in columns)]) + r" \\", r"\midrule"]
    for row in rows:
        label = row["row"].replace("_", r"\_").replace("+", r"$+$")
        label = f"\\textit{{{label}}}" if row.get("source") == "paper" else label
        lines.append(" & ".join([label, *(cell(row[key]) for key, _ in columns)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", f"\\caption{{{caption}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
