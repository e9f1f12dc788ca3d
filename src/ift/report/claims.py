"""The paper's claims as precise statements about our grid, each with an estimate, a 90% interval over seeds and a
verdict (report/claims.{md,csv,json}).

Every statement has the form ``combine_lhs(terms) − combine_rhs(terms) > 0``, where a term is one cell's column
(or the mean of several columns) and the combines are min / max / the single term. Per replicate the statistic is
computed from that replicate's cells: whole-chain replicate c (its own start points and cells) when the grid has
chains, else fine-tuning seed s (start points, shared by every seed, enter as the same number each time); the
interval is Student's t over those per-replicate statistics (90%, n − 1 degrees of freedom). Verdict: *supported* when
the interval lies above 0, *contradicted* when below, *inconclusive* when it contains 0 or rests on one seed. With one
number per cell (the paper's published tables, or a single benchmark run) there is no interval, and the verdict is
the estimate's sign. The same code reads the paper's published numbers, so each statement also gets the paper's own value:
``tests/ift/report/test_claims.py`` checks that the paper's numbers support every claim the paper makes.

Sources of terms: ``(start, method)`` cells of Table 2 / Table 3 (the report's own column keys); ``("bench", method)``
with columns ``time_ratio`` / ``peak_ratio`` (step time and peak memory over SFT's, from an ``ift.bench`` results file).

The Frozen Lake claims (FL1-FL4) are :class:`ShareStatement` rows instead: the paper reports one ordering from one
unstated setting, so each is held against the pre-declared study (report/frozen_lake_study.json), which judges the
claim in every setting of its grid. Verdict: *supported* when the claim holds (interval over seeds above 0) in more
than half of the settings, *contradicted* when the opposite holds in more than half, else *inconclusive*.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ift.io import write_json_atomic, write_text_atomic

LEVEL = 0.90
GENERATION_TASKS = ("truthfulqa_mc2", "gsm8k", "arc_gen")   # claim 3: where the paper finds IFT stronger
CHOICE_TASKS = ("arc", "mmlu")                               # claim 3: where it finds DPO stronger
SHARED_STARTS = "fine-tuning seeds only; start points shared"


@dataclass(frozen=True)
class Term:
    """One cell's value (the mean over ``columns`` when there are several)."""

    start: str
    method: str | None
    columns: tuple[str, ...]

    def label(self) -> str:
        column = self.columns[0] if len(self.columns) == 1 else "mean(" + ", ".join(self.columns) + ")"
        return f"{column}({self.method or 'start'}@{self.start})"


@dataclass(frozen=True)
class Statement:
    """``lhs_combine(lhs) − rhs_combine(rhs) > 0`` ("min", "max"; one term needs no combine)."""

    claim: str          # id: "1", "3a", "FL1", ...
    paper_claim: str    # the paper's words, shortened
    lhs: tuple[Term, ...]
    rhs: tuple[Term, ...]
    lhs_combine: str = "min"
    rhs_combine: str = "max"
    note: str = ""

    def text(self) -> str:
        def side(terms, combine):
            inner = ", ".join(t.label() for t in terms)
            return inner if len(terms) == 1 else f"{combine}({inner})"

        return f"{side(self.lhs, self.lhs_combine)} − {side(self.rhs, self.rhs_combine)} > 0"


@dataclass(frozen=True)
class ShareStatement:
    """A Frozen Lake claim judged over the settings of the study: ``ordering`` is one of its claims ("DPO < IFT": DPO
    ends with the lower policy MSE) and ``subset`` one of its subsets of settings (report/frozen_lake_study.json).

    Its estimate is share(holds) − share(opposite), so, as for :class:`Statement`, > 0 leans towards the paper."""

    claim: str
    paper_claim: str
    ordering: str
    subset: str = "all settings"
    note: str = ""

    def text(self) -> str:
        return f"share(holds) − share(opposite) over the study's settings ({self.subset}): policy MSE {self.ordering}"


def _t(*terms) -> tuple[Term, ...]:
    return tuple(Term(start, method, tuple(columns) if not isinstance(columns, str) else (columns,))
                 for start, method, columns in terms)


def paper_statements() -> list[Statement | ShareStatement]:
    """The paper's claims 1-6 and its Frozen Lake ordering, written about our grid."""
    avg = "avg"
    base_rivals = ("sft", "dpo", "orpo")          # the paper's base-model rows among our methods
    beta_rivals = ("sft", "sft_dpo", "orpo")      # its sequential rows (+ SFT + SFT / DPO / ORPO)
    statements = [
        Statement("1", "From the base model, IFT has the highest Avg (vs SFT, DPO, ORPO)",
                  _t(("base", "ift", avg)), _t(*(("base", m, avg) for m in base_rivals))),
        Statement("2", "In the sequential recipe (from sft_beta), SFT+IFT has the highest Avg",
                  _t(("sft_beta", "ift", avg)), _t(*(("sft_beta", m, avg) for m in beta_rivals))),
        Statement("3a", "IFT is stronger than DPO on generation/reasoning tasks (from base)",
                  _t(("base", "ift", GENERATION_TASKS)), _t(("base", "dpo", GENERATION_TASKS))),
        Statement("3b", "DPO is stronger than IFT on multiple-choice tasks (from base)",
                  _t(("base", "dpo", CHOICE_TASKS)), _t(("base", "ift", CHOICE_TASKS))),
        Statement("3c", "IFT is stronger than DPO on generation/reasoning tasks (from sft_beta)",
                  _t(("sft_beta", "ift", GENERATION_TASKS)), _t(("sft_beta", "sft_dpo", GENERATION_TASKS))),
        Statement("3d", "DPO is stronger than IFT on multiple-choice tasks (from sft_beta)",
                  _t(("sft_beta", "sft_dpo", CHOICE_TASKS)), _t(("sft_beta", "ift", CHOICE_TASKS))),
        Statement("4a", "Sequential SFT + DPO ends below SFT alone (from base) on Avg",
                  _t(("base", "sft", avg)), _t(("sft_beta", "sft_dpo", avg))),
        Statement("4b", "Aligning directly from base (ORPO, IFT) avoids that: both end above sequential SFT + DPO",
                  _t(("base", "ift", avg), ("base", "orpo", avg)), _t(("sft_beta", "sft_dpo", avg))),
        Statement("5", "AlpacaEval 2 LC win rate from base: IFT leads SFT, DPO and ORPO",
                  _t(("base", "ift", "lc_win_rate")), _t(*(("base", m, "lc_win_rate") for m in base_rivals)),
                  note="tiny profile: the LC win rate of the world's own judge (minimal GLM), not AlpacaEval 2's"),
        Statement("6a", "IFT takes less step time than DPO and ORPO (no reference model, no pairs)",
                  _t(("bench", "dpo", "time_ratio"), ("bench", "orpo", "time_ratio")),
                  _t(("bench", "ift", "time_ratio")), note="ift.bench, `small` shape: step time / SFT's"),
        Statement("6b", "IFT needs less peak memory than DPO and ORPO",
                  _t(("bench", "dpo", "peak_ratio"), ("bench", "orpo", "peak_ratio")),
                  _t(("bench", "ift", "peak_ratio")), note="ift.bench, `small` shape: peak memory / SFT's"),
        # The paper's Figure 3 ordering, DPO < IFT < ORPO < SFT in policy MSE, and its "IFT much closer than SFT".
        ShareStatement("FL1", "Frozen Lake: DPO ends closer to π* than IFT (policy MSE)", "DPO < IFT"),
        ShareStatement("FL2", "Frozen Lake: IFT ends closer to π* than ORPO", "IFT < ORPO"),
        ShareStatement("FL3", "Frozen Lake: ORPO ends closer to π* than SFT", "ORPO < SFT"),
        ShareStatement("FL4", "Frozen Lake: IFT ends much closer to π* than SFT", "IFT < SFT"),
    ]
    return statements


def baseline_statements() -> list[Statement]:
    """The paper's statements about its other baselines, TDPO and SimPO (cells of the opt-in paper_full grid)."""
    avg = "avg"
    return [
        Statement("7a", "DPO, SimPO and TDPO tend to fail when aligned directly from the base model: each ends below "
                        "SFT on Avg", _t(("base", "sft", avg)), _t(*(("base", m, avg) for m in ("dpo", "simpo", "tdpo")))),
        Statement("7b", "From the base model, IFT's Avg is above SimPO's and TDPO's",
                  _t(("base", "ift", avg)), _t(("base", "simpo", avg), ("base", "tdpo", avg))),
        Statement("7c", "In the sequential recipe (from sft_beta), SFT+IFT's Avg is above SFT+SimPO's and SFT+TDPO's",
                  _t(("sft_beta", "ift", avg)), _t(("sft_beta", "simpo", avg), ("sft_beta", "tdpo", avg))),
    ]


def statements_for(methods: Sequence[str]) -> list[Statement | ShareStatement]:
    """The claims a grid training ``methods`` is held to: :func:`paper_statements`, plus each of
    :func:`baseline_statements` whose methods the grid trains (so the default grid's claims table is unchanged)."""
    extra = [statement for statement in baseline_statements()
             if all(term.method in methods for term in (*statement.lhs, *statement.rhs))]
    return paper_statements() + extra


SOURCES = {"bench": ("time_ratio", "peak_ratio")}


def validate(statement: Statement) -> None:
    """Raise ClaimDataError naming a term whose start, method or column no table has (a typo, not missing data)."""
    from ift.report.tables import LEADERBOARD_COLUMNS, METHOD_TITLES, START_TITLES

    table_columns = {key for key, _ in LEADERBOARD_COLUMNS} | {"avg", "win_rate", "lc_win_rate"}
    for term in (*statement.lhs, *statement.rhs):
        known = SOURCES.get(term.start, table_columns if term.start in START_TITLES else None)
        if known is None:
            raise ClaimDataError(f"claim {statement.claim}: unknown start/source {term.start!r} in {term.label()}; "
                                 f"known: {sorted(START_TITLES) + sorted(SOURCES)}")
        if term.method is not None and term.method not in METHOD_TITLES:
            raise ClaimDataError(f"claim {statement.claim}: unknown method {term.method!r} in {term.label()}; "
                                 f"known: {sorted(METHOD_TITLES)}")
        unknown = [c for c in term.columns if c not in known]
        if unknown or not term.columns:
            raise ClaimDataError(f"claim {statement.claim}: unknown column(s) {unknown} in {term.label()}; "
                                 f"known for {term.start}: {sorted(known)}")
    for combine in (statement.lhs_combine, statement.rhs_combine):
        if combine not in ("min", "max"):
            raise ClaimDataError(f"claim {statement.claim}: combine {combine!r} is not min or max")


Lookup = Callable[[Term], "dict[int | None, float] | None"]  # seed (None: one shared number) -> value, or missing


class ClaimDataError(ValueError):
    """A statement names a cell or column that the data does not have."""


def per_seed(statement: Statement, lookup: Lookup) -> dict[int | None, float]:
    """The statement's statistic for every seed (or {None: value} when every term is a single number)."""
    values = {}
    for term in (*statement.lhs, *statement.rhs):
        found = lookup(term)
        if not found:
            raise ClaimDataError(f"claim {statement.claim}: no values for {term.label()}")
        values[term] = found
    seeds = sorted({seed for found in values.values() for seed in found if seed is not None})
    keys: list[int | None] = seeds or [None]
    missing = [f"{term.label()} seed {seed}" for term, found in values.items() for seed in keys
               if seed not in found and None not in found]
    if missing:
        raise ClaimDataError(f"claim {statement.claim}: missing {', '.join(missing)}")
    combine = {"min": min, "max": max}

    def side(terms, how):
        return combine[how](values[t].get(seed, values[t].get(None)) for t in terms)

    stats = {}
    for seed in keys:
        stats[seed] = side(statement.lhs, statement.lhs_combine) - side(statement.rhs, statement.rhs_combine)
    return stats


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """(mean, low, high): Student's t interval of the mean at ``level``; no interval for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(mean: float, low: float | None, high: float | None) -> str:
    if low is None:
        return "supported" if mean > 0 else "contradicted"
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "inconclusive"


def evaluate(statement: Statement, lookup: Lookup) -> dict:
    """{estimate, low, high, n, verdict} of one statement on one source (or a 'not available' entry)."""
    try:
        stats = per_seed(statement, lookup)
    except ClaimDataError as err:
        return {"estimate": None, "low": None, "high": None, "n": 0, "verdict": "not available", "why": str(err)}
    mean, low, high = t_interval(list(stats.values()))
    seeded = any(seed is not None for seed in stats)
    # One seed gives no interval: no verdict either. One shared number (a published table, one benchmark run) is
    # all there is, and its sign is the verdict.
    decided = "inconclusive (1 seed)" if seeded and len(stats) < 2 else verdict(mean, low, high)
    return {"estimate": mean, "low": low, "high": high, "n": len(stats), "verdict": decided,
            "per_seed": {str(k): v for k, v in stats.items()}}


# ---- sources -----------------------------------------------------------------------------------------------------
def grid_lookup(cells: Mapping, bench: Mapping | None = None, lc_column: str = "lc_win_rate") -> Lookup:
    """Our results: report cells ((start, method) -> Cell with by_seed) and bench ratios.

    ``lc_column``: which of our columns stands for the paper's AlpacaEval 2 LC win rate (the tiny profile has only
    the minimal-GLM one)."""

    def lookup(term: Term):
        if term.start == "bench":
            value = (bench or {}).get(term.method, {}).get(term.columns[0])
            return None if value is None else {None: float(value)}
        cell = cells.get((term.start, term.method))
        if cell is None:
            return None
        columns = [lc_column if c == "lc_win_rate" else c for c in term.columns]
        per_column = [cell.by_seed.get(c) for c in columns]
        if any(not found for found in per_column):
            return None
        seeds = set.intersection(*(set(found) for found in per_column))
        return {seed: sum(found[seed] for found in per_column) / len(per_column) for seed in sorted(
            seeds, key=lambda s: -1 if s is None else s)}

    return lookup


def published_lookup(published: Mapping[str, Mapping]) -> Lookup:
    """The paper's published tables (ift.report.published): one number per cell."""
    def lookup(term: Term):
        if term.start == "bench":
            return None  # the paper gives a cost statement, no numbers
        for table in ("table2", "table3"):
            row = published.get(table, {}).get((term.start, term.method))
            if row and all(c in row for c in term.columns):
                return {None: sum(row[c] for c in term.columns) / len(term.columns)}
        return None

    return lookup


def bench_ratios(results_file: Path, shape: str = "small") -> dict[str, dict[str, float]]:
    """method -> {time_ratio, peak_ratio} (over SFT's) from an ``ift.bench`` results file; {} when absent."""
    path = Path(results_file)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ClaimDataError(f"{path}: not valid JSON ({err})") from err
    shapes = data.get("shapes") if isinstance(data, Mapping) else None
    entry = shapes.get(shape) if isinstance(shapes, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("ratios_to_sft"), Mapping):
        raise ClaimDataError(f"{path}: no `shapes.{shape}.ratios_to_sft` (an ift.bench results file?)")
    ratios = {}
    for method, row in entry["ratios_to_sft"].items():
        if isinstance(row, Mapping) and row.get("step_time") is not None and row.get("peak_memory") is not None:
            ratios[method] = {"time_ratio": float(row["step_time"]), "peak_ratio": float(row["peak_memory"])}
    return ratios


# ---- the table -----------------------------------------------------------------------------------------------------
def evaluate_share(statement: ShareStatement, study: Mapping | None) -> dict:
    """{estimate, n, shares, verdict} of one Frozen Lake claim over the study's settings (majority rule)."""
    subsets = (study or {}).get("claims")
    if not isinstance(subsets, Mapping):
        return {"estimate": None, "low": None, "high": None, "n": 0, "verdict": "not available",
                "why": f"claim {statement.claim}: no Frozen Lake study results (report/frozen_lake_study.json)"}
    if statement.subset not in subsets:
        raise ClaimDataError(f"claim {statement.claim}: the Frozen Lake study has no subset {statement.subset!r}; "
                             f"known: {sorted(subsets)}")
    found = [row for row in subsets[statement.subset] if row.get("claim") == statement.ordering]
    if len(found) != 1:
        raise ClaimDataError(f"claim {statement.claim}: the Frozen Lake study has no claim {statement.ordering!r} "
                             f"in {statement.subset!r}; known: {sorted(row.get('claim') for row in subsets[statement.subset])}")
    row = found[0]
    shares = {key: float(row[f"{key}_share"]) for key in ("holds", "opposite", "inconclusive")}
    decided = ("supported" if shares["holds"] > 0.5 else "contradicted" if shares["opposite"] > 0.5
               else "inconclusive")
    return {"estimate": shares["holds"] - shares["opposite"], "low": None, "high": None, "n": int(row["settings"]),
            "verdict": decided, "shares": shares}


NO_PUBLISHED_NUMBER = {"estimate": None, "low": None, "high": None, "n": 0, "verdict": "not available",
                       "why": "the paper gives its Frozen Lake ordering as a figure (Figure 3), no numbers"}


def claims_rows(ours: Lookup, paper: Lookup, statements: Sequence[Statement | ShareStatement] | None = None,
                frozen_lake_study: Mapping | None = None) -> list[dict]:
    """One row per statement: ours (the grid, or for a ShareStatement the Frozen Lake study) and the paper's."""
    rows = []
    for statement in statements or paper_statements():
        if isinstance(statement, ShareStatement):
            ours_entry, paper_entry = evaluate_share(statement, frozen_lake_study), dict(NO_PUBLISHED_NUMBER)
        else:
            validate(statement)
            ours_entry, paper_entry = evaluate(statement, ours), evaluate(statement, paper)
        rows.append({"claim": statement.claim, "paper_claim": statement.paper_claim, "statement": statement.text(),
                     "note": statement.note, "ours": ours_entry, "paper": paper_entry})
    return rows


def _interval(entry: Mapping) -> str:
    if entry["estimate"] is None:
        return "–"
    if "shares" in entry:
        shares = entry["shares"]
        return (f"{entry['estimate']:+.2f}: holds {shares['holds']:.0%}, opposite {shares['opposite']:.0%}, "
                f"inconclusive {shares['inconclusive']:.0%} of {entry['n']} settings")
    if entry["low"] is None:
        return f"{entry['estimate']:+.2f}"
    return f"{entry['estimate']:+.2f} [{entry['low']:+.2f}, {entry['high']:+.2f}] (n={entry['n']})"


def claims_markdown(rows: Sequence[dict], interval_note: str) -> str:
    lines = [
        f"Claims of the paper (Hua et al., ACL 2025, arXiv:2405.11870v3, Tables 2-3, Section 5.3), each as a statement "
        f"about our grid. Ours: mean over replicates of the per-replicate statistic, [{LEVEL:.0%} t interval] over "
        "replicates "
        f"({interval_note}); verdict: supported (interval above 0) / contradicted (below) / inconclusive "
        "(contains 0). Paper: the same statistic on its published numbers (one number per cell, so no interval).",
        "",
        "Frozen Lake rows (FL): judged in every setting of the pre-declared study (frozen_lake_study.md; a setting's "
        "verdict needs its 90% interval over seeds to exclude 0); ours: share where the claim holds − share where the "
        "opposite holds; verdict: supported / contradicted when more than half of the settings say so, else "
        "inconclusive.",
        "",
        "| # | the paper's claim | statement | ours | verdict | paper | paper's verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        note = f" ({row['note']})" if row["note"] else ""
        paper = row["paper"]
        paper_value = _interval(paper) if paper["estimate"] is not None else "no published number"
        lines.append(f"| {row['claim']} | {row['paper_claim']}{note} | `{row['statement']}` | {_interval(row['ours'])}"
                     f" | **{row['ours']['verdict']}** | {paper_value} | "
                     f"{paper['verdict'] if paper['estimate'] is not None else '–'} |")
    return "\n".join(lines) + "\n"


def claims_csv(rows: Sequence[dict]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["claim", "statement", "estimate", "low", "high", "n", "verdict", "paper_estimate",
                     "paper_verdict"])
    for row in rows:
        ours, paper = row["ours"], row["paper"]

        def fmt(value):
            return "" if value is None else f"{value:.4f}"

        writer.writerow([row["claim"], row["statement"], fmt(ours["estimate"]), fmt(ours["low"]), fmt(ours["high"]),
                         ours["n"], ours["verdict"], fmt(paper["estimate"]),
                         paper["verdict"] if paper["estimate"] is not None else ""])
    return out.getvalue()


def write_claims(rows: Sequence[dict], out_dir: Path, interval_note: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "claims.md": write_text_atomic(out_dir / "claims.md", claims_markdown(rows, interval_note)),
        "claims.csv": write_text_atomic(out_dir / "claims.csv", claims_csv(rows)),
        "claims.json": write_json_atomic(out_dir / "claims.json", {"level": LEVEL, "interval": interval_note,
                                                                   "claims": list(rows)}),
    }


def _estimate(entry: Mapping) -> str:
    if entry.get("estimate") is None:
        return "–"
    low, high = entry.get("low"), entry.get("high")
    interval = "" if low is None else f" [{low:+.2f}, {high:+.2f}]"
    return f"{entry['estimate']:+.2f}{interval}"


def verdict_changes(baseline: Mapping, rows: Sequence[Mapping], baseline_name: str, name: str) -> str:
    """Markdown: each claim's verdict on our grid under ``baseline`` (a claims.json) and under ``rows``."""
    before = {row["claim"]: row for row in baseline["claims"]}
    lines = [f"How each claim's verdict on our grid changes from {baseline_name} to {name} (estimate [90% t "
             "interval] over replicates; the paper's own verdict for reference).", "",
             f"| claim | paper's claim | {baseline_name} | {name} | changed | paper |", "|---|---|---|---|---|---|"]
    for row in rows:
        old = before.get(row["claim"])
        if old is None:
            raise ClaimDataError(f"claim {row['claim']} is not in the baseline claims file")
        was, now = old["ours"]["verdict"], row["ours"]["verdict"]
        lines.append(f"| {row['claim']} | {row['paper_claim']} | {was}: {_estimate(old['ours'])} | "
                     f"{now}: {_estimate(row['ours'])} | {'**yes**' if was != now else 'no'} | "
                     f"{row['paper']['verdict']} |")
    return "\n".join(lines) + "\n"
