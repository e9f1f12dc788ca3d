"""From the study's runs to its tables: per-setting summaries, the claims table, winners, the paper's ordering,
the moved-state and off-trajectory measures and the per-category decomposition of the MSE change.

Everything is a plain list of dicts (JSON-ready); nothing depends on time or the machine.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from ift.frozen_lake.batched import EXPERT_METHOD
from ift.frozen_lake.env import ACTION_NAMES
from ift.frozen_lake.methods import METHODS
from ift.frozen_lake.study.run import (
    CATEGORIES,
    CLAIMS,
    HOLDS,
    INCONCLUSIVE,
    OPPOSITE,
    MapResult,
    Setting,
    StudyResult,
    mse_by_category,
    own_action_counts,
    paired_verdict,
    state_categories,
)

VERDICTS = (HOLDS, OPPOSITE, INCONCLUSIVE)


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def setting_fields(setting: Setting) -> dict:
    return {"optimizer": setting.optimizer, "schedule": setting.schedule, "lr": setting.lr, "steps": setting.steps}


def initial_mse(map_result: MapResult) -> np.ndarray:
    """Policy MSE of each seed's initial policy ``[seeds]``."""
    problem = map_result.problem
    decisions = problem.lake.decision_states
    return np.array([float(((map_result.initial_probs[seed] - problem.optimal_probs)[decisions] ** 2).mean())
                     for seed in sorted(map_result.initial_probs)])


def moves(records) -> bool:
    """A (setting, variant) "moves" if on average at least one decision state moved past the threshold."""
    return float(np.mean([r.toward.sum() + r.away.sum() for r in records])) >= 1.0


def summary_rows(result: StudyResult) -> list[dict]:
    """One row per (map, setting, variant), grid first then the anchor; plus each map's initial and expert."""
    config, rows = result.config, []
    for map_result in result.maps:
        initial = initial_mse(map_result)
        rows.append({"map": map_result.name, "setting": INITIAL_ROW, "variant": "initial", "method": "initial",
                     "seeds": len(initial), "policy_mse_mean": _mean_std(initial)[0],
                     "policy_mse_std": _mean_std(initial)[1]})
        for setting in config.settings:
            for variant in config.variants:
                records = map_result.select(setting, variant.name)
                row = {"map": map_result.name, "setting": "anchor" if setting == config.anchor else "grid",
                       **setting_fields(setting), "variant": variant.name, "method": variant.method,
                       "seeds": len(records)}
                for metric in ("policy_mse", "chosen_mse", "rejected_mse", "param_mse"):
                    row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([getattr(r, metric) for r in records])
                row["success"] = int(sum(r.success for r in records))
                row["moved_toward"] = float(np.mean([r.toward.sum() for r in records]))
                row["moved_away"] = float(np.mean([r.away.sum() for r in records]))
                row["off_mass"] = float(np.mean([np.nanmean(r.off_mass) for r in records]))
                row["initial_policy_mse_mean"] = float(initial.mean())
                curves = np.array([r.mse_curve for r in records])
                row["mse_curve"] = {str(step): float(curves[:, step].mean())
                                    for step in config.curve_points if step <= setting.steps}
                row["mse_curve"][str(setting.steps)] = float(curves[:, setting.steps].mean())
                rows.append(row)
        experts = [r for r in map_result.records if r.method == EXPERT_METHOD]
        mean, std = _mean_std([r.policy_mse for r in experts])
        rows.append({"map": map_result.name, "setting": EXPERT_ROW, "variant": EXPERT_METHOD, "method": EXPERT_METHOD,
                     "seeds": len(experts), "policy_mse_mean": mean, "policy_mse_std": std,
                     "success": int(sum(r.success for r in experts))})
    return rows


INITIAL_ROW, EXPERT_ROW = "initial", "expert"


def claim_verdicts(result: StudyResult) -> list[dict]:
    """Every (claim, map, grid setting, X variant, Y variant) with its paired-interval verdict."""
    config, verdicts = result.config, []
    for map_result in result.maps:
        for setting in config.grid:
            for label, x_method, y_method in CLAIMS:
                for x, y in product(config.variants_of(x_method), config.variants_of(y_method)):
                    x_runs, y_runs = map_result.select(setting, x.name), map_result.select(setting, y.name)
                    differences = np.array([a.policy_mse - b.policy_mse for a, b in zip(x_runs, y_runs, strict=True)])
                    verdict, mean, low, high = paired_verdict(differences, config.interval)
                    paper = x.name == config.paper_variant(x_method) and y.name == config.paper_variant(y_method)
                    verdicts.append({"claim": label, "map": map_result.name, **setting_fields(setting),
                                     "x": x.name, "y": y.name, "verdict": verdict, "mean_difference": mean,
                                     "low": low, "high": high, "paper_variants": paper,
                                     "both_move": moves(x_runs) and moves(y_runs)})
    return verdicts


def claims_table(verdicts: list[dict], keep=lambda verdict: True) -> list[dict]:
    """Per claim: how many (setting, variant pair)s, and the share where it holds / the opposite holds / neither."""
    rows = []
    for label, _, _ in CLAIMS:
        chosen = [v for v in verdicts if v["claim"] == label and keep(v)]
        row = {"claim": label, "settings": len(chosen)}
        for verdict in VERDICTS:
            count = sum(v["verdict"] == verdict for v in chosen)
            row[verdict] = count
            row[f"{verdict}_share"] = count / len(chosen) if chosen else float("nan")
        rows.append(row)
    return rows


def claims_subsets(result: StudyResult, verdicts: list[dict]) -> dict[str, list[dict]]:
    """The claims table over all settings, and restricted: per map, the paper's variants, settings that move."""
    subsets = {"all settings": claims_table(verdicts)}
    for name, _ in result.config.maps:
        subsets[f"map {name}"] = claims_table(verdicts, lambda v, name=name: v["map"] == name)
    subsets["paper's β and λ only"] = claims_table(verdicts, lambda v: v["paper_variants"])
    subsets["both methods move the policy"] = claims_table(verdicts, lambda v: v["both_move"])
    return subsets


def paper_ordering(result: StudyResult, verdicts: list[dict]) -> list[dict]:
    """Per (map, grid setting, DPO/IFT/ORPO variant): do DPO < IFT, IFT < ORPO and ORPO < SFT all hold?"""
    config = result.config
    index = {(v["claim"], v["map"], v["optimizer"], v["lr"], v["steps"], v["x"], v["y"]): v for v in verdicts}
    sft = config.paper_variant("sft")
    rows = []
    for map_result in result.maps:
        for setting in config.grid:
            for dpo, ift, orpo in product(config.variants_of("dpo"), config.variants_of("ift"),
                                          config.variants_of("orpo")):
                key = (map_result.name, setting.optimizer, setting.lr, setting.steps)
                parts = [index[("DPO < IFT", *key, dpo.name, ift.name)], index[("IFT < ORPO", *key, ift.name, orpo.name)],
                         index[("ORPO < SFT", *key, orpo.name, sft)]]
                rows.append({"map": map_result.name, **setting_fields(setting), "dpo": dpo.name, "ift": ift.name,
                             "orpo": orpo.name, "verdicts": [p["verdict"] for p in parts],
                             "holds": all(p["verdict"] == HOLDS for p in parts),
                             "in_means": all(p["mean_difference"] < 0 for p in parts)})
    return rows


def winners(result: StudyResult) -> list[dict]:
    """Per (map, grid setting): the paper variant with the lowest mean policy MSE, and whether its paired
    interval against the runner-up excludes 0."""
    config, rows = result.config, []
    for map_result in result.maps:
        for setting in config.grid:
            runs = {method: map_result.select(setting, config.paper_variant(method)) for method in METHODS}
            means = {method: float(np.mean([r.policy_mse for r in runs[method]])) for method in METHODS}
            ranked = sorted(METHODS, key=lambda method: means[method])
            differences = np.array([a.policy_mse - b.policy_mse for a, b in zip(runs[ranked[0]], runs[ranked[1]])])
            verdict = paired_verdict(differences, config.interval)[0]
            rows.append({"map": map_result.name, **setting_fields(setting), "winner": ranked[0],
                         "runner_up": ranked[1], "separated": verdict == HOLDS, "ranking": ranked,
                         "means": means})
    return rows


def moved_state_table(result: StudyResult, map_result: MapResult, setting: Setting) -> list[dict]:
    """Per paper variant at ``setting``: mean number of states moved toward / away from π*, and the states
    (row, col) that moved toward / away in a majority of seeds."""
    config, rows = result.config, []
    lake = map_result.problem.lake
    for method in METHODS:
        records = map_result.select(setting, config.paper_variant(method))
        toward = np.mean([r.toward for r in records], axis=0)
        away = np.mean([r.away for r in records], axis=0)
        rows.append({"method": method, "toward": float(np.mean([r.toward.sum() for r in records])),
                     "away": float(np.mean([r.away.sum() for r in records])),
                     "toward_states": [list(lake.cell(s)) for s in np.flatnonzero(toward > 0.5)],
                     "away_states": [list(lake.cell(s)) for s in np.flatnonzero(away > 0.5)]})
    return rows


def coverage_over_grid(result: StudyResult) -> list[dict]:
    """Per map and method (all variants): over the grid settings, the mean number of states moved toward / away,
    and the share of settings where the variant moves more states than SFT (means over seeds)."""
    config, rows = result.config, []
    sft = config.paper_variant("sft")
    for map_result in result.maps:
        for variant in config.variants:
            toward, away, more = [], [], []
            for setting in config.grid:
                records = map_result.select(setting, variant.name)
                sft_records = map_result.select(setting, sft)
                toward.append(np.mean([r.toward.sum() for r in records]))
                away.append(np.mean([r.away.sum() for r in records]))
                moved = np.mean([r.toward.sum() + r.away.sum() for r in records])
                more.append(moved > np.mean([r.toward.sum() + r.away.sum() for r in sft_records]))
            rows.append({"map": map_result.name, "variant": variant.name, "method": variant.method,
                         "toward": float(np.mean(toward)), "away": float(np.mean(away)),
                         "more_than_sft_share": float(np.mean(more))})
    return rows


def off_trajectory_table(result: StudyResult, map_result: MapResult, setting: Setting) -> list[dict]:
    """Per trajectory state: its mean off-trajectory mass under the initial policy and, after training at
    ``setting``, under each paper variant (mean over seeds)."""
    config, problem = result.config, map_result.problem
    from ift.frozen_lake.batched import off_trajectory_mass

    initial = np.mean([off_trajectory_mass(p, problem.optimal, problem.suboptimal)
                       for p in map_result.initial_probs.values()], axis=0)
    finals = {method: np.mean([r.off_mass for r in map_result.select(setting, config.paper_variant(method))], axis=0)
              for method in METHODS}
    chosen, rejected = set(problem.optimal.states), set(problem.suboptimal.states)
    rows = []
    for state in sorted(chosen | rejected):
        path = "both" if state in chosen and state in rejected else "chosen" if state in chosen else "rejected"
        rows.append({"state": list(problem.lake.cell(state)), "path": path, "initial": float(initial[state]),
                     **{method: float(finals[method][state]) for method in METHODS}})
    return rows


def decomposition(result: StudyResult, map_result: MapResult, setting: Setting) -> list[dict]:
    """Per paper variant at ``setting``: the change of each state category's share of the policy MSE from the
    initial policy (mean over seeds); the changes add up to the change of the policy MSE."""
    config, problem = result.config, map_result.problem
    initial = {seed: mse_by_category(probs, problem) for seed, probs in map_result.initial_probs.items()}
    rows = []
    for method in METHODS:
        changes = []
        for record in map_result.select(setting, config.paper_variant(method)):
            final = mse_by_category(record.probs, problem)
            changes.append([final[c] - initial[record.seed][c] for c in CATEGORIES])
        mean = np.mean(changes, axis=0)
        rows.append({"method": method, **{c: float(m) for c, m in zip(CATEGORIES, mean)},
                     "total": float(mean.sum())})
    return rows


def map_property(result: StudyResult) -> list[dict]:
    """Per map: the rejected path's actions (π*'s own / tied / not), the states per category, and DPO's result:
    at the anchor (change of policy MSE from the initial policy) and over the grid (share of settings where
    each DPO variant ends significantly further from / closer to π* than the initial policy)."""
    config, rows = result.config, []
    for map_result in result.maps:
        initial = initial_mse(map_result)
        row = {"map": map_result.name, "rows": list(map_result.problem.lake.rows),
               "chosen_steps": len(map_result.problem.optimal), **own_action_counts(map_result.problem),
               "categories": {c: [list(map_result.problem.lake.cell(s)) for s in states]
                              for c, states in state_categories(map_result.problem).items()}}
        for variant in config.variants_of("dpo"):
            anchor = np.array([r.policy_mse for r in map_result.select(config.anchor, variant.name)])
            row[f"{variant.name}_anchor_change"] = float((anchor - initial).mean())
            verdicts = [paired_verdict(np.array([r.policy_mse for r in map_result.select(s, variant.name)]) - initial,
                                       config.interval)[0] for s in config.grid]
            row[f"{variant.name}_worse_share"] = verdicts.count(OPPOSITE) / len(verdicts)
            row[f"{variant.name}_better_share"] = verdicts.count(HOLDS) / len(verdicts)
        rows.append(row)
    return rows


def action_mass(result: StudyResult, map_result: MapResult, setting: Setting) -> list[dict]:
    """Where the probability goes: per action, the mean over decision states (and seeds) of π(a|s) for the
    initial policy, π* and each paper variant at ``setting``; and how often each trajectory takes the action."""
    config, problem = result.config, map_result.problem
    decisions = problem.lake.decision_states
    rows = [{"policy": "π*", **_per_action(problem.optimal_probs[decisions].mean(0))},
            {"policy": "initial", **_per_action(np.mean([p[decisions].mean(0) for p in map_result.initial_probs.values()],
                                                        axis=0))}]
    for method in METHODS:
        records = map_result.select(setting, config.paper_variant(method))
        rows.append({"policy": method, **_per_action(np.mean([r.probs[decisions].mean(0) for r in records], axis=0))})
    for name, trajectory in (("chosen path (steps)", problem.optimal), ("rejected path (steps)", problem.suboptimal)):
        rows.append({"policy": name, **_per_action(np.bincount(trajectory.actions, minlength=len(ACTION_NAMES)))})
    return rows


def _per_action(values) -> dict:
    return {action: float(value) for action, value in zip(ACTION_NAMES, values)}


def analyse(result: StudyResult) -> dict:
    """All the study's tables (the report renders them; the JSON stores them)."""
    config = result.config
    verdicts = claim_verdicts(result)
    highlighted = {"anchor": config.anchor, "nlp_like": config.nlp_like}
    return {
        "summary": summary_rows(result),
        "verdicts": verdicts,
        "claims": claims_subsets(result, verdicts),
        "ordering": paper_ordering(result, verdicts),
        "winners": winners(result),
        "coverage": coverage_over_grid(result),
        "maps": map_property(result),
        "highlighted": {
            key: {m.name: {"moved": moved_state_table(result, m, setting),
                           "off_trajectory": off_trajectory_table(result, m, setting),
                           "decomposition": decomposition(result, m, setting),
                           "action_mass": action_mass(result, m, setting)}
                  for m in result.maps}
            for key, setting in highlighted.items()
        },
        "anchor_check": {m.name: m.anchor_check for m in result.maps if m.anchor_check is not None},
    }
