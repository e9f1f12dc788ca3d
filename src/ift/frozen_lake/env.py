"""The MDP of the experiment: a custom non-slippery FrozenLake map, its dynamics, value iteration, its two paths.

The dynamics are read from gymnasium's ``FrozenLake-v1`` (its transition table ``P``), so the grid rules
(walls keep you in place, holes and the goal end the episode, reward 1 only on entering the goal) are
gymnasium's, not a re-implementation. Everything else works on plain numpy arrays derived from that table.

The default map is a ring of frozen cells around a 2x2 block of holes, with the goal on the ring::

    S F F F
    F H H G
    F H H F
    F F F F

so there are exactly two simple paths from S to G: right-right-right-down (4 steps, optimal) and
down-down-down-right-right-right-up-up (8 steps, sub-optimal). On any ring one cell lies equally far from the
goal both ways (here the cell below-left, row 2 column 0); its optimal policy is spread over the two tied
actions (see :func:`optimal_policy_matrix`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ACTION_NAMES = ("left", "down", "right", "up")  # gymnasium's FrozenLake action ids 0..3
ACTION_ARROWS = ("←", "↓", "→", "↑")
DEFAULT_MAP = ("SFFF", "FHHG", "FHHF", "FFFF")
MAP_LETTERS = "SFHG"
# Q-values closer than this count as tied (value iteration on a deterministic grid gives exact powers of the
# discount, so real ties agree to the last bit; the tolerance only guards against summation order).
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Lake:
    """A FrozenLake map and its deterministic dynamics as arrays (states are row-major cell indices)."""

    rows: tuple[str, ...]
    next_state: np.ndarray  # [S, A] int: the state an action leads to
    reward: np.ndarray  # [S, A] float: reward of taking the action (1 only when it enters the goal)
    terminal: np.ndarray  # [S] bool: holes and the goal end the episode; they carry no decision
    start: int
    goal: int

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]

    @property
    def num_actions(self) -> int:
        return self.next_state.shape[1]

    @property
    def decision_states(self) -> np.ndarray:
        """Non-terminal states (S and F cells): the rows of π(a|s) that the metric compares."""
        return np.flatnonzero(~self.terminal)

    def letter(self, state: int) -> str:
        row, col = self.cell(state)
        return self.rows[row][col]

    def cell(self, state: int) -> tuple[int, int]:
        return divmod(state, len(self.rows[0]))


@dataclass(frozen=True)
class Trajectory:
    """A path as (state, action) steps: ``states[t]`` is where ``actions[t]`` is taken; the goal is not a step."""

    states: tuple[int, ...]
    actions: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.actions)


def check_map(rows: Sequence[str]) -> tuple[str, ...]:
    """The map as a tuple of rows, or a ValueError saying what is wrong with it."""
    if isinstance(rows, str) or not rows or not all(isinstance(row, str) for row in rows):
        raise ValueError(f"map must be a non-empty list of strings (rows), got {rows!r}")
    rows = tuple(rows)
    if len({len(row) for row in rows}) != 1 or not rows[0]:
        raise ValueError(f"map rows must be non-empty and of equal length, got {list(rows)}")
    letters = "".join(rows)
    if set(letters) - set(MAP_LETTERS):
        raise ValueError(f"map may only use the letters {MAP_LETTERS!r}, got {sorted(set(letters) - set(MAP_LETTERS))}")
    if letters.count("S") != 1 or letters.count("G") != 1:
        raise ValueError(f"map needs exactly one S and one G, got {list(rows)}")
    return rows


def make_lake(rows: Sequence[str] = DEFAULT_MAP) -> Lake:
    """Build the non-slippery ``FrozenLake-v1`` for ``rows`` and read its transition table into arrays."""
    import gymnasium as gym

    rows = check_map(rows)
    env = gym.make("FrozenLake-v1", desc=list(rows), is_slippery=False)
    table = env.unwrapped.P
    env.close()
    num_states, num_actions = len(table), len(table[0])
    next_state = np.zeros((num_states, num_actions), dtype=np.int64)
    reward = np.zeros((num_states, num_actions), dtype=np.float64)
    for state in range(num_states):
        for action in range(num_actions):
            ((probability, successor, gain, _done),) = table[state][action]  # non-slippery: one outcome
            assert probability == 1.0, "a non-slippery lake has deterministic transitions"
            next_state[state, action], reward[state, action] = successor, gain
    letters = "".join(rows)
    terminal = np.array([letter in "HG" for letter in letters])
    return Lake(rows, next_state, reward, terminal, start=letters.index("S"), goal=letters.index("G"))


def value_iteration(
    lake: Lake, discount: float = 0.9, tolerance: float = 1e-12, max_iterations: int = 10_000
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal values ``V [S]`` and action values ``Q [S, A]`` by value iteration (terminal states: V = 0).

    Q(s, a) = r(s, a) + discount · V(s') with V(s') = 0 for a terminal s'. A discount < 1 makes shorter paths
    strictly better, which is what makes the short path the unique optimum.
    """
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must lie in (0, 1), got {discount!r}")
    values = np.zeros(lake.num_states)
    for _ in range(max_iterations):
        q_values = lake.reward + discount * np.where(lake.terminal, 0.0, values)[lake.next_state]
        new_values = np.where(lake.terminal, 0.0, q_values.max(axis=1))
        if np.max(np.abs(new_values - values)) < tolerance:
            return new_values, q_values
        values = new_values
    raise RuntimeError(f"value iteration did not converge in {max_iterations} iterations")


def optimal_policy_matrix(lake: Lake, q_values: np.ndarray) -> np.ndarray:
    """π*(a|s) ``[S, A]``: one-hot on the best action; tied best actions share the mass uniformly.

    Terminal rows (holes, goal) are uniform: they carry no decision and the metric leaves them out.
    """
    best = q_values.max(axis=1, keepdims=True)
    is_best = (q_values >= best - TIE_TOLERANCE).astype(np.float64)
    is_best[lake.terminal] = 1.0
    return is_best / is_best.sum(axis=1, keepdims=True)


def greedy_rollout(lake: Lake, probs: np.ndarray, max_steps: int | None = None) -> tuple[int, ...]:
    """States visited from S following argmax π(a|s) until a terminal state, a revisit or ``max_steps``."""
    max_steps = lake.num_states if max_steps is None else max_steps
    visited = [lake.start]
    for _ in range(max_steps):
        state = visited[-1]
        if lake.terminal[state]:
            break
        successor = int(lake.next_state[state, int(np.argmax(probs[state]))])
        if successor in visited:  # a wall bump or a loop: the policy never reaches anything new
            visited.append(successor)
            break
        visited.append(successor)
    return tuple(visited)


def simple_paths(lake: Lake) -> list[tuple[int, ...]]:
    """All cycle-free state sequences from S to G through frozen cells (depth-first, shortest first)."""
    paths: list[tuple[int, ...]] = []

    def extend(path: tuple[int, ...]) -> None:
        state = path[-1]
        if state == lake.goal:
            paths.append(path)
            return
        if lake.terminal[state]:
            return
        for successor in dict.fromkeys(int(s) for s in lake.next_state[state]):
            if successor not in path:
                extend(path + (successor,))

    extend((lake.start,))
    return sorted(paths, key=lambda path: (len(path), path))


def trajectory_of_path(lake: Lake, path: Sequence[int]) -> Trajectory:
    """The (state, action) steps that walk ``path``; each move between neighbours has exactly one action."""
    actions = []
    for state, successor in zip(path[:-1], path[1:]):
        (action,) = np.flatnonzero(lake.next_state[state] == successor)
        actions.append(int(action))
    return Trajectory(states=tuple(int(s) for s in path[:-1]), actions=tuple(actions))


def preference_trajectories(lake: Lake, optimal_probs: np.ndarray) -> tuple[Trajectory, Trajectory]:
    """The (optimal, sub-optimal) trajectories: the map must have exactly two S→G paths of different length.

    The optimal one must also be what the value-iteration policy walks greedily from S, so the "chosen"
    trajectory of DPO/ORPO and the expert data of SFT/IFT are the same thing the metric rewards.
    """
    paths = simple_paths(lake)
    if not paths:
        raise ValueError(f"map has no path from S to G: {list(lake.rows)}")
    if len(paths) != 2 or len(paths[0]) == len(paths[1]):
        lengths = [len(path) - 1 for path in paths]
        raise ValueError(
            f"map must have exactly one optimal and one longer sub-optimal path from S to G; found {len(paths)} "
            f"simple path(s) of lengths {lengths}: {list(lake.rows)}"
        )
    shortest, longer = paths
    walked = greedy_rollout(lake, optimal_probs)
    if walked != shortest:
        raise ValueError(f"the value-iteration policy walks {walked}, not the shortest path {shortest}")
    return trajectory_of_path(lake, shortest), trajectory_of_path(lake, longer)
