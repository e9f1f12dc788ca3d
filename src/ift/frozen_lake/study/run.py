"""The pre-declared Frozen Lake study (issue 24): the paper's ordering over a grid, and the measures behind it.

The grid (``conf/frozen_lake_study.yaml``): maps x optimisers x learning rates x step counts (warm-up + cosine
schedule), every method variant (SFT, IFT λ / noisy λ, DPO β, ORPO β) and every seed, plus one "anchor"
setting = the ``frozen_lake`` stage's own (Adam, constant lr 0.01, 300 steps). Each map's runs train in one
batch (:mod:`.batched`). Per run it records what :mod:`.experiment` records (policy MSE over the decision
states, over each trajectory's states, parameter MSE to the expert network, greedy-rollout success, the MSE
curve) and two measures of the paper's explanation:

* moved states: decision states whose π(.|s) moved more than ``move_threshold`` in total-variation distance
  from the initial policy, each "toward" π* (its squared error to π*(.|s) shrank) or "away" (it grew);
* off-trajectory mass: per trajectory state, the probability on actions that neither trajectory takes there.

The claims (:data:`CLAIMS`) are judged per setting and variant pair from the paired per-seed MSE differences
(same initialisation): a two-sided t interval at level ``interval`` that lies below 0 = holds, above 0 =
opposite, else inconclusive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ift.frozen_lake.batched import (
    EXPERT_METHOD,
    SCHEDULES,
    STUDY_OPTIMIZERS,
    BatchProblem,
    IFTShared,
    RunSpec,
    off_trajectory_mass,
    train_batch,
)
from ift.frozen_lake.env import check_map, greedy_rollout
from ift.frozen_lake.experiment import (
    ConfigError,
    ExperimentConfig,
    Problem,
    build_problem,
    config_value,
    run_seed,
)
from ift.frozen_lake.methods import METHODS, IFTOptions, MethodOptions
from ift.frozen_lake.policy import ACTIVATIONS
from ift.losses import LAMBDA_DISTURBANCES, PROPAGATION_NORMS, PROPAGATION_TYPES

# The paper's pairwise claims, as (label, X, Y): "X ends closer to π* than Y" (lower policy MSE).
CLAIMS = (("DPO < IFT", "dpo", "ift"), ("IFT < ORPO", "ift", "orpo"), ("ORPO < SFT", "orpo", "sft"),
          ("IFT < SFT", "ift", "sft"))
PAPER_ORDER = ("dpo", "ift", "orpo", "sft")  # the paper's MSE order, best first
HOLDS, OPPOSITE, INCONCLUSIVE = "holds", "opposite", "inconclusive"
INITIAL = "initial"
# State categories of the DPO decomposition (which states its MSE change comes from).
CATEGORIES = ("chosen only", "both paths", "rejected: π*'s action", "rejected: tie", "rejected: not π*'s",
              "neither path")


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A method with its hyper-parameters (β for DPO/ORPO, λ and its disturbance for IFT)."""

    name: str
    method: str
    beta: float = 0.0
    max_lambda: float = 0.2
    lambda_disturb: str | None = None
    lambda_disturb_std: float = 0.5


@dataclass(frozen=True, order=True)
class Setting:
    """How a run is optimised: optimiser, lr schedule, learning rate, number of steps."""

    optimizer: str
    schedule: str
    lr: float
    steps: int
    warmup_ratio: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.optimizer} {self.schedule} lr {self.lr:g} {self.steps} steps"


@dataclass(frozen=True)
class StudyConfig:
    seeds: int
    discount: float
    maps: tuple[tuple[str, tuple[str, ...]], ...]  # (name, rows), in config order
    hidden_size: int
    activation: str
    expert_steps: int
    expert_lr: float
    grid: tuple[Setting, ...]
    variants: tuple[Variant, ...]
    paper_variants: tuple[tuple[str, str], ...]  # (method, variant name), in METHODS order
    ift: IFTShared
    anchor: Setting
    anchor_tolerance: float
    nlp_like: Setting
    interval: float
    move_threshold: float
    curve_points: tuple[int, ...]

    def variants_of(self, method: str) -> list[Variant]:
        return [variant for variant in self.variants if variant.method == method]

    def paper_variant(self, method: str) -> str:
        return dict(self.paper_variants)[method]

    @property
    def settings(self) -> tuple[Setting, ...]:
        """The grid and then the anchor (the anchor may not coincide with a grid point)."""
        return (*self.grid, self.anchor)


def _value(cfg: Mapping, key: str):
    return config_value(cfg, key, "frozen_lake_study")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return value


def _positive(value, key: str) -> float:
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"{key}: must be a number > 0, got {value!r}")
    return float(value)


def _between(value, key: str, low: float, high: float, *, open_high: bool = False, open_low: bool = False) -> float:
    if (not _is_number(value) or value < low or value > high or (open_high and value == high)
            or (open_low and value == low)):
        bounds = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ConfigError(f"{key}: must be a number in {bounds}, got {value!r}")
    return float(value)


def _choice(value, key: str, allowed) -> object:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown value {value!r}; allowed values: {list(allowed)}")
    return value


def _list(cfg: Mapping, key: str) -> list:
    value = _value(cfg, key)
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key}: must be a non-empty list, got {value!r}")
    if len(set(map(repr, value))) != len(value):
        raise ConfigError(f"{key}: repeated values in {list(value)}")
    return list(value)


def _variant(name: str, spec) -> Variant:
    key = f"variants.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{key}: must be a mapping with a 'method', got {spec!r}")
    allowed = {"sft": {"method"}, "ift": {"method", "max_lambda", "lambda_disturb", "lambda_disturb_std"},
               "dpo": {"method", "beta"}, "orpo": {"method", "beta"}}
    method = _choice(spec.get("method"), f"{key}.method", METHODS)
    unknown = sorted(set(spec) - allowed[method])
    if unknown:
        raise ConfigError(f"{key}: options {unknown} do not apply to {method}; allowed: {sorted(allowed[method])}")
    if method in ("dpo", "orpo") and "beta" not in spec:
        raise ConfigError(f"{key}.beta: missing (a {method} variant needs its β)")
    variant = Variant(name=name, method=method)
    if method == "dpo":
        variant = Variant(name, method, beta=_positive(spec["beta"], f"{key}.beta"))
    elif method == "orpo":
        variant = Variant(name, method, beta=_between(spec["beta"], f"{key}.beta", 0.0, float("inf")))
    elif method == "ift":
        variant = Variant(
            name, method,
            max_lambda=_between(spec.get("max_lambda", 0.2), f"{key}.max_lambda", 0.0, 1.0),
            lambda_disturb=_choice(spec.get("lambda_disturb"), f"{key}.lambda_disturb", LAMBDA_DISTURBANCES),
            lambda_disturb_std=_between(spec.get("lambda_disturb_std", 0.5), f"{key}.lambda_disturb_std", 0.0,
                                        float("inf")),
        )
    return variant


def _setting(cfg: Mapping, key: str, *, schedule: str, warmup_ratio: float) -> Setting:
    return Setting(
        optimizer=_choice(_value(cfg, f"{key}.optimizer"), f"{key}.optimizer", STUDY_OPTIMIZERS),
        schedule=schedule,
        lr=_positive(_value(cfg, f"{key}.lr"), f"{key}.lr"),
        steps=_int(_value(cfg, f"{key}.steps"), f"{key}.steps", 1),
        warmup_ratio=warmup_ratio,
    )


def study_config_from_dict(cfg: Mapping) -> StudyConfig:
    """Validate the (resolved) ``conf/frozen_lake_study.yaml`` content; every error names its key."""
    maps_cfg = _value(cfg, "maps")
    if not isinstance(maps_cfg, Mapping) or not maps_cfg:
        raise ConfigError(f"maps: must be a non-empty mapping name -> rows, got {maps_cfg!r}")
    discount = _between(_value(cfg, "discount"), "discount", 0.0, 1.0, open_low=True, open_high=True)
    maps = []
    for name, rows in maps_cfg.items():
        try:
            rows = check_map(rows)
            build_problem(rows, discount)  # exactly two S->G paths of different lengths
        except ValueError as error:
            raise ConfigError(f"maps.{name}: {error}") from error
        maps.append((str(name), rows))

    optimizers = [_choice(value, f"grid.optimizers[{index}]", STUDY_OPTIMIZERS)
                  for index, value in enumerate(_list(cfg, "grid.optimizers"))]
    schedule = _choice(_value(cfg, "grid.schedule"), "grid.schedule", SCHEDULES)
    warmup_ratio = _between(_value(cfg, "grid.warmup_ratio"), "grid.warmup_ratio", 0.0, 1.0, open_high=True)
    lrs = [_positive(value, f"grid.lrs[{index}]") for index, value in enumerate(_list(cfg, "grid.lrs"))]
    steps = [_int(value, f"grid.steps[{index}]", 1) for index, value in enumerate(_list(cfg, "grid.steps"))]
    grid = tuple(Setting(optimizer, schedule, lr, count, warmup_ratio)
                 for optimizer in optimizers for lr in lrs for count in steps)

    variants_cfg = _value(cfg, "variants")
    if not isinstance(variants_cfg, Mapping) or not variants_cfg:
        raise ConfigError(f"variants: must be a non-empty mapping name -> options, got {variants_cfg!r}")
    variants = tuple(_variant(str(name), spec) for name, spec in variants_cfg.items())
    missing = [method for method in METHODS if not any(variant.method == method for variant in variants)]
    if missing:
        raise ConfigError(f"variants: no variant of {missing}; the claims compare all of {list(METHODS)}")
    paper_cfg = _value(cfg, "paper_variants")
    if not isinstance(paper_cfg, Mapping) or set(paper_cfg) != set(METHODS):
        raise ConfigError(f"paper_variants: must map each of {list(METHODS)} to a variant name, got {paper_cfg!r}")
    for method, name in paper_cfg.items():
        if not any(variant.name == name and variant.method == method for variant in variants):
            raise ConfigError(f"paper_variants.{method}: {name!r} is not a {method} variant of 'variants'")

    anchor_schedule = _choice(_value(cfg, "anchor.schedule"), "anchor.schedule", SCHEDULES)
    anchor = _setting(cfg, "anchor", schedule=anchor_schedule,
                      warmup_ratio=warmup_ratio if anchor_schedule == "cosine" else 0.0)
    nlp_like = _setting(cfg, "nlp_like", schedule=schedule, warmup_ratio=warmup_ratio)
    if nlp_like not in grid:
        raise ConfigError(f"nlp_like: {nlp_like.label} is not a point of the grid")
    curve_points = tuple(_int(value, f"measures.curve_points[{index}]", 0)
                         for index, value in enumerate(_list(cfg, "measures.curve_points")))
    return StudyConfig(
        seeds=_int(_value(cfg, "seeds"), "seeds", 2),  # an interval over seeds needs at least two
        discount=discount,
        maps=tuple(maps),
        hidden_size=_int(_value(cfg, "policy.hidden_size"), "policy.hidden_size", 1),
        activation=_choice(_value(cfg, "policy.activation"), "policy.activation", tuple(ACTIVATIONS)),
        expert_steps=_int(_value(cfg, "expert.steps"), "expert.steps", 1),
        expert_lr=_positive(_value(cfg, "expert.lr"), "expert.lr"),
        grid=grid,
        variants=variants,
        paper_variants=tuple((method, str(paper_cfg[method])) for method in METHODS),
        ift=IFTShared(
            gamma=_between(_value(cfg, "ift.gamma"), "ift.gamma", 0.0, 1.0),
            propagation_type=_choice(_value(cfg, "ift.propagation_type"), "ift.propagation_type", PROPAGATION_TYPES),
            propagation_norm=_choice(_value(cfg, "ift.propagation_norm"), "ift.propagation_norm", PROPAGATION_NORMS),
        ),
        anchor=anchor,
        anchor_tolerance=_positive(_value(cfg, "anchor_tolerance"), "anchor_tolerance"),
        nlp_like=nlp_like,
        interval=_between(_value(cfg, "measures.interval"), "measures.interval", 0.0, 1.0, open_low=True,
                          open_high=True),
        move_threshold=_between(_value(cfg, "measures.move_threshold"), "measures.move_threshold", 0.0, 1.0,
                                open_low=True, open_high=True),
        curve_points=tuple(sorted(set(curve_points))),
    )


# --------------------------------------------------------------------------------------------------------
# Measures on policies
# --------------------------------------------------------------------------------------------------------


def total_variation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``[..., S]``: half the L1 distance between two π(.|s)."""
    return 0.5 * np.abs(first - second).sum(-1)


def moved_states(initial: np.ndarray, final: np.ndarray, optimal: np.ndarray, decisions: np.ndarray,
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``[S]`` masks (toward, away): decision states whose π(.|s) moved by more than ``threshold`` (total
    variation), toward π* if the squared error to π*(.|s) shrank, else away. Other states are False in both."""
    is_decision = np.zeros(initial.shape[0], dtype=bool)
    is_decision[decisions] = True
    moved = (total_variation(initial, final) > threshold) & is_decision
    closer = ((final - optimal) ** 2).sum(-1) < ((initial - optimal) ** 2).sum(-1)
    return moved & closer, moved & ~closer


def state_categories(problem: Problem) -> dict[str, list[int]]:
    """The decision states by their relation to the two trajectories (see :data:`CATEGORIES`)."""
    chosen, rejected = set(problem.optimal.states), dict(zip(problem.suboptimal.states, problem.suboptimal.actions))
    groups: dict[str, list[int]] = {category: [] for category in CATEGORIES}
    for state in problem.lake.decision_states.tolist():
        if state in chosen and state in rejected:
            groups["both paths"].append(state)
        elif state in chosen:
            groups["chosen only"].append(state)
        elif state in rejected:
            weight = problem.optimal_probs[state, rejected[state]]
            key = "rejected: π*'s action" if weight == 1 else "rejected: not π*'s" if weight == 0 else "rejected: tie"
            groups[key].append(state)
        else:
            groups["neither path"].append(state)
    return groups


def mse_by_category(probs: np.ndarray, problem: Problem) -> dict[str, float]:
    """Each category's share of the policy MSE: Σ over its states of mean_a (π - π*)², / #decision states.
    The shares add up to the policy MSE."""
    per_state = ((probs - problem.optimal_probs) ** 2).mean(-1)
    count = len(problem.lake.decision_states)
    return {category: float(per_state[states].sum() / count) for category, states in state_categories(problem).items()}


def own_action_counts(problem: Problem) -> dict[str, int]:
    """How many of the rejected path's actions are π*'s own (π* = 1 on it), tied, or not π*'s (π* = 0)."""
    weights = [problem.optimal_probs[s, a] for s, a in zip(problem.suboptimal.states, problem.suboptimal.actions)]
    return {"own": sum(w == 1 for w in weights), "tie": sum(0 < w < 1 for w in weights),
            "not_own": sum(w == 0 for w in weights), "steps": len(weights)}


def paired_verdict(differences: np.ndarray, level: float) -> tuple[str, float, float, float]:
    """(verdict, mean, low, high) of the two-sided t interval of the mean of paired differences X - Y.

    holds: the interval lies below 0 (X lower); opposite: above 0; inconclusive: it contains 0 (or the
    differences are all exactly 0)."""
    from scipy import stats

    differences = np.asarray(differences, dtype=np.float64)
    mean = float(differences.mean())
    half = float(stats.t.ppf(0.5 + level / 2, differences.size - 1) * differences.std(ddof=1)
                 / math.sqrt(differences.size))
    low, high = mean - half, mean + half
    verdict = HOLDS if high < 0 else OPPOSITE if low > 0 else INCONCLUSIVE
    return verdict, mean, low, high


# --------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    map: str
    setting: Setting
    variant: str
    method: str
    seed: int
    policy_mse: float
    chosen_mse: float  # over the optimal (chosen) trajectory's states
    rejected_mse: float  # over the sub-optimal (rejected) trajectory's states
    param_mse: float
    success: bool  # the greedy rollout walks the optimal path to G
    toward: np.ndarray  # [S] bool, see moved_states
    away: np.ndarray
    off_mass: np.ndarray  # [S] final off-trajectory mass (NaN off the trajectories)
    mse_curve: np.ndarray  # [steps + 1]
    off_curve: np.ndarray  # [steps + 1] mean off-trajectory mass over the trajectory states
    checkpoint_probs: np.ndarray  # [len(checkpoints), S, A] (NaN after the run's end)
    probs: np.ndarray  # [S, A] final π


@dataclass
class MapResult:
    name: str
    problem: Problem
    initial_probs: dict[int, np.ndarray]  # seed -> π of the initial policy
    records: list[RunRecord]
    checkpoints: tuple[int, ...]
    anchor_check: dict | None = None  # batched vs per-run trainer at the anchor (ring map only)

    def select(self, setting: Setting, variant: str) -> list[RunRecord]:
        """The records of one (setting, variant), ordered by seed."""
        return sorted((r for r in self.records if r.setting == setting and r.variant == variant), key=lambda r: r.seed)


@dataclass
class StudyResult:
    config: StudyConfig
    maps: list[MapResult]
    seconds: float = 0.0
    map_seconds: dict[str, float] = field(default_factory=dict)


def _run_specs(config: StudyConfig) -> tuple[list[RunSpec], list[tuple[Setting, Variant | None, int]]]:
    specs, keys = [], []
    for setting in config.settings:
        for variant in config.variants:
            for seed in range(config.seeds):
                specs.append(RunSpec(
                    seed=seed, method=variant.method, optimizer=setting.optimizer, lr=setting.lr,
                    steps=setting.steps, schedule=setting.schedule, warmup_ratio=setting.warmup_ratio,
                    beta=variant.beta, max_lambda=variant.max_lambda, lambda_disturb=variant.lambda_disturb,
                    lambda_disturb_std=variant.lambda_disturb_std))
                keys.append((setting, variant, seed))
    for seed in range(config.seeds):  # the expert networks, one per seed
        specs.append(RunSpec(seed=seed, method=EXPERT_METHOD, optimizer="adam", lr=config.expert_lr,
                             steps=config.expert_steps))
        keys.append((None, None, seed))
    return specs, keys


def run_map(config: StudyConfig, name: str, rows: tuple[str, ...]) -> MapResult:
    """Every setting x variant x seed on one map, in one batch."""
    problem = build_problem(rows, config.discount)
    lake = problem.lake
    decisions = lake.decision_states
    batch_problem = BatchProblem(lake.next_state, problem.optimal_probs, decisions, problem.optimal, problem.suboptimal)
    specs, keys = _run_specs(config)
    result = train_batch(batch_problem, specs, hidden_size=config.hidden_size, activation=config.activation,
                         ift_shared=config.ift, checkpoints=config.curve_points)

    def flat(params, row):
        return np.concatenate([tensor[row].double().numpy().ravel() for tensor in params])

    expert_rows = {seed: row for row, (setting, _, seed) in enumerate(keys) if setting is None}
    # each expert run starts from its seed's initialisation, so its initial weights are the seed's initial policy
    initial_probs = {seed: _probs_of(result.initial_params, row, config.activation) for seed, row in expert_rows.items()}
    optimal_path = (*problem.optimal.states, lake.goal)
    chosen_states, rejected_states = np.asarray(problem.optimal.states), np.asarray(problem.suboptimal.states)
    records = []
    for row, (setting, variant, seed) in enumerate(keys):
        if setting is None:
            continue
        probs = result.final_probs[row]
        toward, away = moved_states(initial_probs[seed], probs, problem.optimal_probs, decisions,
                                    config.move_threshold)
        error = (probs - problem.optimal_probs) ** 2
        records.append(RunRecord(
            map=name, setting=setting, variant=variant.name, method=variant.method, seed=seed,
            policy_mse=float(error[decisions].mean()),
            chosen_mse=float(error[chosen_states].mean()),
            rejected_mse=float(error[rejected_states].mean()),
            param_mse=float(np.mean((flat(result.final_params, row) - flat(result.final_params, expert_rows[seed]))
                                    ** 2)),
            success=greedy_rollout(lake, probs) == optimal_path,
            toward=toward, away=away,
            off_mass=off_trajectory_mass(probs, problem.optimal, problem.suboptimal),
            mse_curve=result.mse_curves[row, : setting.steps + 1],
            off_curve=result.off_curves[row, : setting.steps + 1],
            checkpoint_probs=result.checkpoint_probs[row],
            probs=probs,
        ))
    for seed, row in expert_rows.items():
        records.append(_expert_record(name, problem, seed, result.final_probs[row], config))
    return MapResult(name, problem, initial_probs, records, result.checkpoints)


def _probs_of(params, row: int, activation: str) -> np.ndarray:
    import torch

    from ift.frozen_lake.batched import state_logits

    with torch.no_grad():
        logits = state_logits([tensor[row : row + 1] for tensor in params], activation)
        return torch.softmax(logits, -1).double().numpy()[0]


def _expert_record(name: str, problem: Problem, seed: int, probs: np.ndarray, config: StudyConfig) -> RunRecord:
    """The expert network as a record (setting = the expert's own optimisation), for the report's reference row."""
    decisions = problem.lake.decision_states
    error = (probs - problem.optimal_probs) ** 2
    empty = np.zeros(probs.shape[0], dtype=bool)
    return RunRecord(
        map=name, setting=Setting("adam", "constant", config.expert_lr, config.expert_steps), variant=EXPERT_METHOD,
        method=EXPERT_METHOD, seed=seed, policy_mse=float(error[decisions].mean()),
        chosen_mse=float(error[list(problem.optimal.states)].mean()),
        rejected_mse=float(error[list(problem.suboptimal.states)].mean()), param_mse=0.0,
        success=greedy_rollout(problem.lake, probs) == (*problem.optimal.states, problem.lake.goal),
        toward=empty, away=empty, off_mass=off_trajectory_mass(probs, problem.optimal, problem.suboptimal),
        mse_curve=np.array([]), off_curve=np.array([]), checkpoint_probs=np.empty((0,)), probs=probs)


def anchor_check(config: StudyConfig, map_result: MapResult) -> dict:
    """Train the anchor setting with the frozen_lake stage's own per-run code (``run_seed``) and compare its
    final policy MSE with the batched trainer's, per paper variant and seed. Raises if they differ by more
    than ``anchor_tolerance``: the study's trainer would then not be the stage's."""
    anchor = config.anchor
    if anchor.schedule != "constant":
        return {"checked": False, "reason": "the per-run trainer has no lr schedule"}
    paper = dict(config.paper_variants)
    variant = {v.name: v for v in config.variants}
    ift, dpo, orpo = variant[paper["ift"]], variant[paper["dpo"]], variant[paper["orpo"]]
    stage = ExperimentConfig(
        map=map_result.problem.lake.rows, discount=config.discount, seeds=config.seeds, methods=METHODS,
        hidden_size=config.hidden_size, activation=config.activation, steps=anchor.steps, lr=anchor.lr,
        optimizer=anchor.optimizer, expert_steps=config.expert_steps, expert_lr=config.expert_lr,
        options=MethodOptions(
            ift=IFTOptions(max_lambda=ift.max_lambda, min_lambda=0.0, lambda_disturb=ift.lambda_disturb,
                           disturb_std=ift.lambda_disturb_std, gamma=config.ift.gamma,
                           propagation_type=config.ift.propagation_type, propagation_side="left",
                           propagation_norm=config.ift.propagation_norm),
            dpo_beta=dpo.beta, orpo_beta=orpo.beta),
    )
    if anchor.optimizer not in ("adam",):
        return {"checked": False, "reason": f"the per-run trainer has no {anchor.optimizer}"}
    differences = {}
    for seed in range(config.seeds):
        for run in run_seed(stage, map_result.problem, seed):
            if run.method in METHODS:
                batched = map_result.select(anchor, paper[run.method])[seed]
                differences[f"{run.method} seed {seed}"] = abs(batched.policy_mse - run.policy_mse)
    worst = max(differences.values())
    if worst > config.anchor_tolerance:
        raise RuntimeError(f"anchor: the batched trainer differs from the frozen_lake stage's by {worst:.3g} in "
                           f"policy MSE (> anchor_tolerance {config.anchor_tolerance:g}): {differences}")
    return {"checked": True, "max_abs_policy_mse_difference": worst, "runs": len(differences)}


def run_study(config: StudyConfig, *, check_anchor: bool = True, log=print) -> StudyResult:
    """All maps, one batch each; then the anchor check on the map that is the frozen_lake stage's."""
    started = time.perf_counter()
    maps, seconds = [], {}
    for name, rows in config.maps:
        map_started = time.perf_counter()
        maps.append(run_map(config, name, rows))
        seconds[name] = time.perf_counter() - map_started
        log(f"  map {name}: {len(maps[-1].records)} runs in {seconds[name]:.1f} s")
    if check_anchor:
        stage_map = ExperimentConfig().map
        for map_result in maps:
            if map_result.problem.lake.rows == stage_map:
                map_result.anchor_check = anchor_check(config, map_result)
                log(f"  anchor check on map {map_result.name}: {map_result.anchor_check}")
    return StudyResult(config, maps, time.perf_counter() - started, seconds)
