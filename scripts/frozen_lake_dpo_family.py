"""Frozen Lake: do TDPO's and SimPO's objectives behave as DPO's in this game? (issue 27)

    python scripts/frozen_lake_dpo_family.py            # conf/frozen_lake.yaml's setting, every seed

The paper leaves TDPO and SimPO out of its Frozen Lake figure because their objectives "match DPO's" there. This
trains DPO, SimPO, TDPO1 and TDPO2 on the experiment's one (optimal, sub-optimal) trajectory pair, from the same
initial policy per seed, with the experiment's optimiser, learning rate and step count, and prints per method the
final policy MSE to π* (as `python -m ift.frozen_lake` measures it) and the mean squared distance of its final
policy from DPO's. The losses are ift.losses' own (the ones the language-model trainers are tested against);
a trajectory step is a token, as in ift.frozen_lake.methods. TDPO's per-step terms come from the TDPO
trainer's own ift.logprobs.label_logps_and_reference_kl (its KL over the 4 actions).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ift.frozen_lake.experiment import build_problem, config_from_dict, policy_mse
from ift.frozen_lake.methods import TrajectoryBatch, make_objective, train, trajectory_logps
from ift.frozen_lake.policy import encode_states, init_policy, policy_matrix
from ift.logprobs import label_logps_and_reference_kl
from ift.losses import IGNORE_INDEX, sequence_logps, simpo_loss, tdpo_loss
from ift.paths import CONF_DIR, REPO_ROOT


def tdpo_terms(policy, reference, batch: TrajectoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step ``[B, T]``: log π(a_t|s_t) − log π_ref(a_t|s_t) and KL(π_ref(·|s_t) ‖ π(·|s_t)) over the 4 actions, 0 on
    padding, through the TDPO trainer's own ift.logprobs.label_logps_and_reference_kl. That function shifts as a
    language model does (logits at t score label t+1), so the trajectory gets a leading ignored label and a
    trailing unused row of logits."""
    inputs = encode_states(batch.states, policy.num_states)

    def shifted(logits: torch.Tensor) -> torch.Tensor:
        return torch.cat([logits, logits.new_zeros(logits.shape[0], 1, logits.shape[-1])], dim=1)

    labels = torch.cat([torch.full_like(batch.actions[:, :1], IGNORE_INDEX),
                        batch.actions.masked_fill(~batch.mask, IGNORE_INDEX)], dim=1)
    logps, ref_logps, kl, _ = label_logps_and_reference_kl(shifted(policy(inputs)), shifted(reference(inputs)), labels)
    return logps - ref_logps, kl


def simpo_objective(pair: TrajectoryBatch, beta: float = 2.0, gamma_beta_ratio: float = 0.8):
    def objective(policy, step):
        mean_logps = sequence_logps(trajectory_logps(policy, pair), pair.mask, average=True)
        return simpo_loss(mean_logps[:1], mean_logps[1:], beta=beta, gamma_beta_ratio=gamma_beta_ratio)[0].mean()

    return objective


def tdpo_objective(pair: TrajectoryBatch, initial, variant: str, beta: float = 0.1, alpha: float = 0.5):
    reference = copy.deepcopy(initial).requires_grad_(False)

    def objective(policy, step):
        logratios, kl = (terms.sum(-1) for terms in tdpo_terms(policy, reference, pair))
        return tdpo_loss(logratios[:1], logratios[1:], kl[:1], kl[1:], beta=beta, alpha=alpha, variant=variant)[0].mean()

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
