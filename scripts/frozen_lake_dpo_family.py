"""Frozen Lake: do TDPO's and SimPO's objectives behave as DPO's in this game? (issue 27)

    python scripts/frozen_lake_dpo_family.py            # conf/frozen_lake.yaml's setting, every seed

The paper leaves TDPO and SimPO out of its Frozen Lake figure because their objectives "match DPO's" there. This
trains DPO, SimPO, TDPO1 and TDPO2 on the experiment's one (optimal, sub-optimal) trajectory pair, from the same
initial policy per seed, with the experiment's optimiser, learning rate and step count, and prints per method the
final policy MSE to π* (as `python -m ift.frozen_lake` measures it) and the mean squared distance of its final
policy from DPO's. The losses are ift.losses' own (the ones the language-model trainers are tested against);
a trajectory step is a token, as in ift.frozen_lake.methods. TDPO's per-step KL is over the 4 actions.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ift.frozen_lake.experiment import build_problem, config_from_dict, policy_mse
from ift.frozen_lake.methods import TrajectoryBatch, make_objective, train, trajectory_logps
from ift.frozen_lake.policy import encode_states, init_policy, policy_matrix
from ift.losses import sequence_logps, simpo_loss, tdpo_loss
from ift.paths import CONF_DIR, REPO_ROOT


def step_kl(reference, policy, batch: TrajectoryBatch) -> torch.Tensor:
    """KL(π_ref(·|s_t) ‖ π(·|s_t)) per step ``[B, T]`` (0 on padding): TDPO's per-token term over the actions."""
    inputs = encode_states(batch.states, policy.num_states)
    ref_logp = F.log_softmax(reference(inputs), dim=-1)
    logp = F.log_softmax(policy(inputs), dim=-1)
    return ((ref_logp.exp() * (ref_logp - logp)).sum(-1)) * batch.mask


def simpo_objective(pair: TrajectoryBatch, beta: float = 2.0, gamma_beta_ratio: float = 0.8):
    def objective(policy, step):
        mean_logps = sequence_logps(trajectory_logps(policy, pair), pair.mask, average=True)
        return simpo_loss(mean_logps[:1], mean_logps[1:], beta=beta, gamma_beta_ratio=gamma_beta_ratio)[0].mean()

    return objective


def tdpo_objective(pair: TrajectoryBatch, initial, variant: str, beta: float = 0.1, alpha: float = 0.5):
    reference = copy.deepcopy(initial).requires_grad_(False)
    with torch.no_grad():
        reference_logps = sequence_logps(trajectory_logps(reference, pair), pair.mask)

    def objective(policy, step):
        logratios = sequence_logps(trajectory_logps(policy, pair), pair.mask) - reference_logps
        seq_kl = step_kl(reference, policy, pair).sum(-1)
        return tdpo_loss(logratios[:1], logratios[1:], seq_kl[:1], seq_kl[1:], beta=beta, alpha=alpha,
                         variant=variant)[0].mean()

    return objective


def main() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="frozen_lake", overrides=[f"paths.root={REPO_ROOT}"])
    config = config_from_dict(OmegaConf.to_container(cfg, resolve=True))
    problem = build_problem(config.map, config.discount)
    lake, decisions = problem.lake, problem.lake.decision_states
    pair = TrajectoryBatch.of([problem.optimal, problem.suboptimal])
    methods = ("dpo", "simpo", "tdpo1", "tdpo2")
    mse = {method: [] for method in methods}
    distance = {method: [] for method in methods}
    for seed in range(config.seeds):
        initial = init_policy(seed, lake.num_states, lake.num_actions, config.hidden_size, config.activation)
        objectives = {
            "dpo": make_objective("dpo", initial_policy=initial, next_state=lake.next_state,
                                  optimal=problem.optimal, suboptimal=problem.suboptimal, options=config.options,
                                  seed=seed, steps=config.steps),
            "simpo": simpo_objective(pair),
            "tdpo1": tdpo_objective(pair, initial, "tdpo1"),
            "tdpo2": tdpo_objective(pair, initial, "tdpo2"),
        }
        finals = {}
        for method, objective in objectives.items():
            policy = copy.deepcopy(initial)
            train(policy, objective, steps=config.steps, lr=config.lr, optimizer=config.optimizer)
            finals[method] = policy_matrix(policy)
            mse[method].append(policy_mse(finals[method], problem.optimal_probs, decisions))
        for method in methods:
            distance[method].append(float(np.mean((finals[method][decisions] - finals["dpo"][decisions]) ** 2)))
    print(f"Frozen Lake ({config.steps} steps, {config.optimizer} lr {config.lr}, {config.seeds} seeds): "
          "final policy MSE to pi* (mean ± std over seeds) | mean squared distance from DPO's final policy")
    for method in methods:
        print(f"  {method:6s} {np.mean(mse[method]):.3f} ± {np.std(mse[method], ddof=1):.3f} | "
              f"{np.mean(distance[method]):.4f}")


if __name__ == "__main__":
    main()
