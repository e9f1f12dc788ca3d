"""Build the report directory: tables (md/csv/tex), summary.json, plots, index.md; and README's Results section."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ift.io import write_json_atomic, write_text_atomic
from ift.report import plots
from ift.report.published import load_published
from ift.report.tables import (
    ALPACA_COLUMNS,
    ALPACA_COLUMNS_PAPER,
    LEADERBOARD_COLUMNS,
    Roots,
    collect,
    describe_roots,
    table_rows,
    to_csv,
    to_latex,
    to_markdown,
)

TABLE2_COLUMNS = (*LEADERBOARD_COLUMNS, ("avg", "Avg"))
README_START = "<!-- results:start (written by `python -m ift.report update_readme=true`; do not edit) -->"
README_END = "<!-- results:end -->"


class IncompleteResults(RuntimeError):
    """Expected evaluations are missing (the pipeline requires every cell)."""


def summary_metrics(rows2: Sequence[dict], rows3: Sequence[dict],
                    alpaca_columns: Sequence[tuple[str, str]] = ALPACA_COLUMNS) -> dict:
    """Flat DVC metrics: '<start>/<method>/<column>' -> mean (and '.../std' when there are several seeds)."""
    metrics = {}
    for rows, columns in ((rows2, TABLE2_COLUMNS), (rows3, alpaca_columns)):
        for row in rows:
            if row.get("source") == "paper":  # published numbers are data, not metrics of this pipeline's runs
                continue
            for key, _ in columns:
                if row[key] is None:
                    continue
                mean, std, n = row[key]
                prefix = f"{row['start']}/{row['method'] if row['method'] != '-' else 'start'}/{key}"
                metrics[prefix] = round(mean, 4)
                if std is not None:
                    metrics[f"{prefix}_std"] = round(std, 4)
                metrics[f"{prefix}_n"] = n
    return metrics


def spread_note(seeds: Sequence[int], chains: Sequence[int], profile: str) -> str:
    """What a table's mean ± std is taken over (ift.grid.replicates), in words."""
    if chains:
        return (f"mean ± std over {1 + len(chains)} whole-chain replicates (chain c: base, sft_beta and the cell "
                f"trained with seed c; chains {[0, *chains]}; sample std, so it includes the start points' noise); "
                f"profile={profile}")
    starts = "the start points are fixed hub checkpoints" if profile == "paper" else "every seed shares one base and sft_beta"
    return f"mean ± std over fine-tuning seeds {list(seeds)} (sample std; {starts}); profile={profile}"


def build_report(*, evals_dir: Roots, runs_dir: Roots, out_dir: Path, methods: Sequence[str],
                 starts: Sequence[str], seeds: Sequence[int], profile: str, require_complete: bool,
                 published_file: Path | None = None, base_only: Sequence[str] = (),
                 compare_file: Path | None = None, bench_file: Path | None = None,
                 chains: Sequence[int] = (), baseline_claims: Path | None = None,
                 frozen_lake_study_file: Path | None = None) -> dict:
    """Write every report file; returns {"rows2", "rows3", "alpaca_columns", "missing", "files"}.

    ``evals_dir`` / ``runs_dir``: a directory, or several searched in order for each cell (the paper_full grid's
    cells are apart from the default grid's). ``base_only``: methods trained from base only (params.yaml
    base_only_methods). ``chains``: the whole-chain replicates besides chain 0 (params.yaml chains): the tables
    average over them, and variance.* splits each
    cell's spread into start-point and fine-tuning parts. ``published_file`` (the paper
    profile's default): print the paper's published numbers under our rows. ``compare_file`` (every profile): the
    paper's numbers for paper_deltas.* (each method's change from its start point, ours beside the paper's) and
    claims.* (the paper's claims tested on our grid, the Frozen Lake ones on the study in ``frozen_lake_study_file``
    (default ``out_dir/frozen_lake_study.json``), the cost claim on ``bench_file``, an ift.bench results file).
    """
    cells, finetune_cells, missing = collect(evals_dir, methods, starts, seeds, base_only, chains)
    if missing and require_complete:
        shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise IncompleteResults(f"missing evaluations under {describe_roots(evals_dir)}: {shown}")
    published, published_note = {}, ""
    if published_file is not None:
        source, published = load_published(Path(published_file))
        if any(published.values()):
            published_note = f" Rows marked (paper): published in {source['citation'].strip()}"
        else:
            published_note = (f" The paper's published numbers are not transcribed yet ({Path(published_file).name}"
                              " has no rows), so no paper rows are shown.")
            print(f"[report] WARNING: {published_file} has no rows: the paper's numbers are not shown beside ours")
    alpaca_columns = ALPACA_COLUMNS_PAPER if profile == "paper" else ALPACA_COLUMNS
    rows2 = table_rows(cells, methods, starts, TABLE2_COLUMNS, published.get("table2"), base_only)
    rows3 = table_rows(cells, methods, starts, alpaca_columns, published.get("table3"), base_only)
    seeds_note = spread_note(seeds, chains, profile)
    files = {}
    for stem, rows, columns, caption in (
        ("table2", rows2, TABLE2_COLUMNS, f"Open LLM Leaderboard analogs (%), {seeds_note}.{published_note}"),
        ("table3", rows3, alpaca_columns,
         f"AlpacaEval analog: win rate vs the reference (%), {seeds_note}.{published_note}"),
    ):
        files[f"{stem}.md"] = write_text_atomic(out_dir / f"{stem}.md", f"{caption}\n\n" + to_markdown(rows, columns))
        files[f"{stem}.csv"] = write_text_atomic(out_dir / f"{stem}.csv", to_csv(rows, columns))
        files[f"{stem}.tex"] = write_text_atomic(out_dir / f"{stem}.tex", to_latex(rows, columns, caption))
    if compare_file is not None:
        files.update(_write_comparison(cells, Path(compare_file), out_dir, methods=methods, starts=starts,
                                       base_only=base_only, profile=profile, seeds_note=seeds_note,
                                       bench_file=bench_file, chains=chains, baseline_claims=baseline_claims,
                                       frozen_lake_study_file=frozen_lake_study_file))
    from ift.report import variance

    # Written in every profile (DVC declares them): without chains there is nothing to split, and the file says so.
    split_rows = (variance.variance_rows(cells, finetune_cells, methods=methods, starts=starts, base_only=base_only)
                  if chains else [])
    files.update(variance.write_variance(split_rows, out_dir, chains=chains, seeds=seeds))
    files["summary.json"] = write_json_atomic(out_dir / "summary.json", summary_metrics(rows2, rows3, alpaca_columns))
    plot_dir = out_dir / "plots"
    files["task_bars.png"] = plots.task_bars(rows2, plot_dir / "task_bars.png")
    runs = plots.run_names(methods, starts, seeds, base_only, chains)  # the grid's cells only: no glob over runs_dir
    files["training_curves.png"] = plots.training_curves(runs_dir, plot_dir / "training_curves.png", runs)
    files["ift_dynamics.png"] = plots.ift_dynamics(runs_dir, plot_dir / "ift_dynamics.png", runs)
    files["index.md"] = write_text_atomic(out_dir / "index.md", index_markdown(out_dir, missing))
    return {"rows2": rows2, "rows3": rows3, "alpaca_columns": alpaca_columns, "missing": missing, "files": files}


def _write_comparison(cells, compare_file: Path, out_dir: Path, *, methods, starts, base_only, profile: str,
                      seeds_note: str, bench_file: Path | None, chains: Sequence[int] = (),
                      baseline_claims: Path | None = None,
                      frozen_lake_study_file: Path | None = None) -> dict[str, Path]:
    """paper_deltas.{md,csv} and claims.{md,csv,json}: our grid held against the paper's published numbers."""
    from ift.report import claims, deltas

    source, published = load_published(compare_file)
    if not any(published.values()):
        print(f"[report] WARNING: {compare_file} has no rows: no paper comparison or claims table")
        return {}
    citation = "Hua et al., ACL 2025, arXiv:2405.11870v3, Tables 2-3"
    files = deltas.write_deltas(cells, published, methods=methods, starts=starts, base_only=base_only,
                                profile=profile, seeds_note=seeds_note, citation=citation, out_dir=out_dir)
    study_file = (Path(frozen_lake_study_file) if frozen_lake_study_file is not None
                  else out_dir / "frozen_lake_study.json")
    study = json.loads(study_file.read_text()) if study_file.exists() else None
    if study is None:
        print(f"[report] WARNING: {study_file} is missing: the Frozen Lake claims are 'not available'")
    bench = claims.bench_ratios(bench_file) if bench_file is not None else {}
    ours = claims.grid_lookup(cells, bench, lc_column="lc_win_rate" if profile == "paper" else "lc_win_rate_minimal")
    rows = claims.claims_rows(ours, claims.published_lookup(published), claims.statements_for([*methods, *base_only]),
                              frozen_lake_study=study)
    if chains:
        note = (f"whole-chain replicates (chains {[0, *chains]}): base, sft_beta and every cell retrained per "
                "replicate, paired by chain")
    elif profile != "paper":
        note = f"{claims.SHARED_STARTS}: every seed fine-tunes the same base and sft_beta"
    else:
        note = "fine-tuning seeds; the start points are fixed hub checkpoints"
    files.update(claims.write_claims(rows, out_dir, note))
    if baseline_claims is not None:
        baseline = json.loads(Path(baseline_claims).read_text())
        text = claims.verdict_changes(baseline, rows, f"{Path(baseline_claims).parent.name}/claims.json",
                                      f"{out_dir.name}/claims.json")
        files["claims_change.md"] = write_text_atomic(out_dir / "claims_change.md", text)
    return files


def index_markdown(out_dir: Path, missing: Sequence[str]) -> str:
    """index.md linking every report file that exists (Frozen Lake's come from its own stage)."""
    entries = [
        ("Table 2: leaderboard tasks", ["table2.md", "table2.csv", "table2.tex"]),
        ("Table 3: AlpacaEval", ["table3.md", "table3.csv", "table3.tex"]),
        ("The paper's claims on our grid", ["claims.md", "claims.csv", "claims.json", "claims_change.md"]),
        ("Our effects beside the paper's", ["paper_deltas.md", "paper_deltas.csv"]),
        ("Start-point vs fine-tuning spread", ["variance.md", "variance.csv"]),
        ("Frozen Lake", ["frozen_lake.md", "frozen_lake.csv", "frozen_lake.json"]),
        ("DVC metrics", ["summary.json"]),
        ("Plots", ["plots/task_bars.png", "plots/training_curves.png", "plots/ift_dynamics.png",
                   "plots/frozen_lake_policies.png", "plots/frozen_lake_mse.png"]),
    ]
    lines = ["# Report", ""]
    for title, names in entries:
        links = [f"[{name}]({name})" for name in names if (out_dir / name).exists()]
        if links:
            lines.append(f"- {title}: " + ", ".join(links))
    if (out_dir / "table2.md").exists():
        lines += ["", (out_dir / "table2.md").read_text().strip()]
    if (out_dir / "table3.md").exists():
        lines += ["", (out_dir / "table3.md").read_text().strip()]
    if missing:
        lines += ["", f"Missing evaluations ({len(missing)}): " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def readme_section(report_dir: Path) -> str:
    """The README Results block rendered from the report's tables."""
    parts = [README_START, ""]
    for name in ("table2.md", "table3.md", "variance.md", "claims.md"):  # paper_deltas.md, frozen_lake.md: linked
        path = report_dir / name
        if path.exists():
            parts += [path.read_text().strip(), ""]
    parts.append(README_END)
    return "\n".join(parts)


def update_readme(readme: Path, report_dir: Path) -> bool:
    """Replace README's Results block with the report's tables; returns True when it changed."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no Results markers ({README_START!r} ... {README_END!r})")
    before, rest = text.split(README_START, 1)
    _, after = rest.split(README_END, 1)
    new = before + readme_section(report_dir) + after
    if new != text:
        write_text_atomic(readme, new)
    return new != text


def readme_block(readme: Path) -> str:
    """The Results block currently in README (markers included)."""
    text = readme.read_text()
    start = text.index(README_START)
    return text[start : text.index(README_END) + len(README_END)]


def log_to_wandb(result: dict, logger_cfg, profile: str, cfg=None) -> None:
    """One W&B summary run with Table 2/3 as wandb.Table and the plots as images (offline by default); ``cfg``:
    the report's Hydra config, for the run's config (ift.tracking.report_run)."""
    from ift.tracking import configure_tracking, init_run, report_run

    if configure_tracking(logger_cfg) != "wandb":
        return
    import wandb

    run = init_run(logger_cfg, report_run(logger_cfg, profile, cfg))
    for stem, rows, columns in (("table2", result["rows2"], TABLE2_COLUMNS),
                                ("table3", result["rows3"], result["alpaca_columns"])):
        header = ["start", "method", "source", *(f"{key}_mean" for key, _ in columns),
                  *(f"{key}_std" for key, _ in columns)]
        data = [[row["start"], row["method"], row["source"], *((row[k][0] if row[k] else None) for k, _ in columns),
                 *((row[k][1] if row[k] else None) for k, _ in columns)] for row in rows]
        run.log({stem: wandb.Table(columns=header, data=data)})
    for name, path in result["files"].items():
        if name.endswith(".png"):
            run.log({name: wandb.Image(str(path))})
    run.summary.update(json.loads((Path(result["files"]["summary.json"])).read_text()))
    run.finish()
