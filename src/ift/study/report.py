"""A study's report: ``report/studies/<study>.md``, ``.csv`` and ``.png`` from ``outputs/studies/<study>/evals``.

One row per (start point, variant, swept values): each score's mean ± sample std over the study's whole-chain
replicates, read with the main report's readers (ift.report.tables), and the Avg's difference to the reference
variant paired by chain. A result file that is missing is named in the markdown and in its row of the CSV, and its
cell is left out of that row's numbers (never counted as a zero, never filled in): such a row shows how many
replicates it holds, ``(2/3)``. The PNG has one panel per score and start point: the score against the study's knob
with the std over replicates as error bars, the reference variant as a dashed line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ift.io import write_png_atomic, write_text_atomic
from ift.paths import REPO_ROOT
from ift.report.tables import (
    LEADERBOARD_COLUMNS,
    START_TITLES,
    Cell,
    _alpaca_values,
    _read_result,
    leaderboard_row_values,
    mean_std,
)
from ift.study.spec import Study

COLUMNS = (("avg", "Avg"), *LEADERBOARD_COLUMNS, ("win_rate", "Win rate"))  # in %, as Tables 2 and 3
READERS = {"leaderboard": ("leaderboard.json", leaderboard_row_values), "alpaca": ("alpaca.json", _alpaca_values)}


@dataclasses.dataclass
class Row:
    """One point of the study: a variant at one set of swept values, from one start point, over its replicates."""

    variant: str
    values: tuple[tuple[str, Any], ...]
    start: str
    scores: Cell  # column -> values, and column -> chain -> value (by_seed, keyed by chain)
    names: list[str]  # the cells (one per replicate) this row averages
    missing: list[str] = dataclasses.field(default_factory=list)  # "<cell>/<file>" not found (or a task not in it)

    def stat(self, column: str) -> tuple[float, float | None, int] | None:
        values = self.scores.values.get(column, [])
        return (*mean_std(values), len(values)) if values else None


def aggregate(study: Study, evals_dir: Path, evals: Sequence[str] = ("leaderboard", "alpaca")) -> list[Row]:
    """Read every cell's results under ``evals_dir`` (``<cell>/leaderboard.json``, ``<cell>/alpaca.json``: the
    ones ``evals`` asks for) into rows, in the study's order: start point, variant, swept values."""
    rows: dict[tuple, Row] = {}
    for cell in study.cells():
        row = rows.setdefault(cell.point, Row(cell.variant, cell.values, cell.start,
                                              Cell(start=cell.start, method=cell.variant), []))
        row.names.append(cell.name)
        for evaluation in evals:
            filename, reader = READERS[evaluation]
            path = evals_dir / cell.name / filename
            if not path.is_file():
                row.missing.append(f"{cell.name}/{filename}")
                continue
            found = _read_result(path, reader)
            if evaluation == "leaderboard":
                row.missing += [f"{cell.name}/{filename}: task {key}" for key, _ in LEADERBOARD_COLUMNS
                                if key not in found]
            for column, value in found.items():
                row.scores.add(column, value, cell.chain)
    order = {start: i for i, start in enumerate(study.starts)}
    return sorted(rows.values(), key=lambda row: order[row.start])  # stable: variants and values keep their order


def reference_row(rows: Sequence[Row], study: Study, start: str) -> Row | None:
    variant, values = study.reference
    return next((r for r in rows if (r.variant, r.values, r.start) == (variant, values, start)), None)


def paired_delta(row: Row, reference: Row | None, column: str = "avg") -> tuple[float, float | None, int] | None:
    """``row`` minus ``reference`` in ``column``, chain by chain (the same start points and seed), over the chains
    both have: mean, sample std, count."""
    if reference is None or row is reference:
        return None
    mine, theirs = row.scores.by_seed.get(column, {}), reference.scores.by_seed.get(column, {})
    differences = [mine[chain] - theirs[chain] for chain in mine if chain in theirs]
    return (*mean_std(differences), len(differences)) if differences else None


def _fmt(entry, expected: int) -> str:
    if entry is None:
        return "–"
    mean, std, n = entry
    text = f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"
    return text if n == expected else f"{text} ({n}/{expected})"


def _signed(entry) -> str:
    if entry is None:
        return "–"
    mean, std, n = entry
    return f"{mean:+.1f}" + ("" if std is None else f" ± {std:.1f}") + f" (n={n})"


def _shown(path: Path) -> str:
    """A study file's path as the repository names it (conf/study/<name>.yaml), or as given."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def to_markdown(study: Study, rows: Sequence[Row], *, profile: str, png_name: str | None = None) -> str:
    labels = study.labels()
    ref_name, ref_values = study.reference
    ref_title = ref_name + (f" at {', '.join(f'{label}={value}' for label, value in ref_values)}" if ref_values else "")
    expected = len(study.chains)
    lines = [f"# {study.title}", "",
             f"Study `{study.name}` ({_shown(study.source)}), profile={profile}: "
             f"mean ± sample std over {expected} whole-chain replicates (chains {list(study.chains)}; chain c: base, "
             f"sft_beta and the cell all trained with seed c), scores in %. Δ Avg: the Avg minus the reference's "
             f"({ref_title}, in bold), chain by chain, mean ± std over the chains both have. A value over fewer replicates than asked shows (k/"
             f"{expected}); missing cells are named below and left out, never averaged in."]
    header = ["Variant", *labels, COLUMNS[0][1], f"Δ Avg vs {ref_name}", *(title for _, title in COLUMNS[1:])]
    for start in study.starts:
        reference = reference_row(rows, study, start)
        lines += ["", f"## From {START_TITLES.get(start, start)}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in (r for r in rows if r.start == start):
            values = dict(row.values)
            label = f"**{row.variant}**" if row is reference else row.variant
            fields = [label, *(str(values.get(lab, "–")) for lab in labels), _fmt(row.stat("avg"), expected),
                      _signed(paired_delta(row, reference)),
                      *(_fmt(row.stat(key), expected) for key, _ in COLUMNS[1:])]
            lines.append("| " + " | ".join(fields) + " |")
    missing = [name for row in rows for name in row.missing]
    cells = sum(len(row.names) for row in rows)
    lines += ["", f"Missing ({len(missing)} result files; their cells are not in the numbers above): "
              + ", ".join(missing) if missing else f"All {cells} cells' results are present."]
    if png_name:
        lines += ["", f"![{study.name}]({png_name})"]
    return "\n".join(lines) + "\n"


def table(study: Study, rows: Sequence[Row]) -> tuple[list[str], list[list]]:
    """The CSV's (and W&B table's) header and rows: per score mean, std, n; the paired Δ Avg; the missing files."""
    labels = study.labels()
    header = ["start", "variant", *labels, *(f"{key}_{stat}" for key, _ in COLUMNS for stat in ("mean", "std", "n")),
              "avg_delta_mean", "avg_delta_std", "avg_delta_n", "n_expected", "missing"]
    data = []
    for row in rows:
        values = dict(row.values)
        fields = [row.start, row.variant, *(values.get(label) for label in labels)]
        for entry in [*(row.stat(key) for key, _ in COLUMNS), paired_delta(row, reference_row(rows, study, row.start))]:
            fields += [None, None, 0] if entry is None else list(entry)
        data.append([*fields, len(study.chains), ";".join(row.missing)])
    return header, data


def to_csv(study: Study, rows: Sequence[Row]) -> str:
    def text(value) -> str:
        return "" if value is None else f"{value:.4f}" if isinstance(value, float) and not isinstance(value, bool) \
            else str(value)

    header, data = table(study, rows)
    return "\n".join([",".join(header), *(",".join(text(v) for v in fields) for fields in data)]) + "\n"


def plot(study: Study, rows: Sequence[Row], path: Path) -> Path:
    """One panel per (start point, score): the score against the knob, error bars = std over replicates; the
    reference variant as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if study.knob == "variant":
        ticks = [v.name for v in study.variants]
        series = {(): [(r, ticks.index(r.variant)) for r in rows]}  # one series: every variant at its own tick
        lines_only = []
    else:
        ticks = list(dict.fromkeys(str(value) for r in rows for label, value in r.values if label == study.knob))
        series, lines_only = {}, []
        for r in rows:
            values = dict(r.values)
            if study.knob not in values:
                lines_only.append(r)  # a variant that does not sweep the knob: a horizontal line
                continue
            rest = tuple((label, value) for label, value in r.values if label != study.knob)
            series.setdefault((r.variant, rest), []).append((r, ticks.index(str(values[study.knob]))))
    figure, axes = plt.subplots(len(study.starts), len(COLUMNS), figsize=(2.6 * len(COLUMNS), 2.8 * len(study.starts)),
                                squeeze=False)
    for i, start in enumerate(study.starts):
        reference = reference_row(rows, study, start)
        for j, (key, title) in enumerate(COLUMNS):
            ax = axes[i][j]
            for k, (name, points) in enumerate(series.items()):
                points = [(x, r.stat(key)) for r, x in points if r.start == start and r.stat(key)]
                if not points:
                    continue
                label = (" ".join([name[0], *(f"{lab}={val}" for lab, val in name[1])]) if name
                         else "mean ± std over replicates")
                ax.errorbar([x + 0.06 * k for x, _ in points], [s[0] for _, s in points],
                            yerr=[s[1] or 0.0 for _, s in points], marker="o", capsize=3, color=f"C{k}", label=label,
                            linestyle="-" if name else "none")
            for r in (r for r in lines_only if r.start == start and r is not reference and r.stat(key)):
                ax.axhline(r.stat(key)[0], color="grey", linestyle=":", label=r.variant)
            if reference is not None and reference.stat(key):
                ax.axhline(reference.stat(key)[0], color="k", linestyle="--", linewidth=1,
                           label=f"{reference.variant} (reference)")
            ax.set_xticks(range(len(ticks)), ticks, rotation=45 if study.knob == "variant" else 0, fontsize=7,
                          ha="right" if study.knob == "variant" else "center")
            ax.set_title(f"{title}, {start}", fontsize=9)
            if j == 0:
                ax.set_ylabel("score (%)")
            if study.knob != "variant":
                ax.set_xlabel(study.knob, fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.suptitle(study.title, fontsize=10, y=0.995)
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=8,
                      bbox_to_anchor=(0.5, 0.96), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.99 - 0.1 / len(study.starts)))
    return write_png_atomic(figure, path)


def write_study_report(study: Study, cfg, *, out_dir: Path) -> dict:
    """``<out_dir>/<study>.{md,csv,png}`` from ``cfg.paths.outputs``/evals (``cfg``: the study's composed config: its
    paths, evals, profile and logger), and the table logged to W&B. Returns {"rows", "missing", "files"}."""
    evals = [e for e in cfg.evals if e in READERS]
    rows = aggregate(study, Path(str(cfg.paths.outputs)) / "evals", evals)
    profile = str(cfg.profile)
    files = {
        "md": write_text_atomic(out_dir / f"{study.name}.md",
                                to_markdown(study, rows, profile=profile, png_name=f"{study.name}.png")),
        "csv": write_text_atomic(out_dir / f"{study.name}.csv", to_csv(study, rows)),
        "png": plot(study, rows, out_dir / f"{study.name}.png"),
    }
    result = {"rows": rows, "missing": [name for row in rows for name in row.missing], "files": files}
    log_to_wandb(study, result, cfg.logger, profile, root=str(cfg.paths.root))
    return result


def log_to_wandb(study: Study, result: Mapping, logger_cfg, profile: str, *, root: str) -> bool:
    """One W&B run (job type ``report``, in the study's group: ift.tracking) holding the study's table and plot, as
    the main report logs Tables 2 and 3; False when the logger is not W&B."""
    from ift.tracking import configure_tracking, init_run, report_run

    if configure_tracking(logger_cfg) != "wandb":
        return False
    import wandb

    config = {"study": study.name, "title": study.title, "source": str(study.source), "paths": {"root": root},
              "chains": list(study.chains), "starts": list(study.starts)}
    spec = dataclasses.replace(report_run(logger_cfg, profile, config), name=f"study-{study.name}/report")
    run = init_run(logger_cfg, spec)
    header, data = table(study, result["rows"])
    run.log({f"study_{study.name}": wandb.Table(columns=header, data=data),
             f"study_{study.name}_plot": wandb.Image(str(result["files"]["png"]))})
    run.summary.update({"cells": sum(len(row.names) for row in result["rows"]),
                        "missing_result_files": len(result["missing"])})
    run.finish()
    return True
