"""The paper's Frozen Lake experiment: SFT, IFT, DPO and ORPO on a small, explainable MDP.

The MDP (:mod:`.env`): a non-slippery gymnasium ``FrozenLake-v1`` on a custom map with exactly one optimal
and one longer sub-optimal path from S to G; π* comes from value iteration. The policy (:mod:`.policy`): a
two-layer fully connected network, one-hot state -> hidden -> 4 action logits. The methods (:mod:`.methods`)
reuse the language-model losses of :mod:`ift.losses` (no copies), with this mapping:

* trajectory = response: step t is a "token" with log-prob log π(a_t | s_t); the response mask is all ones
  over the steps (the pair of different lengths is padded and masked).
* SFT: ``sft_loss`` on the optimal trajectory.
* IFT (the temporal residual connection on this MDP): pass 1 (no gradient) takes the policy's greedy action at
  every true state; the model's "intuition" of state s_t is s̃_t = the state reached from s_{t-1} by the greedy
  action at s_{t-1} (s̃_0 = s_0), built by ``intuition_input_ids`` exactly as the LM's greedy guess at token
  t-1 becomes x̃_t. Pass 2 feeds ``mix_embeddings(onehot(s_t), onehot(s̃_t), λ)`` = (1-λ)·onehot(s_t) +
  λ·onehot(s̃_t) (the network's input encoding is the fixed, not learned, one-hot of the cell; after the first
  linear layer this is the mix of the two states' embeddings) and scores the expert actions with ``ift_loss``
  (γ, propagation options); λ per step from ``lambda_at``.
* DPO: ``dpo_loss`` on summed step log-probs, chosen = optimal, rejected = sub-optimal trajectory,
  reference = a frozen copy of the initial policy. ORPO: ``orpo_loss`` on mean step log-probs (NLL included).

Metrics and the experiment loop: :mod:`.experiment`; the report files: :mod:`.report`; the CLI: ``__main__``.
"""

from ift.frozen_lake.env import (
    DEFAULT_MAP,
    Lake,
    Trajectory,
    greedy_rollout,
    make_lake,
    optimal_policy_matrix,
    preference_trajectories,
    simple_paths,
    value_iteration,
)
from ift.frozen_lake.experiment import (
    ConfigError,
    ExperimentConfig,
    ExperimentResult,
    Problem,
    RunResult,
    build_problem,
    config_from_dict,
    policy_mse,
    run_experiment,
    run_seed,
)
from ift.frozen_lake.methods import METHODS, IFTOptions, MethodOptions, TrajectoryBatch, make_objective, train
from ift.frozen_lake.policy import PolicyNet, init_policy, policy_matrix
from ift.frozen_lake.report import summarize, write_report

__all__ = [
    "DEFAULT_MAP",
    "METHODS",
    "ConfigError",
    "ExperimentConfig",
    "ExperimentResult",
    "IFTOptions",
    "Lake",
    "MethodOptions",
    "PolicyNet",
    "Problem",
    "RunResult",
    "Trajectory",
    "TrajectoryBatch",
    "build_problem",
    "config_from_dict",
    "greedy_rollout",
    "init_policy",
    "make_lake",
    "make_objective",
    "optimal_policy_matrix",
    "policy_matrix",
    "policy_mse",
    "preference_trajectories",
    "run_experiment",
    "run_seed",
    "simple_paths",
    "summarize",
    "train",
    "value_iteration",
    "write_report",
]
