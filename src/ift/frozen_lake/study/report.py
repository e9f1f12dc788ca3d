"""The study's files: frozen_lake_study.{md,csv,json} and report/plots/frozen_lake_study_*.png.

Written atomically; nothing time-dependent goes into them (the run time is printed, not stored), so the bytes
depend only on the config.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ift.frozen_lake.env import ACTION_NAMES
from ift.frozen_lake.methods import METHODS
from ift.frozen_lake.study.analysis import INITIAL_ROW, VERDICTS, initial_mse
from ift.frozen_lake.study.run import CATEGORIES, CLAIMS, PAPER_ORDER, StudyResult
from ift.io import write_json_atomic, write_png_atomic, write_text_atomic

CSV_COLUMNS = ("map", "setting", "optimizer", "schedule", "lr", "steps", "variant", "method", "seeds",
               "policy_mse_mean", "policy_mse_std", "chosen_mse_mean", "chosen_mse_std", "rejected_mse_mean",
               "rejected_mse_std", "param_mse_mean", "param_mse_std", "success", "moved_toward", "moved_away",
               "off_mass", "initial_policy_mse_mean")
PLOTS = {"winners": "frozen_lake_study_winners.png", "curves": "frozen_lake_study_curves.png",
         "off_trajectory": "frozen_lake_study_off_trajectory.png"}
METHOD_COLOURS = {"sft": "#1f77b4", "ift": "#2ca02c", "dpo": "#d62728", "orpo": "#9467bd"}


def _n(value: float) -> str:
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def _cells(cells) -> str:
    return ", ".join(f"({r},{c})" for r, c in cells) or "—"


def _moves(trajectory) -> str:
    return " → ".join(ACTION_NAMES[a] for a in trajectory.actions)


def claims_markdown(rows: list[dict]) -> list[str]:
    lines = ["| claim (lower policy MSE) | settings | holds | opposite holds | inconclusive |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['claim']} | {row['settings']} | " + " | ".join(
            f"{_pct(row[f'{v}_share'])} ({row[v]})" for v in VERDICTS) + " |")
    return lines


def ordering_statement(analysis: dict, level: str) -> str:
    ordering = analysis["ordering"]
    holding = [row for row in ordering if row["holds"]]
    in_means = [row for row in ordering if row["in_means"]]
    order = " < ".join(m.upper() for m in PAPER_ORDER)
    if holding:
        where = "; ".join(f"map {r['map']}, {r['optimizer']} lr {r['lr']:g} {r['steps']} steps "
                          f"({r['dpo']}, {r['ift']}, {r['orpo']})" for r in holding)
        head = (f"**Yes, in {len(holding)} of {len(ordering)} (setting, variant) combinations**: the paper's full "
                f"ordering {order} holds there with every one of its three steps' {level} intervals excluding 0: "
                f"{where}.")
    else:
        head = (f"**No.** The paper's full ordering {order} holds (all three steps DPO < IFT, IFT < ORPO, ORPO < SFT "
                f"with intervals excluding 0) in none of the {len(ordering)} (map, setting, DPO/IFT/ORPO variant) "
                "combinations of the grid.")
    tail = (f" Ordered that way in the means alone (ignoring the intervals): {len(in_means)} of {len(ordering)}"
            + (": " + "; ".join(f"map {r['map']}, {r['optimizer']} lr {r['lr']:g} {r['steps']} steps "
                                f"({r['dpo']}, {r['ift']}, {r['orpo']})" for r in in_means[:12])
               + (" …" if len(in_means) > 12 else "") if in_means else "") + ".")
    return head + tail


def winners_markdown(analysis: dict, config) -> list[str]:
    lines = []
    steps = sorted({s.steps for s in config.grid})
    for name, _ in config.maps:
        rows = [w for w in analysis["winners"] if w["map"] == name]
        lines += [f"Map `{name}` (winner by mean policy MSE; `*` = its 90% paired interval against the runner-up "
                  "excludes 0):", "",
                  "| optimiser, lr | " + " | ".join(f"{s} steps" for s in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for optimizer in dict.fromkeys(s.optimizer for s in config.grid):
            for lr in dict.fromkeys(s.lr for s in config.grid):
                cells = []
                for count in steps:
                    (w,) = [w for w in rows if w["optimizer"] == optimizer and w["lr"] == lr and w["steps"] == count]
                    cells.append(f"{w['winner']}{'*' if w['separated'] else ''}")
                lines.append(f"| {optimizer}, {lr:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def setting_table(summary: list[dict], config, map_name: str, setting) -> list[str]:
    lines = ["| variant | policy MSE ↓ | chosen-path MSE | rejected-path MSE | parameter MSE | greedy = optimal path "
             "| states moved toward / away π* | off-trajectory mass |", "|---|---|---|---|---|---|---|---|"]
    initial = next(r for r in summary if r["map"] == map_name and r["setting"] == INITIAL_ROW)
    lines.append(f"| initial | {_n(initial['policy_mse_mean'])} ± {_n(initial['policy_mse_std'])} | | | | | | |")
    for row in summary:
        if row["map"] != map_name or row["setting"] not in ("grid", "anchor") or (
                row["optimizer"], row["schedule"], row["lr"], row["steps"]) != (
                setting.optimizer, setting.schedule, setting.lr, setting.steps):
            continue
        lines.append(
            f"| {row['variant']} | {_n(row['policy_mse_mean'])} ± {_n(row['policy_mse_std'])} | "
            f"{_n(row['chosen_mse_mean'])} | {_n(row['rejected_mse_mean'])} | {_n(row['param_mse_mean'])} | "
            f"{row['success']}/{row['seeds']} | {row['moved_toward']:.1f} / {row['moved_away']:.1f} | "
            f"{row['off_mass']:.3f} |")
    return lines


def markdown_report(result: StudyResult, analysis: dict, plots_link: str) -> str:
    config = result.config
    grid = config.grid
    optimizers = sorted({s.optimizer for s in grid})
    lrs = sorted({s.lr for s in grid})
    steps = sorted({s.steps for s in grid})
    runs = sum(len(m.records) for m in result.maps)
    paper = {m: config.paper_variant(m) for m in METHODS}
    level = _pct(config.interval)
    lines = [
        "# Frozen Lake study: the paper's ordering over a pre-declared grid",
        "",
        "The paper (Hua et al., *Intuitive Fine-Tuning*, ACL 2025, arXiv:2405.11870v3, Section 5.3) reports the "
        "policy-MSE order DPO < IFT < ORPO < SFT on a Frozen Lake with one optimal and one sub-optimal path, and "
        "explains it by DPO, ORPO and IFT covering more of the grid than SFT. This study tests that order over a "
        "grid fixed in `conf/frozen_lake_study.yaml` before it was run (issue 24). How it is built: "
        "docs/frozen_lake.md.",
        "",
        f"- Grid: {len(config.maps)} maps × optimiser {{{', '.join(optimizers)}}} with {grid[0].schedule} schedule "
        f"and warm-up ratio {grid[0].warmup_ratio:g} × lr {{{', '.join(f'{x:g}' for x in lrs)}}} × steps "
        f"{{{', '.join(map(str, steps))}}} = {len(config.maps) * len(grid)} settings; variants "
        f"{', '.join(v.name for v in config.variants)}; {config.seeds} seeds (0 .. {config.seeds - 1}; a seed is an "
        f"initialisation shared by all methods and settings). {runs} runs in all, with the anchor and the experts.",
        f"- Anchor = the `frozen_lake` stage's own setting ({config.anchor.label}; the paper's variants "
        f"{', '.join(paper.values())}), trained beside the grid on every map. "
        + ("It is also a grid point." if config.anchor in grid else
           f"It is not a grid point: the nearest one is {config.anchor.optimizer} lr {config.anchor.lr:g} "
           f"{config.anchor.steps} steps with the grid's {grid[0].schedule} schedule and warm-up instead of "
           f"a {config.anchor.schedule} lr."),
        f"- NLP-like = the grid setting closest to the paper's recipe (RMSprop, cosine, warm-up 0.1, lr 5e-7): "
        f"{config.nlp_like.label}.",
        f"- A claim \"X < Y\" holds at a setting when the {level} t interval over the {config.seeds} seeds of the "
        "paired differences MSE_X − MSE_Y (same initialisation) lies below 0; the opposite holds when it lies "
        "above 0; otherwise it is inconclusive. Each (setting, X variant, Y variant) counts once.",
        "",
        "## Summary: the paper's pairwise claims",
        "",
        *claims_markdown(analysis["claims"]["all settings"]),
        "",
        "The same, restricted:",
        "",
        "| claim | subset | settings | holds | opposite holds | inconclusive |",
        "|---|---|---|---|---|---|",
    ]
    for subset, rows in analysis["claims"].items():
        if subset == "all settings":
            continue
        for row in rows:
            lines.append(f"| {row['claim']} | {subset} | {row['settings']} | " + " | ".join(
                f"{_pct(row[f'{v}_share'])} ({row[v]})" for v in VERDICTS) + " |")
    lines += [
        "",
        f"\"both methods move the policy\": both variants moved at least one decision state by more than "
        f"{config.move_threshold:g} in total variation from the initial policy (mean over seeds).",
        "",
        "## Is the paper's ordering reproduced anywhere in the grid?",
        "",
        ordering_statement(analysis, level),
        "",
        "## Winning method per (optimiser, lr, steps)",
        "",
        f"Among the paper's variants ({', '.join(paper.values())}).",
        "",
        f"![winning method]({plots_link}/{PLOTS['winners']})",
        "",
        *winners_markdown(analysis, config),
        "## MSE over training: the default and the NLP-like setting",
        "",
        "Mean ± std over seeds of the paper's variants; top: at the anchor; bottom: at the NLP-like setting, as "
        "each seed's change from its initial MSE (the policies barely move there).",
        "",
        f"![policy MSE over training]({plots_link}/{PLOTS['curves']})",
        "",
    ]
    for key, setting in (("anchor", config.anchor), ("nlp_like", config.nlp_like)):
        title = "the frozen_lake stage's setting (anchor)" if key == "anchor" else "the NLP-like setting"
        lines += [f"### At {title}: {setting.label}", ""]
        for map_result in result.maps:
            lines += [f"Map `{map_result.name}`:", "", *setting_table(analysis["summary"], config, map_result.name,
                                                                        setting), ""]
    check = analysis["anchor_check"]
    if check:
        for name, value in check.items():
            if value.get("checked"):
                lines += [f"On map `{name}` the anchor was also trained with the `frozen_lake` stage's own per-run "
                          f"code: the final policy MSEs of the {value['runs']} (method, seed) runs agree to "
                          f"{value['max_abs_policy_mse_difference']:.1e} (tolerance {config.anchor_tolerance:g}), "
                          "so the anchor's ring-map rows are the stage's table (report/frozen_lake.md).", ""]
    lines += [
        "## The paper's explanation, measured: which states each method moves",
        "",
        f"A decision state moved if its π(.|s) moved more than {config.move_threshold:g} in total variation from "
        "the initial policy; toward π* if its squared error to π*(.|s) shrank, else away. Cells are (row, column); "
        "listed when they moved that way in a majority of seeds.",
        "",
    ]
    for key, setting in (("anchor", config.anchor), ("nlp_like", config.nlp_like)):
        lines += [f"At {setting.label}:", "",
                  "| map | method | states moved toward π* | away | moved toward (cells) | moved away (cells) |",
                  "|---|---|---|---|---|---|"]
        for name, tables in analysis["highlighted"][key].items():
            for row in tables["moved"]:
                lines.append(f"| {name} | {row['method']} | {row['toward']:.1f} | {row['away']:.1f} | "
                             f"{_cells(row['toward_states'])} | {_cells(row['away_states'])} |")
        lines.append("")
    lines += ["Over the whole grid (mean over settings of the mean over seeds; \"> SFT\" = share of settings where "
              "the variant moves more states than SFT):", "",
              "| map | variant | moved toward | moved away | > SFT |", "|---|---|---|---|---|"]
    for row in analysis["coverage"]:
        lines.append(f"| {row['map']} | {row['variant']} | {row['toward']:.2f} | {row['away']:.2f} | "
                     f"{_pct(row['more_than_sft_share'])} |")
    lines += [
        "",
        "## DPO's failure mode, measured: mass on actions on neither trajectory",
        "",
        "Per state on a trajectory: the probability π puts on actions that neither trajectory takes in that state "
        f"(mean over seeds), initially and after training at the anchor ({config.anchor.label}).",
        "",
        f"![off-trajectory mass over training]({plots_link}/{PLOTS['off_trajectory']})",
        "",
        "| map | state | on path | initial | " + " | ".join(METHODS) + " |",
        "|---|---|---|---|" + "---|" * len(METHODS),
    ]
    for name, tables in analysis["highlighted"]["anchor"].items():
        for row in tables["off_trajectory"]:
            lines.append(f"| {name} | ({row['state'][0]},{row['state'][1]}) | {row['path']} | {row['initial']:.3f} | "
                         + " | ".join(f"{row[m]:.3f}" for m in METHODS) + " |")
    lines += [
        "",
        "## Which property of the map decides DPO's result",
        "",
        "The rejected path's actions split into π*'s own actions in their states (DPO pushes them down: away from "
        "π*), ties, and actions π* does not take (pushing those down moves toward π*). Per map: that split, "
        "DPO's change of policy MSE at the anchor, and over the grid the share of settings where DPO ends "
        "further from (worse) or closer to (better) π* than the initial policy (paired interval excluding 0).",
        "",
        "| map | chosen / rejected steps | rejected actions: π*'s own / tie / not | " + " | ".join(
            f"{v.name}: Δ MSE at anchor | {v.name}: worse / better over grid" for v in config.variants_of("dpo"))
        + " |",
        "|---|---|---|" + "---|---|" * len(config.variants_of("dpo")),
    ]
    for row in analysis["maps"]:
        lines.append(f"| {row['map']} | {row['chosen_steps']} / {row['steps']} | {row['own']} / {row['tie']} / "
                     f"{row['not_own']} | " + " | ".join(
                         f"{row[f'{v.name}_anchor_change']:+.4f} | {_pct(row[f'{v.name}_worse_share'])} / "
                         f"{_pct(row[f'{v.name}_better_share'])}" for v in config.variants_of("dpo")) + " |")
    lines += ["", "Where the change of policy MSE comes from, by state category (mean over seeds; the categories add "
              "up to the total; at the anchor):", "",
              "| map | method | " + " | ".join(CATEGORIES) + " | total |", "|---|---|" + "---|" * (len(CATEGORIES) + 1)]
    for name, tables in analysis["highlighted"]["anchor"].items():
        for row in tables["decomposition"]:
            lines.append(f"| {name} | {row['method']} | " + " | ".join(f"{row[c]:+.4f}" for c in CATEGORIES)
                         + f" | {row['total']:+.4f} |")
    lines += ["", "Where DPO's mass goes (added after the first run of the grid, to explain the table above; not "
              "pre-declared): per action, the mean over the decision states of π(a|s) (mean over seeds) at the "
              "anchor, beside π*'s and how many steps of each trajectory take that action.", "",
              "| map | policy | " + " | ".join(ACTION_NAMES) + " |", "|---|---|" + "---|" * len(ACTION_NAMES)]
    for name, tables in analysis["highlighted"]["anchor"].items():
        for row in tables["action_mass"]:
            cells = [f"{row[a]:.0f}" if "steps" in row["policy"] else f"{row[a]:.3f}" for a in ACTION_NAMES]
            lines.append(f"| {name} | {row['policy']} | " + " | ".join(cells) + " |")
    lines += ["", "Cells per category:", ""]
    for row in analysis["maps"]:
        lines.append(f"- `{row['map']}` ({' / '.join(row['rows'])}): " + "; ".join(
            f"{c}: {_cells(cells)}" for c, cells in row["categories"].items() if cells))
    lines += [
        "",
        "## The maps",
        "",
    ]
    for map_result in result.maps:
        problem = map_result.problem
        lines += [f"`{map_result.name}`: optimal path {len(problem.optimal)} steps ({_moves(problem.optimal)}); "
                  f"sub-optimal path {len(problem.suboptimal)} steps ({_moves(problem.suboptimal)}).", "",
                  "```", *(" ".join(r) for r in problem.lake.rows), "```", ""]
    lines += [
        "The paper shows its map only as a figure (Figure 3). Its text gives: a two-layer fully connected policy, "
        "an environment with one optimal and one sub-optimal trajectory, an optimal policy from classical RL on "
        "which the reference network is trained, the MSE between the trained and the optimal policy's matrices, "
        "SFT/IFT on the optimal trajectory and DPO/ORPO with it as positive and the sub-optimal one as negative, "
        "hyper-parameters \"similar\" to the NLP setting. It does not give the grid's size, the holes, the two "
        "paths' lengths, how many of the sub-optimal path's actions are π*'s own, whether the lake is slippery, "
        "the discount, the network width, the optimiser steps or the learning rate; so which of the maps here "
        "resembles the paper's cannot be told from its text.",
        "",
        "## All numbers",
        "",
        "frozen_lake_study.csv: one row per (map, setting, variant) with mean/std over seeds of policy MSE "
        "(decision states), MSE over the chosen and over the rejected path's states, parameter MSE to the expert "
        "network, greedy-rollout successes, states moved toward/away and mean final off-trajectory mass. "
        "frozen_lake_study.json: the same with mean MSE curves (at the `curve_points` steps), every claim "
        "verdict with its interval, the ordering per combination, the winners and the tables above.",
        "",
    ]
    return "\n".join(lines)


def csv_report(summary: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({key: row.get(key, "") for key in CSV_COLUMNS} for row in summary)
    return buffer.getvalue()


def _plain(value):
    """JSON-ready: numpy scalars and arrays to Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_report(result: StudyResult, analysis: dict) -> dict:
    config = result.config
    return _plain({
        "config": asdict(config),
        "maps": [{"name": m.name, "rows": list(m.problem.lake.rows), "optimal_policy": m.problem.optimal_probs,
                  "optimal_trajectory": asdict(m.problem.optimal),
                  "suboptimal_trajectory": asdict(m.problem.suboptimal)} for m in result.maps],
        "actions": list(ACTION_NAMES),
        **analysis,
    })


# --------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def winners_figure(result: StudyResult, analysis: dict):
    """Per map: a (optimiser, lr) x steps grid coloured by the winning method; hatched = not separated."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    config = result.config
    optimizers = list(dict.fromkeys(s.optimizer for s in config.grid))
    lrs = list(dict.fromkeys(s.lr for s in config.grid))
    steps = sorted({s.steps for s in config.grid})
    row_labels = [f"{o} {lr:g}" for o in optimizers for lr in lrs]
    figure, axes = plt.subplots(1, len(result.maps), figsize=(3.3 * len(result.maps) + 1.2, 0.42 * len(row_labels) + 1.6),
                                squeeze=False)
    cmap = ListedColormap([METHOD_COLOURS[m] for m in METHODS])
    for ax, map_result in zip(axes[0], result.maps):
        image = np.zeros((len(row_labels), len(steps)))
        rows = [w for w in analysis["winners"] if w["map"] == map_result.name]
        for w in rows:
            i = optimizers.index(w["optimizer"]) * len(lrs) + lrs.index(w["lr"])
            j = steps.index(w["steps"])
            image[i, j] = METHODS.index(w["winner"])
            ax.text(j, i, w["winner"] + ("*" if w["separated"] else ""), ha="center", va="center", fontsize=7,
                    color="white")
        ax.imshow(image, cmap=cmap, vmin=-0.5, vmax=len(METHODS) - 0.5, aspect="auto")
        ax.set_xticks(range(len(steps)), [str(s) for s in steps])
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
        ax.set_xlabel("steps")
        ax.set_title(f"map {map_result.name}", fontsize=9)
    figure.legend(handles=[Patch(color=METHOD_COLOURS[m], label=m) for m in METHODS], loc="lower center",
                  ncol=len(METHODS), fontsize=8)
    figure.suptitle("Lowest mean policy MSE (paper's β, λ); * = interval vs runner-up excludes 0", fontsize=9)
    figure.tight_layout(rect=(0, 0.06, 1, 0.95))
    return figure


def _curve_panel(ax, map_result, config, setting, attribute: str, label: str, relative: bool = False) -> None:
    """Mean ± std over seeds of a per-step curve; ``relative``: each seed's curve minus its value at step 0."""
    for method in METHODS:
        records = map_result.select(setting, config.paper_variant(method))
        curves = np.array([getattr(r, attribute) for r in records])
        if relative:
            curves = curves - curves[:, :1]
        mean = curves.mean(axis=0)
        std = curves.std(axis=0, ddof=1)
        x = np.arange(len(mean))
        ax.plot(x, mean, color=METHOD_COLOURS[method], label=method, linewidth=1.2)
        ax.fill_between(x, mean - std, mean + std, color=METHOD_COLOURS[method], alpha=0.15)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(label, fontsize=8)
    ax.grid(alpha=0.3)


def curves_figure(result: StudyResult):
    """Policy MSE over training, mean ± std over seeds: rows = anchor, NLP-like; columns = maps. The NLP-like row
    shows each seed's change from its initial MSE: there the policies barely move and the spread of the initial
    policies across seeds would hide the (paired) differences."""
    plt = _pyplot()
    config = result.config
    figure, axes = plt.subplots(2, len(result.maps), figsize=(4.2 * len(result.maps), 7.0), squeeze=False)
    for column, map_result in enumerate(result.maps):
        for row, (name, setting) in enumerate((("anchor", config.anchor), ("NLP-like", config.nlp_like))):
            ax = axes[row, column]
            relative = name == "NLP-like"
            _curve_panel(ax, map_result, config, setting, "mse_curve",
                         "MSE(π_θ, π*) − its value at step 0" if relative else "MSE(π_θ, π*)", relative=relative)
            ax.axhline(0.0 if relative else initial_mse(map_result).mean(), color="#777", linestyle="--",
                       linewidth=0.8, label="initial")
            ax.set_title(f"{map_result.name}: {name} ({setting.label})", fontsize=8)
            if setting.steps >= 300:
                ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(left=0)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def off_trajectory_figure(result: StudyResult):
    """Mean off-trajectory mass over the trajectory states during training at the anchor, per map."""
    plt = _pyplot()
    config = result.config
    figure, axes = plt.subplots(1, len(result.maps), figsize=(4.2 * len(result.maps), 3.6), squeeze=False)
    for ax, map_result in zip(axes[0], result.maps):
        _curve_panel(ax, map_result, config, config.anchor, "off_curve", "mass on actions on neither trajectory")
        ax.set_xlim(left=0)
        ax.set_title(f"{map_result.name}: anchor ({config.anchor.label})", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def write_report(result: StudyResult, analysis: dict, report_dir: str | Path, plots_dir: str | Path) -> dict[str, Path]:
    report_dir, plots_dir = Path(report_dir), Path(plots_dir)
    plots_link = Path(os.path.relpath(plots_dir, report_dir)).as_posix()
    return {
        "winners_png": write_png_atomic(winners_figure(result, analysis), plots_dir / PLOTS["winners"]),
        "curves_png": write_png_atomic(curves_figure(result), plots_dir / PLOTS["curves"]),
        "off_trajectory_png": write_png_atomic(off_trajectory_figure(result), plots_dir / PLOTS["off_trajectory"]),
        "json": write_json_atomic(report_dir / "frozen_lake_study.json", json_report(result, analysis)),
        "csv": write_text_atomic(report_dir / "frozen_lake_study.csv", csv_report(analysis["summary"])),
        "md": write_text_atomic(report_dir / "frozen_lake_study.md", markdown_report(result, analysis, plots_link)),
    }


def summary_lines(analysis: dict, config) -> list[str]:
    """The claims table as printed by the CLI."""
    return [f"  {row['claim']:<11} settings {row['settings']:>4}: holds {_pct(row['holds_share']):>4}, opposite "
            f"{_pct(row['opposite_share']):>4}, inconclusive {_pct(row['inconclusive_share']):>4}"
            for row in analysis["claims"]["all settings"]] + [f"  paper's order: {ordering_statement(analysis, _pct(config.interval))}"]


__all__ = ["CLAIMS", "write_report", "summary_lines"]
