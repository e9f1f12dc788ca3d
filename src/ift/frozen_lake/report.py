"""Report of the Frozen Lake experiment: summary table (md, csv), raw numbers (json), two PNG figures.

Every file is written atomically; nothing time-dependent goes into them, so the bytes depend only on the config.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ift.frozen_lake.env import ACTION_ARROWS, ACTION_NAMES, Lake, Trajectory
from ift.frozen_lake.experiment import EXPERT, INITIAL, ExperimentResult
from ift.io import write_json_atomic, write_png_atomic, write_text_atomic

METRICS = ("policy_mse", "path_mse", "param_mse")
CSV_COLUMNS = ("method", "seeds", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "follows_optimal_path")
ROW_LABELS = {INITIAL: "initial (untrained)", EXPERT: "expert (supervised on π*, reference)"}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def summarize(result: ExperimentResult) -> list[dict]:
    """One row per report row (initial, methods, expert): mean/std of each metric over seeds."""
    rows = []
    for method in result.rows:
        runs = result.runs_of(method)
        row: dict = {"method": method, "seeds": len(runs)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std([getattr(run, metric) for run in runs])
        row["follows_optimal_path"] = sum(run.follows_optimal_path for run in runs)
        rows.append(row)
    return rows


def _number(value: float) -> str:
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"


def _describe(trajectory: Trajectory) -> str:
    moves = " → ".join(ACTION_NAMES[action] for action in trajectory.actions)
    return f"{len(trajectory)} steps: {moves}"


def markdown_report(result: ExperimentResult, summary: list[dict], plots_link: str) -> str:
    config, problem = result.config, result.problem
    ift = config.options.ift
    table = [
        "| method | policy MSE ↓ | MSE on optimal-path states ↓ | parameter MSE to expert ↓ | greedy rollout = optimal path |",
        "|---|---|---|---|---|",
    ]
    for row in summary:
        cells = [f"{_number(row[f'{m}_mean'])} ± {_number(row[f'{m}_std'])}" for m in METRICS]
        label = ROW_LABELS.get(row["method"], row["method"])
        table.append(f"| {label} | {' | '.join(cells)} | {row['follows_optimal_path']}/{row['seeds']} |")
    trained = sorted((row for row in summary if row["method"] in config.methods), key=lambda r: r["policy_mse_mean"])
    ordering = " < ".join(f"{row['method']} ({_number(row['policy_mse_mean'])})" for row in trained)
    initial_mse = summary[0]["policy_mse_mean"]
    tie_cells = ", ".join(f"({int(row)}, {int(col)})" for row, col in
                          (problem.lake.cell(s) for s in problem.lake.decision_states
                           if np.count_nonzero(problem.optimal_probs[s]) > 1))
    return "\n".join([
        "# Frozen Lake: SFT, IFT, DPO and ORPO against the value-iteration optimum",
        "",
        "Non-slippery gymnasium `FrozenLake-v1` on this map (S start, F frozen, H hole, G goal):",
        "",
        "```",
        *(" ".join(row) for row in problem.lake.rows),
        "```",
        "",
        f"- optimal path ({_describe(problem.optimal)}); sub-optimal path "
        f"({_describe(problem.suboptimal)}); no other simple path exists.",
        f"- π* from value iteration (discount {config.discount}); at the (row, column) cells {tie_cells} "
        "several actions are equally good and π* spreads uniformly over them.",
        f"- policy: one-hot state ({problem.lake.num_states}) → {config.hidden_size} {config.activation} → 4 logits; "
        f"{config.steps} full-batch {config.optimizer} steps, lr {config.lr}; {config.seeds} seeds "
        "(0 .. seeds-1), each a different initialisation shared by all methods.",
        f"- SFT and IFT train on the optimal trajectory; IFT λ = {ift.max_lambda} (schedule {ift.lambda_schedule}, "
        f"disturb {ift.lambda_disturb}), γ = {ift.gamma}, propagation {ift.propagation_type}/"
        f"{ift.propagation_side}/{ift.propagation_norm}. DPO (β = {config.options.dpo_beta}, reference = the "
        f"initial policy) and ORPO (β = {config.options.orpo_beta}) take the optimal trajectory as chosen and the "
        "sub-optimal one as rejected.",
        "",
        *table,
        "",
        f"Ordering by mean policy MSE (lower is better; initial policy {_number(initial_mse)}): {ordering}. "
        f"Differences smaller than the spread across the {config.seeds} seeds are not meaningful.",
        "",
        "Mean ± sample standard deviation over seeds. **policy MSE**: mean of (π_θ(a|s) − π*(a|s))² over the "
        f"{len(problem.lake.decision_states)} decision states (S and F cells; holes and goal are terminal and "
        "excluded) and the 4 actions. **MSE on optimal-path states**: the same over the states of the optimal "
        "trajectory only. **parameter MSE**: mean over all weights of (θ − θ_expert)², θ_expert = the same "
        "initialisation trained by supervised learning on π* over all decision states "
        f"({config.expert_steps} steps, lr {config.expert_lr}). **greedy rollout**: seeds whose argmax policy "
        "walks the optimal path from S to G.",
        "",
        f"![π(a|s) per method]({plots_link}/frozen_lake_policies.png)",
        "",
        f"![policy MSE over training]({plots_link}/frozen_lake_mse.png)",
        "",
    ])


def csv_report(summary: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: row[key] for key in CSV_COLUMNS} for row in summary)
    return buffer.getvalue()


def json_report(result: ExperimentResult, summary: list[dict]) -> dict:
    """Everything needed to redo the table or the plots: config, MDP, π*, per-seed numbers and curves."""
    problem = result.problem
    return {
        "config": asdict(result.config),
        "map": list(problem.lake.rows),
        "actions": list(ACTION_NAMES),
        "decision_states": problem.lake.decision_states.tolist(),
        "optimal_policy": problem.optimal_probs.tolist(),
        "optimal_trajectory": asdict(problem.optimal),
        "suboptimal_trajectory": asdict(problem.suboptimal),
        "summary": summary,
        "runs": [
            {**{key: value for key, value in asdict(run).items() if key != "probs"}, "policy": run.probs.tolist()}
            for run in result.runs
        ],
    }


# --------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------

_ARROW_VECTORS = {0: (-1.0, 0.0), 1: (0.0, -1.0), 2: (1.0, 0.0), 3: (0.0, 1.0)}  # screen (dx, dy), y up
_CELL_COLOURS = {"S": "#d8ecf7", "F": "#eef6fb", "H": "#274b6d", "G": "#f2c14e"}


def _draw_lake_policy(ax, lake: Lake, probs: np.ndarray, title: str) -> None:
    """The map with, in each decision cell, one arrow per action of length ∝ π(a|s)."""
    from matplotlib.patches import Rectangle

    nrow, ncol = len(lake.rows), len(lake.rows[0])
    for state in range(lake.num_states):
        row, col = lake.cell(state)
        y = nrow - 1 - row
        ax.add_patch(Rectangle((col, y), 1, 1, facecolor=_CELL_COLOURS[lake.letter(state)], edgecolor="#999"))
        if lake.terminal[state]:
            ax.text(col + 0.5, y + 0.5, lake.letter(state), ha="center", va="center", color="#777")
            continue
        for action, (dx, dy) in _ARROW_VECTORS.items():
            length = 0.42 * float(probs[state, action])
            if length > 0.02:
                ax.arrow(col + 0.5, y + 0.5, dx * length, dy * length, width=0.025, head_width=0.09,
                         head_length=min(0.08, length), length_includes_head=True, color="#c0392b")
    ax.set_xlim(0, ncol)
    ax.set_ylim(0, nrow)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _draw_heatmap(ax, lake: Lake, probs: np.ndarray, state_labels: bool):
    """π(a|s) as a (decision states × actions) image; rows labelled "row,col" when ``state_labels``."""
    states = lake.decision_states
    image = ax.imshow(probs[states], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(ACTION_ARROWS)), ACTION_ARROWS)
    labels = [f"{lake.cell(s)[0]},{lake.cell(s)[1]}" for s in states] if state_labels else []
    ax.set_yticks(range(len(states)) if state_labels else [], labels, fontsize=7)
    return image


def policies_figure(result: ExperimentResult):
    """Top: arrows of π(a|s) on the map; bottom: heatmap (decision states × actions). π* first, then the
    initial policy and each method, averaged over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lake = result.problem.lake
    panels = [("optimal π*", result.problem.optimal_probs)] + [
        (method, np.mean([run.probs for run in result.runs_of(method)], axis=0))
        for method in (INITIAL, *result.config.methods)
    ]
    figure, axes = plt.subplots(2, len(panels), figsize=(2.4 * len(panels), 5.6), squeeze=False)
    for column, (title, probs) in enumerate(panels):
        _draw_lake_policy(axes[0, column], lake, probs, title)
        image = _draw_heatmap(axes[1, column], lake, probs, state_labels=column == 0)
    figure.colorbar(image, ax=axes[1, :].tolist(), shrink=0.8, label="π(a|s), mean over seeds")
    figure.suptitle(f"Frozen Lake: π(a|s) per method ({result.config.seeds} seeds)", fontsize=10)
    return figure


def mse_figure(result: ExperimentResult):
    """Policy MSE to π* over training steps: mean ± one sample std band per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.4, 4.0))
    for method in result.config.methods:
        curves = np.array([run.mse_curve for run in result.runs_of(method)])
        mean = curves.mean(axis=0)
        std = curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
        steps = np.arange(len(mean))
        (line,) = ax.plot(steps, mean, label=method)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.axhline(mean_std([run.policy_mse for run in result.runs_of(INITIAL)])[0], color="#777", linestyle="--",
               label="initial")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("MSE(π_θ, π*) over decision states")
    ax.legend()
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def write_report(result: ExperimentResult, report_dir: str | Path, plots_dir: str | Path) -> dict[str, Path]:
    """Write frozen_lake.{md,csv,json} to ``report_dir`` and the two PNGs to ``plots_dir``; returns the paths."""
    report_dir, plots_dir = Path(report_dir), Path(plots_dir)
    summary = summarize(result)
    plots_link = Path(os.path.relpath(plots_dir, report_dir)).as_posix()
    return {
        "policies_png": write_png_atomic(policies_figure(result), plots_dir / "frozen_lake_policies.png"),
        "mse_png": write_png_atomic(mse_figure(result), plots_dir / "frozen_lake_mse.png"),
        "json": write_json_atomic(report_dir / "frozen_lake.json", json_report(result, summary)),
        "csv": write_text_atomic(report_dir / "frozen_lake.csv", csv_report(summary)),
        "md": write_text_atomic(report_dir / "frozen_lake.md", markdown_report(result, summary, plots_link)),
    }
