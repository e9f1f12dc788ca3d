"""Tests of the Frozen Lake experiment (ift.frozen_lake).

References are independent of the code under test: the map's paths and values are worked out by hand
(a breadth-first search and discount powers), the dynamics are checked by stepping gymnasium itself, the
intuition states by a naive loop from the spec, the DPO/ORPO losses by their formulas on per-step sums.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, REPO_ROOT
from ift.frozen_lake.env import (
    DEFAULT_MAP,
    greedy_rollout,
    make_lake,
    optimal_policy_matrix,
    preference_trajectories,
    simple_paths,
    value_iteration,
)
from ift.frozen_lake.experiment import (
    EXPERT,
    INITIAL,
    ConfigError,
    ExperimentConfig,
    build_problem,
    config_from_dict,
    policy_mse,
    run_experiment,
)
from ift.frozen_lake.methods import (
    IFTOptions,
    MethodOptions,
    TrajectoryBatch,
    dpo_objective,
    expert_objective,
    ift_objective,
    intuition_states,
    make_objective,
    orpo_objective,
    sft_objective,
    train,
)
from ift.frozen_lake.policy import init_policy, policy_matrix

LEFT, DOWN, RIGHT, UP = range(4)
# The default map, worked out by hand (state = 4 * row + column):
#   S F F F      optimal:     0 -> 1 -> 2 -> 3 -> 7(G)                        right, right, right, down
#   F H H G      sub-optimal: 0 -> 4 -> 8 -> 12 -> 13 -> 14 -> 15 -> 11 -> 7  down x3, right x3, up x2
#   F H H F
#   F F F F
OPTIMAL_PATH = (0, 1, 2, 3, 7)
SUBOPTIMAL_PATH = (0, 4, 8, 12, 13, 14, 15, 11, 7)
DECISION_STATES = (0, 1, 2, 3, 4, 8, 11, 12, 13, 14, 15)
TIED_STATE = 8  # row 2, column 0: 6 steps to G both ways (down or up)

FAST = ExperimentConfig(seeds=2, steps=15, expert_steps=40)
# The same with a seeded λ disturbance and warm-up, so determinism covers IFT's λ noise too.
FAST_NOISY = ExperimentConfig(
    seeds=2, steps=15, expert_steps=40,
    options=MethodOptions(ift=IFTOptions(lambda_schedule="linear", min_lambda=0.0, lambda_disturb="normal"),
                          lambda_warmup_steps=5),
)


@pytest.fixture(scope="module")
def problem():
    return build_problem(DEFAULT_MAP, discount=0.9)


def compose_frozen_lake(overrides: list[str], root: Path) -> dict:
    """conf/frozen_lake.yaml as the CLI sees it (resolved), with paths rooted at ``root``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="frozen_lake", overrides=[*overrides, f"paths.root={root}"])
    return OmegaConf.to_container(cfg, resolve=True)


# --------------------------------------------------------------------------------------------------------
# The MDP: map, dynamics, value iteration
# --------------------------------------------------------------------------------------------------------


def test_map_has_exactly_the_two_known_paths_and_gymnasium_walks_them():
    lake = make_lake(DEFAULT_MAP)
    assert simple_paths(lake) == [OPTIMAL_PATH, SUBOPTIMAL_PATH]
    env = gym.make("FrozenLake-v1", desc=list(DEFAULT_MAP), is_slippery=False)
    for path, actions in ((OPTIMAL_PATH, (RIGHT, RIGHT, RIGHT, DOWN)),
                          (SUBOPTIMAL_PATH, (DOWN, DOWN, DOWN, RIGHT, RIGHT, RIGHT, UP, UP))):
        state, _ = env.reset(seed=0)
        visited, reward, terminated = [state], 0.0, False
        for action in actions:
            state, reward, terminated, _, _ = env.step(action)
            visited.append(state)
        assert tuple(visited) == path and reward == 1.0 and terminated


def _bfs_steps_to_goal(lake) -> dict[int, int]:
    """Fewest moves from each state to G through non-terminal cells (independent of value iteration)."""
    steps, queue = {lake.goal: 0}, deque([lake.goal])
    while queue:
        target = queue.popleft()
        for state in range(lake.num_states):
            if state not in steps and not lake.terminal[state] and target in lake.next_state[state]:
                steps[state] = steps[target] + 1
                queue.append(state)
    return steps


def test_value_iteration_finds_the_known_optimal_path_and_values(problem):
    lake, discount = problem.lake, 0.9
    values, _ = value_iteration(lake, discount)
    steps = _bfs_steps_to_goal(lake)
    for state in DECISION_STATES:  # reward 1 on entering G, discounted once per earlier move
        assert values[state] == pytest.approx(discount ** (steps[state] - 1), abs=1e-12)
    assert values[lake.goal] == 0 and all(values[s] == 0 for s in (5, 6, 9, 10))
    assert greedy_rollout(lake, problem.optimal_probs) == OPTIMAL_PATH
    assert problem.optimal.states == OPTIMAL_PATH[:-1]
    assert problem.optimal.actions == (RIGHT, RIGHT, RIGHT, DOWN)
    assert problem.suboptimal.states == SUBOPTIMAL_PATH[:-1]


def test_optimal_policy_matrix_is_one_hot_except_the_tie(problem):
    probs = problem.optimal_probs
    expected_action = {0: RIGHT, 1: RIGHT, 2: RIGHT, 3: DOWN, 4: UP, 11: UP, 12: RIGHT, 13: RIGHT, 14: RIGHT,
                       15: UP}
    for state, action in expected_action.items():
        assert probs[state].tolist() == [1.0 if a == action else 0.0 for a in range(4)]
    assert probs[TIED_STATE].tolist() == [0.0, 0.5, 0.0, 0.5]
    assert np.allclose(probs.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "rows, message",
    [
        (("SH", "HG"), "no path"),
        (("SFF", "FFF", "FFG"), "exactly one optimal and one longer"),  # many paths
        (("SFG",), "exactly one optimal and one longer"),  # a single path
        (("SFFX", "FHHG"), "letters"),
        (("SFF", "FG"), "equal length"),
        (("SFFF", "FHHF"), "one S and one G"),
    ],
)
def test_bad_maps_are_rejected(rows, message):
    with pytest.raises(ValueError, match=message):
        build_problem(rows, discount=0.9)


def test_optimal_policy_matrix_spreads_ties_uniformly():
    lake = make_lake(("SFF", "FHF", "FFG"))  # two equally short paths: S is tied between down and right
    _, q_values = value_iteration(lake, 0.9)
    assert optimal_policy_matrix(lake, q_values)[lake.start].tolist() == [0.0, 0.5, 0.5, 0.0]
    with pytest.raises(ValueError, match="exactly one optimal"):
        preference_trajectories(lake, optimal_policy_matrix(lake, q_values))


# --------------------------------------------------------------------------------------------------------
# The methods: mapping onto ift.losses
# --------------------------------------------------------------------------------------------------------


def _naive_step_logps(policy, states, actions) -> list[float]:
    logps = []
    for state, action in zip(states, actions):
        encoding = torch.zeros(policy.num_states)
        encoding[state] = 1.0
        logps.append(torch.log_softmax(policy(encoding), -1)[action])
    return logps


def test_trajectory_batch_pads_and_masks(problem):
    pair = TrajectoryBatch.of([problem.optimal, problem.suboptimal])
    assert pair.states.shape == (2, 8)
    assert pair.mask.sum(1).tolist() == [4, 8]
    assert pair.states[0, :4].tolist() == list(OPTIMAL_PATH[:-1])
    assert pair.actions[1].tolist() == list(problem.suboptimal.actions)


def test_intuition_states_match_a_naive_loop(problem):
    lake = problem.lake
    policy = init_policy(3, lake.num_states, 4, 16, "tanh")
    batch = TrajectoryBatch.of([problem.optimal, problem.suboptimal])
    probs = policy_matrix(policy)
    expected = []
    for trajectory in (problem.optimal, problem.suboptimal):
        row = [trajectory.states[0]]  # s̃_0 = s_0
        for t in range(1, len(trajectory)):
            previous = trajectory.states[t - 1]
            row.append(int(lake.next_state[previous, int(np.argmax(probs[previous]))]))
        expected.append(row + list(batch.states[len(expected), len(row):]))  # padding keeps s_t
    got = intuition_states(policy, batch, torch.as_tensor(lake.next_state))
    assert got.tolist() == expected


def test_ift_with_zero_lambda_and_gamma_is_sft_and_lambda_changes_it(problem):
    policy = init_policy(0, problem.lake.num_states, 4, 16, "tanh")
    batch = TrajectoryBatch.of([problem.optimal])
    transitions = torch.as_tensor(problem.lake.next_state)
    plain = ift_objective(policy, batch, transitions, 0.0, IFTOptions(gamma=0.0))
    assert plain.item() == pytest.approx(sft_objective(policy, batch).item(), abs=1e-7)
    naive_sft = -sum(_naive_step_logps(policy, problem.optimal.states, problem.optimal.actions)) / 4
    assert plain.item() == pytest.approx(naive_sft.item(), abs=1e-6)
    mixed = ift_objective(policy, batch, transitions, 0.2, IFTOptions(gamma=0.0))
    assert mixed.item() != pytest.approx(plain.item(), abs=1e-6)


def _naive_ift_objective(policy, lake, trajectories, lam, gamma):
    """IFT's objective written out from the spec with loops: intuition states (s̃_0 = s_0, s̃_t = greedy successor of
    s_{t-1}), inputs (1-λ)·onehot(s_t) + λ·onehot(s̃_t), c_t = -log π_t / T, W_t = Σ_{j≥t} γ^{j-t} c_j,
    w_t = T·W_t / Σ W, per-trajectory (1/T) Σ w_t·(-log π_t), mean over the trajectories."""
    probs = policy_matrix(policy)
    per_trajectory = []
    for trajectory in trajectories:
        states, actions, steps = trajectory.states, trajectory.actions, len(trajectory)
        intuition = [states[0]] + [int(lake.next_state[states[t - 1], int(np.argmax(probs[states[t - 1]]))])
                                   for t in range(1, steps)]
        nll = []
        for t in range(steps):
            encoding = torch.zeros(policy.num_states)
            encoding[states[t]] += 1.0 - lam
            encoding[intuition[t]] += lam
            nll.append(-torch.log_softmax(policy(encoding), -1)[actions[t]])
        items = [value / steps for value in nll]
        future = [sum(gamma ** (j - t) * items[j] for j in range(t, steps)) for t in range(steps)]
        weights = [steps * value / sum(future) for value in future]
        per_trajectory.append(sum(w * value for w, value in zip(weights, nll)) / steps)
    return sum(per_trajectory) / len(per_trajectory)


@pytest.mark.parametrize("gamma", [0.95, 0.5])
def test_ift_objective_with_gamma_matches_a_naive_loop_and_differs_from_gamma_zero(problem, gamma):
    """γ > 0 (the default 0.95 and a non-default 0.5): loss and gradient equal the naive loop; γ = 0 is different."""
    lake = problem.lake
    policy = init_policy(4, lake.num_states, 4, 16, "tanh")
    batch = TrajectoryBatch.of([problem.optimal, problem.suboptimal])  # T = 4 and 8 (padded and masked)
    transitions = torch.as_tensor(lake.next_state)
    options = IFTOptions(gamma=gamma)
    got = ift_objective(policy, batch, transitions, 0.3, options)
    got_grads = torch.autograd.grad(got, list(policy.parameters()))
    expected = _naive_ift_objective(policy, lake, (problem.optimal, problem.suboptimal), 0.3, gamma)
    expected_grads = torch.autograd.grad(expected, list(policy.parameters()))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-6)
    without_gamma = _naive_ift_objective(policy, lake, (problem.optimal, problem.suboptimal), 0.3, 0.0)
    other_gamma = _naive_ift_objective(policy, lake, (problem.optimal, problem.suboptimal), 0.3, 1.45 - gamma)
    for other in (without_gamma, other_gamma):  # the check can tell γ apart, far beyond its tolerance
        assert abs(other.item() - expected.item()) > 1e-3 * expected.item()


def test_dpo_and_orpo_objectives_match_their_formulas(problem):
    lake = problem.lake
    reference = init_policy(0, lake.num_states, 4, 16, "tanh")
    policy = init_policy(1, lake.num_states, 4, 16, "tanh")
    pair = TrajectoryBatch.of([problem.optimal, problem.suboptimal])

    def sums(net, average=False):
        values = []
        for trajectory in (problem.optimal, problem.suboptimal):
            logps = _naive_step_logps(net, trajectory.states, trajectory.actions)
            values.append(sum(logps) / (len(logps) if average else 1))
        return values

    (pc, pr), (rc, rr) = sums(policy), sums(reference)
    with torch.no_grad():
        reference_logps = torch.stack([rc, rr])
        expected_dpo = -torch.nn.functional.logsigmoid(0.1 * ((pc - rc) - (pr - rr)))
        assert dpo_objective(policy, pair, reference_logps, beta=0.1).item() == pytest.approx(expected_dpo.item(), rel=1e-5)
        assert dpo_objective(reference, pair, reference_logps, beta=0.1).item() == pytest.approx(math.log(2), rel=1e-6)
        lc, lr = sums(policy, average=True)
        log_odds = (lc - lr) - (torch.log(1 - lc.exp()) - torch.log(1 - lr.exp()))
        expected_orpo = -lc - 0.25 * torch.nn.functional.logsigmoid(log_odds)
        assert orpo_objective(policy, pair, beta=0.25).item() == pytest.approx(expected_orpo.item(), rel=1e-5)


def test_unknown_method_is_rejected(problem):
    with pytest.raises(ValueError, match="unknown method='ppo'"):
        make_objective("ppo", initial_policy=init_policy(0, 16, 4, 8, "tanh"), next_state=problem.lake.next_state,
                       optimal=problem.optimal, suboptimal=problem.suboptimal, options=FAST.options, seed=0, steps=1)


# --------------------------------------------------------------------------------------------------------
# Training behaviour
# --------------------------------------------------------------------------------------------------------


def test_expert_network_reproduces_the_optimal_policy(problem):
    lake, decisions = problem.lake, problem.lake.decision_states
    expert = init_policy(0, lake.num_states, 4, 64, "tanh")
    train(expert, expert_objective(problem.optimal_probs, decisions), steps=300, lr=1e-2, optimizer="adam")
    probs = policy_matrix(expert)
    for state in decisions:
        if state != TIED_STATE:
            assert int(np.argmax(probs[state])) == int(np.argmax(problem.optimal_probs[state]))
    assert probs[TIED_STATE, [DOWN, UP]] == pytest.approx([0.5, 0.5], abs=0.02)
    assert policy_mse(probs, problem.optimal_probs, decisions) < 1e-3
    assert greedy_rollout(lake, probs) == OPTIMAL_PATH


def test_sft_moves_the_optimal_path_states_toward_the_optimal_actions(problem):
    lake = problem.lake
    initial = init_policy(0, lake.num_states, 4, 64, "tanh")
    policy = copy.deepcopy(initial)
    objective = make_objective("sft", initial_policy=initial, next_state=lake.next_state, optimal=problem.optimal,
                               suboptimal=problem.suboptimal, options=FAST.options, seed=0, steps=20)
    train(policy, objective, steps=20, lr=1e-2, optimizer="adam")
    before, after = policy_matrix(initial), policy_matrix(policy)
    for state, action in zip(problem.optimal.states, problem.optimal.actions):
        assert after[state, action] > before[state, action] + 0.3
    path = list(problem.optimal.states)
    assert policy_mse(after, problem.optimal_probs, path) < 0.2 * policy_mse(before, problem.optimal_probs, path)


def test_results_are_deterministic_by_seed():
    first, second = run_experiment(FAST_NOISY), run_experiment(FAST_NOISY)
    for one, two in zip(first.runs, second.runs, strict=True):
        assert (one.method, one.seed, one.policy_mse, one.param_mse, one.mse_curve) == (
            two.method, two.seed, two.policy_mse, two.param_mse, two.mse_curve)
        assert np.array_equal(one.probs, two.probs)
    seed0, seed1 = first.runs_of("ift")
    assert seed0.policy_mse != seed1.policy_mse  # the seed really changes the initialisation
    assert [run.method for run in first.runs_of(INITIAL) + first.runs_of(EXPERT)] == [INITIAL] * 2 + [EXPERT] * 2
    assert all(len(run.mse_curve) == FAST.steps + 1 for m in FAST.methods for run in first.runs_of(m))


def test_every_curve_starts_at_the_initial_policy():
    result = run_experiment(ExperimentConfig(seeds=1, steps=1, expert_steps=1))
    initial = result.runs_of(INITIAL)[0]
    for method in result.config.methods:
        assert result.runs_of(method)[0].mse_curve[0] == initial.policy_mse


# --------------------------------------------------------------------------------------------------------
# Config and CLI
# --------------------------------------------------------------------------------------------------------


def test_yaml_defaults_are_the_documented_ones(tmp_path):
    config = config_from_dict(compose_frozen_lake([], tmp_path))
    assert config == ExperimentConfig()
    assert config.seeds >= 5 and config.options.ift.max_lambda == 0.2 and config.options.ift.gamma == 0.95
    assert config.options.dpo_beta == 0.1 and config.options.orpo_beta == 0.25


@pytest.mark.parametrize(
    "override, key",
    [
        ("ift.max_lambda=1.5", "ift.max_lambda"),
        ("ift.gamma=-0.1", "ift.gamma"),
        ("ift.propagation_side=middle", "ift.propagation_side"),
        ("methods=[sft,ppo]", "methods"),
        ("methods=[sft,sft]", "methods"),
        ("seeds=0", "seeds"),
        ("train.steps=0", "train.steps"),
        ("train.optimizer=lbfgs", "train.optimizer"),
        ("dpo.beta=0", "dpo.beta"),
        ("discount=1.0", "discount"),
        ("map=[SH,HG]", "map"),
        ("map=[SFF,FFF,FFG]", "map"),
    ],
)
def test_bad_config_raises_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError) as error:
        config_from_dict(compose_frozen_lake([override], tmp_path))
    assert str(error.value).startswith(f"{key}:")


def test_cli_writes_the_report_files(tmp_path):
    env = {**os.environ, "IFT_ROOT": str(tmp_path), "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ift.frozen_lake", "seeds=2", "train.steps=5", "expert.steps=5",
               "methods=[sft,ift,dpo,orpo]"]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    report_dir = tmp_path / "report"
    for name in ("frozen_lake.md", "frozen_lake.csv", "frozen_lake.json", "plots/frozen_lake_policies.png",
                 "plots/frozen_lake_mse.png"):
        assert (report_dir / name).stat().st_size > 0, name
    for png in (report_dir / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(report_dir.rglob("*.tmp")), "atomic writes leave no temporary files behind"
    table_rows = [line for line in (report_dir / "frozen_lake.md").read_text().splitlines() if line.startswith("| ")]
    labels = [row.split("|")[1].strip() for row in table_rows[1:]]
    assert labels[0].startswith("initial") and labels[1:5] == ["sft", "ift", "dpo", "orpo"]
    assert all("±" in row for row in table_rows[1:])
    csv_methods = [line.split(",")[0] for line in (report_dir / "frozen_lake.csv").read_text().splitlines()[1:]]
    assert csv_methods == [INITIAL, "sft", "ift", "dpo", "orpo", EXPERT]


def test_cli_rejects_a_bad_value_by_key(tmp_path):
    env = {**os.environ, "IFT_ROOT": str(tmp_path), "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "ift.frozen_lake", "ift.max_lambda=2"], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0 and "ift.max_lambda" in completed.stderr
    assert not (tmp_path / "report").exists()


def test_frozen_lake_reads_the_trainers_own_ift_options_and_refuses_what_it_cannot_train():
    """One IFTOptions for the LM trainer and Frozen Lake (ift.losses); Frozen Lake has no linear form of the loss."""
    import ift.frozen_lake as frozen_lake
    from ift import losses

    assert frozen_lake.IFTOptions is losses.IFTOptions
    problem = build_problem(DEFAULT_MAP, 0.9)
    with pytest.raises(ValueError, match="linear_form"):
        make_objective("ift", initial_policy=init_policy(0, 16, 4, 8, "tanh"), next_state=problem.lake.next_state,
                       optimal=problem.optimal, suboptimal=problem.suboptimal,
                       options=MethodOptions(ift=IFTOptions(linear_form=True)), seed=0, steps=3)
