"""The experiment: validated config -> per seed, one initial policy, its expert, and one run per method.

Metrics (all against π* from value iteration, over the *decision* states only, i.e. S and F cells; holes and
the goal are terminal, carry no decision and are left out):

* ``policy_mse``: mean over decision states and the 4 actions of (π_θ(a|s) - π*(a|s))².
* ``path_mse``: the same over the states of the optimal trajectory only (the states SFT/IFT train on).
* ``param_mse``: mean over all network parameters of (θ - θ_expert)², where θ_expert is the *expert* network:
  the same initialisation trained by supervised learning on π* for all decision states. It measures how far a
  method's weights end up from a solution that encodes π*, reached from the very same starting point.
* ``follows_optimal_path``: the greedy rollout of π_θ from S walks exactly the optimal path to G.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ift.frozen_lake.env import (
    DEFAULT_MAP,
    Lake,
    Trajectory,
    check_map,
    greedy_rollout,
    make_lake,
    optimal_policy_matrix,
    preference_trajectories,
    value_iteration,
)
from ift.frozen_lake.methods import (
    METHODS,
    OPTIMIZERS,
    IFTOptions,
    MethodOptions,
    expert_objective,
    make_objective,
    train,
)
from ift.frozen_lake.policy import ACTIVATIONS, PolicyNet, init_policy, parameter_vector, policy_matrix
from ift.losses import (
    LAMBDA_DISTURBANCES,
    LAMBDA_SCHEDULES,
    PROPAGATION_NORMS,
    PROPAGATION_SIDES,
    PROPAGATION_TYPES,
)

INITIAL = "initial"  # the row of the untrained policy
EXPERT = "expert"  # the reference row: supervised on π* for all decision states


class ConfigError(ValueError):
    """A bad ``conf/frozen_lake.yaml`` value; the message starts with the offending key."""


@dataclass(frozen=True)
class Problem:
    """The MDP and what value iteration says about it."""

    lake: Lake
    optimal_probs: np.ndarray  # π* [S, A]
    optimal: Trajectory
    suboptimal: Trajectory


@dataclass(frozen=True)
class ExperimentConfig:
    map: tuple[str, ...] = DEFAULT_MAP
    discount: float = 0.9
    seeds: int = 5
    methods: tuple[str, ...] = METHODS
    hidden_size: int = 64
    activation: str = "tanh"
    steps: int = 300
    lr: float = 1e-2
    optimizer: str = "adam"
    expert_steps: int = 1000
    expert_lr: float = 1e-2
    options: MethodOptions = field(default_factory=MethodOptions)


@dataclass(frozen=True)
class RunResult:
    method: str
    seed: int
    policy_mse: float
    path_mse: float
    param_mse: float
    follows_optimal_path: bool
    mse_curve: tuple[float, ...]  # policy_mse before training and after every step (one value for initial/expert)
    probs: np.ndarray  # π_θ(a|s) [S, A]


@dataclass(frozen=True)
class ExperimentResult:
    config: ExperimentConfig
    problem: Problem
    runs: tuple[RunResult, ...]
    seconds: float

    def runs_of(self, method: str) -> list[RunResult]:
        return [run for run in self.runs if run.method == method]

    @property
    def rows(self) -> tuple[str, ...]:
        """Report rows in order: the initial policy, each method, the expert reference."""
        return (INITIAL, *self.config.methods, EXPERT)


def build_problem(rows: tuple[str, ...], discount: float) -> Problem:
    lake = make_lake(rows)
    _, q_values = value_iteration(lake, discount)
    optimal_probs = optimal_policy_matrix(lake, q_values)
    optimal, suboptimal = preference_trajectories(lake, optimal_probs)
    return Problem(lake, optimal_probs, optimal, suboptimal)


def policy_mse(probs: np.ndarray, target: np.ndarray, states) -> float:
    """Mean squared error between two π(a|s) matrices over the rows ``states`` (all actions)."""
    states = np.asarray(states)
    return float(np.mean((probs[states] - target[states]) ** 2))


def run_seed(config: ExperimentConfig, problem: Problem, seed: int) -> list[RunResult]:
    """Initial policy, every method and the expert, all from the initialisation of ``seed``."""
    lake = problem.lake
    decisions, path = lake.decision_states, np.asarray(problem.optimal.states)
    initial = init_policy(seed, lake.num_states, lake.num_actions, config.hidden_size, config.activation)

    def mse_of(policy: PolicyNet) -> float:
        return policy_mse(policy_matrix(policy), problem.optimal_probs, decisions)

    expert = copy.deepcopy(initial)
    train(expert, expert_objective(problem.optimal_probs, decisions),
          steps=config.expert_steps, lr=config.expert_lr, optimizer=config.optimizer)
    expert_parameters = parameter_vector(expert)

    def result(method: str, policy: PolicyNet, curve: list[float]) -> RunResult:
        probs = policy_matrix(policy)
        return RunResult(
            method=method,
            seed=seed,
            policy_mse=policy_mse(probs, problem.optimal_probs, decisions),
            path_mse=policy_mse(probs, problem.optimal_probs, path),
            param_mse=float(np.mean((parameter_vector(policy) - expert_parameters) ** 2)),
            follows_optimal_path=greedy_rollout(lake, probs) == (*problem.optimal.states, lake.goal),
            mse_curve=tuple(curve),
            probs=probs,
        )

    results = [result(INITIAL, initial, [mse_of(initial)])]
    for method in config.methods:
        policy = copy.deepcopy(initial)
        objective = make_objective(
            method,
            initial_policy=initial,
            next_state=lake.next_state,
            optimal=problem.optimal,
            suboptimal=problem.suboptimal,
            options=config.options,
            seed=seed,
            steps=config.steps,
        )
        curve = train(policy, objective, steps=config.steps, lr=config.lr, optimizer=config.optimizer,
                      evaluate=mse_of)
        results.append(result(method, policy, curve))
    results.append(result(EXPERT, expert, [mse_of(expert)]))
    return results


def run_experiment(config: ExperimentConfig) -> ExperimentResult:
    """All seeds (0 .. seeds-1); CPU-deterministic: the numbers depend only on the config."""
    started = time.perf_counter()
    problem = build_problem(config.map, config.discount)
    runs = [run for seed in range(config.seeds) for run in run_seed(config, problem, seed)]
    return ExperimentResult(config, problem, tuple(runs), time.perf_counter() - started)


# --------------------------------------------------------------------------------------------------------
# Config: plain mapping (the Hydra config as a container) -> validated ExperimentConfig
# --------------------------------------------------------------------------------------------------------


def config_value(cfg: Mapping, key: str, config: str = "frozen_lake"):
    """``cfg``'s value at dotted ``key``; a ConfigError naming the key and the config when it is missing."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"{key}: missing from the {config} config")
        node = node[part]
    return node



def _int_at_least(cfg: Mapping, key: str, minimum: int) -> int:
    value = config_value(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return value


def _number_in(cfg: Mapping, key: str, low: float, high: float, *, open_low: bool = False,
               open_high: bool = False) -> float:
    value = config_value(cfg, key)
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not number_ok or value < low or value > high or (open_low and value == low) or (open_high and value == high):
        bounds = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ConfigError(f"{key}: must be a number in {bounds}, got {value!r}")
    return float(value)


def _choice(cfg: Mapping, key: str, allowed) -> object:
    value = config_value(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}: unknown value {value!r}; allowed values: {list(allowed)}")
    return value


def _methods(cfg: Mapping) -> tuple[str, ...]:
    methods = config_value(cfg, "methods")
    if isinstance(methods, str) or not isinstance(methods, list | tuple) or not methods:
        raise ConfigError(f"methods: must be a non-empty list drawn from {list(METHODS)}, got {methods!r}")
    unknown = [method for method in methods if method not in METHODS]
    if unknown or len(set(methods)) != len(methods):
        raise ConfigError(f"methods: unknown or repeated methods in {list(methods)}; allowed values: {list(METHODS)}")
    return tuple(methods)


def _map(cfg: Mapping) -> tuple[str, ...]:
    rows = config_value(cfg, "map")
    try:
        return check_map(rows)
    except ValueError as error:
        raise ConfigError(f"map: {error}") from error


def config_from_dict(cfg: Mapping) -> ExperimentConfig:
    """Validate the (resolved) ``conf/frozen_lake.yaml`` content; every error names its key."""
    inf = float("inf")
    ift = IFTOptions(
        max_lambda=_number_in(cfg, "ift.max_lambda", 0.0, 1.0),
        min_lambda=_number_in(cfg, "ift.min_lambda", 0.0, 1.0),
        lambda_schedule=_choice(cfg, "ift.lambda_schedule", LAMBDA_SCHEDULES),
        lambda_disturb=_choice(cfg, "ift.lambda_disturb", LAMBDA_DISTURBANCES),
        disturb_std=_number_in(cfg, "ift.lambda_disturb_std", 0.0, inf),
        gamma=_number_in(cfg, "ift.gamma", 0.0, 1.0),
        propagation_type=_choice(cfg, "ift.propagation_type", PROPAGATION_TYPES),
        propagation_side=_choice(cfg, "ift.propagation_side", PROPAGATION_SIDES),
        propagation_norm=_choice(cfg, "ift.propagation_norm", PROPAGATION_NORMS),
    )
    config = ExperimentConfig(
        map=_map(cfg),
        discount=_number_in(cfg, "discount", 0.0, 1.0, open_low=True, open_high=True),
        seeds=_int_at_least(cfg, "seeds", 1),
        methods=_methods(cfg),
        hidden_size=_int_at_least(cfg, "policy.hidden_size", 1),
        activation=_choice(cfg, "policy.activation", tuple(ACTIVATIONS)),
        steps=_int_at_least(cfg, "train.steps", 1),
        lr=_number_in(cfg, "train.lr", 0.0, inf, open_low=True),
        optimizer=_choice(cfg, "train.optimizer", OPTIMIZERS),
        expert_steps=_int_at_least(cfg, "expert.steps", 1),
        expert_lr=_number_in(cfg, "expert.lr", 0.0, inf, open_low=True),
        options=MethodOptions(
            ift=ift,
            lambda_warmup_steps=_int_at_least(cfg, "ift.lambda_warmup_steps", 0),
            dpo_beta=_number_in(cfg, "dpo.beta", 0.0, inf, open_low=True),
            orpo_beta=_number_in(cfg, "orpo.beta", 0.0, inf),
        ),
    )
    try:
        build_problem(config.map, config.discount)
    except ValueError as error:
        raise ConfigError(f"map: {error}") from error
    return config
