"""SFT, IFT, DPO and ORPO on trajectories, through the language-model loss functions of :mod:`ift.losses`.

A trajectory is treated like a response: step t is a "token" with log-prob log π(a_t | s_t) and the response
mask is all ones over its steps (a chosen/rejected pair of different lengths is padded and masked). Each method
is an *objective*: ``objective(policy, step) -> scalar loss``; :func:`train` runs any objective full-batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ift.frozen_lake.env import Trajectory
from ift.frozen_lake.policy import PolicyNet, action_logps, encode_states
from ift.losses import (
    IGNORE_INDEX,
    IFTOptions,
    dpo_loss,
    ift_loss,
    intuition_input_ids,
    lambda_at,
    lambda_noise,
    mix_embeddings,
    orpo_loss,
    sequence_logps,
    sft_loss,
)

METHODS = ("sft", "ift", "dpo", "orpo")
OPTIMIZERS = ("adam", "sgd")

Objective = Callable[[PolicyNet, int], torch.Tensor]


@dataclass(frozen=True)
class MethodOptions:
    # IFT's knobs are the language-model trainer's own (conf/method/ift.yaml); Frozen Lake uses the λ, disturbance, γ
    # and propagation ones (memory_efficient and chunk_size concern an LM head, which a policy network has none of).
    ift: IFTOptions = field(default_factory=lambda: IFTOptions(min_lambda=0.0))
    lambda_warmup_steps: int = 0  # λ's linear warm-up in optimiser steps (the LM trainer takes the LR schedule's)
    dpo_beta: float = 0.1
    orpo_beta: float = 0.25


@dataclass(frozen=True)
class TrajectoryBatch:
    """Trajectories padded to one length: ``states``, ``actions`` ``[B, T]`` (0 on padding), ``mask`` bool."""

    states: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def of(cls, trajectories: Sequence[Trajectory]) -> TrajectoryBatch:
        length = max(len(trajectory) for trajectory in trajectories)
        states = torch.zeros(len(trajectories), length, dtype=torch.long)
        actions = torch.zeros_like(states)
        mask = torch.zeros_like(states, dtype=torch.bool)
        for row, trajectory in enumerate(trajectories):
            steps = len(trajectory)
            states[row, :steps] = torch.tensor(trajectory.states)
            actions[row, :steps] = torch.tensor(trajectory.actions)
            mask[row, :steps] = True
        return cls(states, actions, mask)


def trajectory_logps(policy: PolicyNet, batch: TrajectoryBatch, inputs: torch.Tensor | None = None) -> torch.Tensor:
    """Per-step log π(a_t | input_t) ``[B, T]``; the inputs default to the one-hot encodings of the states."""
    if inputs is None:
        inputs = encode_states(batch.states, policy.num_states)
    return action_logps(policy(inputs), batch.actions, batch.mask)


def sft_objective(policy: PolicyNet, batch: TrajectoryBatch) -> torch.Tensor:
    return sft_loss(trajectory_logps(policy, batch), batch.mask)


@torch.no_grad()
def intuition_states(policy: PolicyNet, batch: TrajectoryBatch, next_state: torch.Tensor) -> torch.Tensor:
    """IFT pass 1: s̃_0 = s_0, s̃_t = the state reached from s_{t-1} by the policy's greedy action there.

    The greedy successor of s_t is the policy's guess for s_{t+1}, exactly as the argmax at token t is the LM's
    guess for token t+1, so :func:`ift.losses.intuition_input_ids` does the shift (padding keeps s_t).
    """
    greedy_actions = policy(encode_states(batch.states, policy.num_states)).argmax(-1)
    guessed_next_states = next_state[batch.states, greedy_actions]
    labels = batch.states.masked_fill(~batch.mask, IGNORE_INDEX)
    return intuition_input_ids(batch.states, guessed_next_states, labels)


def ift_objective(
    policy: PolicyNet, batch: TrajectoryBatch, next_state: torch.Tensor, lam: float, options: IFTOptions
) -> torch.Tensor:
    """IFT pass 2: log π(a_t | (1-λ)·onehot(s_t) + λ·onehot(s̃_t)), then the propagation-weighted IFT loss."""
    intuitions = intuition_states(policy, batch, next_state)
    mixed = mix_embeddings(
        encode_states(batch.states, policy.num_states), encode_states(intuitions, policy.num_states), lam
    )
    return ift_loss(
        trajectory_logps(policy, batch, inputs=mixed),
        batch.mask,
        gamma=options.gamma,
        propagation_type=options.propagation_type,
        propagation_side=options.propagation_side,
        propagation_norm=options.propagation_norm,
    )


def dpo_objective(
    policy: PolicyNet, pair: TrajectoryBatch, reference_logps: torch.Tensor, beta: float
) -> torch.Tensor:
    """DPO on SUMMED step log-probs; ``pair`` row 0 is chosen, row 1 rejected; ``reference_logps`` likewise."""
    logps = sequence_logps(trajectory_logps(policy, pair), pair.mask)
    losses, _, _ = dpo_loss(logps[:1], logps[1:], reference_logps[:1], reference_logps[1:], beta=beta)
    return losses.mean()


def orpo_objective(policy: PolicyNet, pair: TrajectoryBatch, beta: float) -> torch.Tensor:
    """ORPO on MEAN step log-probs (its NLL term on the chosen trajectory included); rows as in DPO."""
    mean_logps = sequence_logps(trajectory_logps(policy, pair), pair.mask, average=True)
    losses, _ = orpo_loss(mean_logps[:1], mean_logps[1:], beta=beta)
    return losses.mean()


def make_objective(
    method: str,
    *,
    initial_policy: PolicyNet,
    next_state: np.ndarray,
    optimal: Trajectory,
    suboptimal: Trajectory,
    options: MethodOptions,
    seed: int,
    steps: int,
) -> Objective:
    """The per-step loss of ``method``: SFT/IFT see only the optimal trajectory, DPO/ORPO the (optimal,
    sub-optimal) pair; DPO's reference is a frozen copy of ``initial_policy``; IFT's λ noise follows ``seed``."""
    if method not in METHODS:
        raise ValueError(f"unknown method={method!r}; allowed values: {list(METHODS)}")
    expert = TrajectoryBatch.of([optimal])
    pair = TrajectoryBatch.of([optimal, suboptimal])
    if method == "sft":
        return lambda policy, step: sft_objective(policy, expert)
    if method == "ift":
        ift = options.ift
        if ift.linear_form:
            raise ValueError("ift.linear_form: Frozen Lake trains the reference code's form of IFT's loss only")
        transitions = torch.as_tensor(next_state, dtype=torch.long)
        noise = lambda_noise(seed, steps) if ift.lambda_disturb else None

        def ift_step(policy: PolicyNet, step: int) -> torch.Tensor:
            lam = lambda_at(
                step,
                max_lambda=ift.max_lambda,
                min_lambda=ift.min_lambda,
                schedule=ift.lambda_schedule,
                warmup_steps=options.lambda_warmup_steps,
                disturb=ift.lambda_disturb,
                disturb_std=ift.disturb_std,
                noise=noise,
            )
            return ift_objective(policy, expert, transitions, lam, ift)

        return ift_step
    if method == "dpo":
        reference = copy.deepcopy(initial_policy).requires_grad_(False)
        with torch.no_grad():  # the reference is frozen, so its log-probs are constants
            reference_logps = sequence_logps(trajectory_logps(reference, pair), pair.mask)
        return lambda policy, step: dpo_objective(policy, pair, reference_logps, options.dpo_beta)
    return lambda policy, step: orpo_objective(policy, pair, options.orpo_beta)


def expert_objective(target_probs: np.ndarray, states: np.ndarray) -> Objective:
    """Supervised learning on π*: cross-entropy against the (soft, for ties) optimal action distribution."""
    inputs = torch.as_tensor(states, dtype=torch.long)
    targets = torch.as_tensor(target_probs[states], dtype=torch.float32)
    return lambda policy, step: F.cross_entropy(policy(encode_states(inputs, policy.num_states)), targets)


def make_optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr)
    raise ValueError(f"unknown optimizer={name!r}; allowed values: {list(OPTIMIZERS)}")


def train(
    policy: PolicyNet,
    objective: Objective,
    *,
    steps: int,
    lr: float,
    optimizer: str,
    evaluate: Callable[[PolicyNet], float] | None = None,
) -> list[float]:
    """``steps`` full-batch updates of ``policy`` in place; returns ``evaluate`` before and after each step."""
    optim = make_optimizer(optimizer, policy.parameters(), lr)
    curve = [evaluate(policy)] if evaluate else []
    for step in range(steps):
        optim.zero_grad(set_to_none=True)
        objective(policy, step).backward()
        optim.step()
        if evaluate:
            curve.append(evaluate(policy))
    return curve
