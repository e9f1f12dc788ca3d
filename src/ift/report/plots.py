"""PNG plots of the report (DVC's vega HTML needs a CDN; PNGs work offline): per-task bars with error bars,
training-loss curves per method, and IFT's λ and pass-1 / pass-2 losses."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ift.grid import eval_name, methods_at
from ift.io import write_png_atomic
from ift.report.tables import LEADERBOARD_COLUMNS, START_TITLES, Roots, describe_roots, locate

# Each method's line colour, fixed here so that a method added to the registry recolours no existing plot.
COLOURS = {"sft": "C0", "dpo": "C1", "sft_dpo": "C2", "orpo": "C3", "ift": "C4", "tdpo": "C5", "simpo": "C6"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def task_bars(rows: list[dict], path: Path) -> Path:
    """One panel per start point: a bar per (task, row) with the std over seeds as error bar."""
    plt = _pyplot()
    starts = list(dict.fromkeys(row["start"] for row in rows))
    figure, axes = plt.subplots(len(starts), 1, figsize=(13, 3.6 * len(starts)), squeeze=False)
    columns = [*LEADERBOARD_COLUMNS, ("avg", "Avg")]
    for ax, start in zip(axes[:, 0], starts):
        start_rows = [row for row in rows if row["start"] == start]
        width = 0.8 / max(len(start_rows), 1)
        for i, row in enumerate(start_rows):
            means = [row[key][0] if row[key] else 0.0 for key, _ in columns]
            errors = [(row[key][1] or 0.0) if row[key] else 0.0 for key, _ in columns]
            ax.bar([j + i * width for j in range(len(columns))], means, width, yerr=errors, capsize=2,
                   label=row["row"], hatch="//" if row.get("source") == "paper" else None)  # published numbers
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(columns))], [title for _, title in columns])
        ax.set_ylabel("score (%)")
        ax.set_title(START_TITLES.get(start, start))
        ax.set_ylim(0, 105)  # percentages; room for error bars near 100
        ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not on them
    figure.tight_layout()
    return write_png_atomic(figure, path)


def run_names(methods: Sequence[str], starts: Sequence[str], seeds: Sequence[int],
              base_only: Sequence[str] = (), chains: Sequence[int] = ()) -> list[str]:
    """The grid's run directories in the tables' order (``base_only`` methods from base only): chain 0's
    ``<method>-<start>-s<seed>``, then each chain's ``<method>-<start>-chain<c>-s<c>``."""
    return [eval_name(start, method, seed, chain) for start in starts for method in methods_at(start, methods, base_only)
            for chain, seed in [*((0, seed) for seed in seeds), *((chain, chain) for chain in chains)]]


def _histories(runs_dir: Roots, names: Sequence[str]) -> dict[str, list[dict]]:
    """train_metrics.json of the named run dirs (the grid's cells), keyed by run name; a missing one is named in a
    warning. Nothing else under ``runs_dir`` is read: not a run outside the grid, not a killed save's
    ``.<name>.*.tmp`` directory."""
    histories, missing = {}, []
    for name in sorted(names):  # sorted, as the glob was: same line order and colours
        metrics_file = locate(runs_dir, name) / "train_metrics.json"
        if metrics_file.is_file():
            histories[name] = json.loads(metrics_file.read_text())
        else:
            missing.append(name)
    if missing:
        print(f"[report] WARNING: {len(missing)} of the grid's {len(names)} runs have no train_metrics.json under "
              f"{describe_roots(runs_dir)} and are left out of the plots: {', '.join(missing)}")
    return histories


def training_curves(runs_dir: Roots, path: Path, names: Sequence[str]) -> Path:
    """Training loss per step, one line per run in ``names``, one panel per start point (colour = method)."""
    plt = _pyplot()
    histories = _histories(runs_dir, names)
    by_start = defaultdict(list)
    for name, metrics in histories.items():
        start = "sft_beta" if "-sft_beta-" in name else "base"
        by_start[start].append((name, metrics))
    starts = sorted(by_start) or ["base"]
    figure, axes = plt.subplots(1, len(starts), figsize=(6 * len(starts), 3.8), squeeze=False)
    for ax, start in zip(axes[0], starts):
        for name, metrics in by_start[start]:
            method = name.split("-")[0]
            steps = [entry["step"] for entry in metrics["log_history"]]
            losses = [entry["loss"] for entry in metrics["log_history"]]
            ax.plot(steps, losses, color=COLOURS.get(method, "k"), alpha=0.7, label=method)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("training loss (method's own objective)")
        ax.set_title(START_TITLES.get(start, start))
    figure.tight_layout()
    return write_png_atomic(figure, path)


def ift_dynamics(runs_dir: Roots, path: Path, names: Sequence[str]) -> Path:
    """IFT runs among ``names``: λ per step, and the pass-1 SFT loss (true inputs) against the pass-2 loss (mixed
    inputs)."""
    plt = _pyplot()
    figure, (ax_lambda, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, metrics in _histories(runs_dir, names).items():
        if metrics.get("method") != "ift":
            continue
        steps = [entry["step"] for entry in metrics["log_history"]]
        ax_lambda.plot(steps, metrics.get("lambda", []), label=name)
        ax_loss.plot(steps, metrics.get("pass1_sft_loss", []), linestyle="--", label=f"{name} pass 1 (SFT)")
        ax_loss.plot(steps, metrics.get("pass2_loss", []), label=f"{name} pass 2 (IFT)")
    ax_lambda.set_title("λ (temporal residual connection)")
    ax_loss.set_title("IFT: pass-1 SFT loss vs pass-2 loss")
    for ax in (ax_lambda, ax_loss):
        ax.set_xlabel("optimiser step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    figure.tight_layout()
    return write_png_atomic(figure, path)
