"""Many Frozen Lake runs trained at once: one set of policy weights per run, stacked, and one loop over steps.

The study (:mod:`.study`) trains thousands of small runs (settings x methods x seeds). Training them one by one
with :func:`ift.frozen_lake.methods.train` costs a Python loop per run; here every run's two-layer policy is a
slice of stacked tensors (``w1 [R, S, H]``, ``b1 [R, H]``, ``w2 [R, H, A]``, ``b2 [R, A]``) and one optimiser
step updates all of them. Runs never share weights: the loss is the SUM of per-run losses, so each run's gradient
is exactly the gradient of its own loss.

The per-run losses are those of :mod:`ift.losses` applied row-wise (one trajectory, or one chosen/rejected
pair, per run), with the trajectory-as-response mapping of :mod:`.methods`:

* SFT: the row-wise ``sft_loss`` = minus the mean step log-prob (``sequence_logps(average=True)``).
* IFT: ``ift_sequence_losses`` on the log-probs of the mixed inputs (1-λ)·onehot(s_t) + λ·onehot(s̃_t), with
  s̃_t from ``intuition_input_ids`` on the policy's greedy successors (as :func:`.methods.ift_objective`).
* DPO: ``dpo_loss`` on summed step log-probs, reference = the run's initial weights. ORPO: ``orpo_loss`` on
  mean step log-probs. β may differ per run.
* expert: cross-entropy against π* over all decision states (as :func:`.methods.expert_objective`).

Optimisers: Adam and RMSprop with torch's default constants and update formulas (``torch.optim.Adam``,
``torch.optim.RMSprop``: what ``TrainingArguments(optim="rmsprop")`` builds), each run with its own learning
rate per step from a constant or a warm-up + cosine schedule (transformers' ``get_cosine_schedule_with_warmup``
with ``ceil(warmup_ratio * steps)`` warm-up steps, as ``warmup_ratio`` gives in the language-model trainer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ift.frozen_lake.env import Trajectory
from ift.frozen_lake.methods import METHODS, TrajectoryBatch
from ift.frozen_lake.policy import PolicyNet, init_policy
from ift.losses import (
    IGNORE_INDEX,
    dpo_loss,
    ift_sequence_losses,
    intuition_input_ids,
    lambda_at,
    lambda_noise,
    orpo_loss,
    sequence_logps,
)

EXPERT_METHOD = "expert"
RUN_METHODS = (*METHODS, EXPERT_METHOD)
STUDY_OPTIMIZERS = ("adam", "rmsprop")
SCHEDULES = ("constant", "cosine")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults
RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop default
EPS = 1e-8  # both optimisers' default eps
_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass(frozen=True)
class RunSpec:
    """One training run: which initialisation, loss, optimiser and schedule."""

    seed: int
    method: str  # sft | ift | dpo | orpo | expert
    optimizer: str  # adam | rmsprop
    lr: float
    steps: int
    schedule: str = "constant"  # constant | cosine (with linear warm-up)
    warmup_ratio: float = 0.0
    beta: float = 0.0  # DPO / ORPO β
    max_lambda: float = 0.2  # IFT λ
    lambda_disturb: str | None = None
    lambda_disturb_std: float = 0.5


@dataclass(frozen=True)
class IFTShared:
    """IFT options every IFT run of a batch shares (the left-side propagation weights are per row)."""

    gamma: float = 0.95
    propagation_type: str = "loss"
    propagation_norm: str = "L1"


def schedule_factors(schedule: str, steps: int, warmup_ratio: float) -> np.ndarray:
    """The learning-rate multiplier of each optimiser step 0 .. steps-1 (float64)."""
    if schedule == "constant":
        return np.ones(steps)
    if schedule != "cosine":
        raise ValueError(f"unknown schedule={schedule!r}; allowed values: {list(SCHEDULES)}")
    warmup = math.ceil(steps * warmup_ratio)
    factors = []
    for step in range(steps):  # transformers' _get_cosine_schedule_with_warmup_lr_lambda, num_cycles 0.5
        if step < warmup:
            factors.append(step / max(1, warmup))
        else:
            progress = (step - warmup) / max(1, steps - warmup)
            factors.append(max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress))))
    return np.array(factors)


def lambda_schedule(run: RunSpec) -> np.ndarray:
    """IFT's λ at each step of ``run`` (``lambda_at``; the disturbance drawn from ``lambda_noise(seed, steps)``)."""
    noise = lambda_noise(run.seed, run.steps) if run.lambda_disturb else None
    return np.array([
        lambda_at(step, max_lambda=run.max_lambda, disturb=run.lambda_disturb,
                  disturb_std=run.lambda_disturb_std, noise=noise)
        for step in range(run.steps)
    ])


# --------------------------------------------------------------------------------------------------------
# Stacked policies
# --------------------------------------------------------------------------------------------------------


def stack_policies(policies: Sequence[PolicyNet]) -> list[torch.Tensor]:
    """``[w1 [R,S,H], b1 [R,H], w2 [R,H,A], b2 [R,A]]`` from PolicyNets (nn.Linear keeps weight as [out, in])."""
    first = [policy.layers[0] for policy in policies]
    second = [policy.layers[2] for policy in policies]
    return [
        torch.stack([layer.weight.detach().T for layer in first]).contiguous(),
        torch.stack([layer.bias.detach() for layer in first]),
        torch.stack([layer.weight.detach().T for layer in second]).contiguous(),
        torch.stack([layer.bias.detach() for layer in second]),
    ]


def state_logits(params: Sequence[torch.Tensor], activation: str) -> torch.Tensor:
    """Action logits of every state ``[R, S, A]`` on the plain one-hot encodings (onehot(s) @ w1 = row s of w1)."""
    w1, b1, w2, b2 = params
    hidden = _ACTIVATIONS[activation](w1 + b1[:, None, :])
    return torch.baddbmm(b2[:, None, :], hidden, w2)


def input_logits(params: Sequence[torch.Tensor], inputs: torch.Tensor, activation: str) -> torch.Tensor:
    """Action logits ``[R, N, A]`` of encodings ``inputs [R, N, S]`` (e.g. IFT's mixed one-hots)."""
    w1, b1, w2, b2 = params
    hidden = _ACTIVATIONS[activation](torch.baddbmm(b1[:, None, :], inputs, w1))
    return torch.baddbmm(b2[:, None, :], hidden, w2)


def mix_encodings(states: torch.Tensor, intuitions: torch.Tensor, lam: torch.Tensor, num_states: int) -> torch.Tensor:
    """(1-λ)·onehot(s) + λ·onehot(s̃) ``[R, T, S]`` with λ ``[R]`` per run (``ift.losses.mix_embeddings`` per row)."""
    lam = lam[:, None, None]
    true = torch.nn.functional.one_hot(states, num_states).to(torch.float32)
    guessed = torch.nn.functional.one_hot(intuitions, num_states).to(torch.float32)
    return (1.0 - lam) * true + lam * guessed


def gather_steps(logps_all: torch.Tensor, batch: TrajectoryBatch) -> torch.Tensor:
    """Per-step log π(a_t|s_t) ``[R, B, T]`` from all-state log-probs ``[R, S, A]``; 0 off the mask."""
    picked = logps_all[:, batch.states, batch.actions]
    return picked.masked_fill(~batch.mask, 0.0)


# --------------------------------------------------------------------------------------------------------
# Per-run losses (each equals the ift.losses function applied to that run's rows alone)
# --------------------------------------------------------------------------------------------------------


def sft_losses(step_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[R]``: run r's ``sft_loss`` on its one trajectory ``step_logps[r] [T]``."""
    return -sequence_logps(step_logps, mask, average=True)


def ift_losses(step_logps: torch.Tensor, mask: torch.Tensor, shared: IFTShared) -> torch.Tensor:
    """``[R]``: run r's ``ift_loss`` on its one (mixed-input) trajectory (left-side weights are per row)."""
    return ift_sequence_losses(step_logps, mask, gamma=shared.gamma, propagation_type=shared.propagation_type,
                               propagation_side="left", propagation_norm=shared.propagation_norm)


def dpo_losses(pair_logps: torch.Tensor, reference_logps: torch.Tensor, mask: torch.Tensor,
               beta: torch.Tensor) -> torch.Tensor:
    """``[R]``: ``dpo_loss`` per run; ``pair_logps [R, 2, T]`` (row 0 chosen), ``reference_logps [R, 2]`` summed."""
    summed = sequence_logps(pair_logps, mask)
    losses, _, _ = dpo_loss(summed[:, 0], summed[:, 1], reference_logps[:, 0], reference_logps[:, 1], beta=beta)
    return losses


def orpo_losses(pair_logps: torch.Tensor, mask: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``[R]``: ``orpo_loss`` per run on mean step log-probs (NLL term included)."""
    means = sequence_logps(pair_logps, mask, average=True)
    losses, _ = orpo_loss(means[:, 0], means[:, 1], beta=beta)
    return losses


def expert_losses(logps_all: torch.Tensor, target: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
    """``[R]``: cross-entropy against the soft targets π* ``[S, A]``, averaged over the decision states."""
    return -(target[decisions] * logps_all[:, decisions]).sum(-1).mean(-1)


# --------------------------------------------------------------------------------------------------------
# The batched training loop
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchProblem:
    """What the losses need from the MDP: dynamics, π*, the two trajectories, the decision states."""

    next_state: np.ndarray  # [S, A]
    optimal_probs: np.ndarray  # π* [S, A]
    decision_states: np.ndarray
    optimal: Trajectory
    suboptimal: Trajectory


@dataclass
class BatchResult:
    """Per run (in the order of the specs): final weights and what was recorded during training."""

    initial_params: list[torch.Tensor]
    final_params: list[torch.Tensor]
    final_probs: np.ndarray  # [R, S, A] float64, softmax of the final logits
    mse_curves: np.ndarray  # [R, max_steps + 1] policy MSE after t updates; NaN after the run's end
    off_curves: np.ndarray  # [R, max_steps + 1] mean off-trajectory mass over the trajectory states; NaN after
    checkpoint_probs: np.ndarray  # [R, len(checkpoints), S, A]; NaN where the checkpoint lies after the end
    checkpoints: tuple[int, ...]


@dataclass(frozen=True)
class LossData:
    """The tensors every per-run loss needs, built once per batch."""

    expert: TrajectoryBatch  # the optimal trajectory (SFT / IFT data)
    pair: TrajectoryBatch  # row 0 optimal (chosen), row 1 sub-optimal (rejected)
    transitions: torch.Tensor  # [S, A] next state
    target: torch.Tensor  # π* [S, A] float32 (the expert's soft labels)
    decisions: torch.Tensor
    activation: str
    ift: IFTShared

    @classmethod
    def of(cls, problem: BatchProblem, activation: str, ift: IFTShared = IFTShared()) -> LossData:
        return cls(TrajectoryBatch.of([problem.optimal]), TrajectoryBatch.of([problem.optimal, problem.suboptimal]),
                   torch.as_tensor(problem.next_state, dtype=torch.long),
                   torch.as_tensor(problem.optimal_probs, dtype=torch.float32),
                   torch.as_tensor(problem.decision_states, dtype=torch.long), activation, ift)


def method_losses(method: str, params: Sequence[torch.Tensor], logits: torch.Tensor, data: LossData, *,
                  lam: torch.Tensor | None = None, beta: torch.Tensor | None = None,
                  reference: torch.Tensor | None = None) -> torch.Tensor:
    """``[R]``: each run's loss of ``method`` at its weights ``params`` (all-state ``logits [R, S, A]`` from
    :func:`state_logits`). IFT needs ``lam [R]``, DPO and ORPO ``beta [R]``, DPO ``reference [R, 2]`` (the
    summed chosen / rejected step log-probs of the reference policy)."""
    logps_all = torch.log_softmax(logits, -1)
    expert, pair = data.expert, data.pair
    if method == "sft":
        return sft_losses(gather_steps(logps_all, expert)[:, 0], expert.mask)
    if method == "dpo":
        return dpo_losses(gather_steps(logps_all, pair), reference, pair.mask, beta)
    if method == "orpo":
        return orpo_losses(gather_steps(logps_all, pair), pair.mask, beta)
    if method == EXPERT_METHOD:
        return expert_losses(logps_all, data.target, data.decisions)
    if method != "ift":
        raise ValueError(f"unknown method={method!r}; allowed values: {list(RUN_METHODS)}")
    # IFT pass 1 (greedy successors, no gradient), then pass 2 on the mixed encodings
    count, num_states = len(logits), logits.shape[1]
    states, mask = expert.states.expand(count, -1), expert.mask.expand(count, -1)
    with torch.no_grad():
        greedy = logits[:, expert.states[0]].argmax(-1)
        guessed = data.transitions[states, greedy]
        intuitions = intuition_input_ids(states, guessed, states.masked_fill(~mask, IGNORE_INDEX))
    mixed_logits = input_logits(params, mix_encodings(states, intuitions, lam, num_states), data.activation)
    step_logps = torch.log_softmax(mixed_logits, -1).gather(-1, expert.actions.expand(count, -1).unsqueeze(-1))
    return ift_losses(step_logps.squeeze(-1).masked_fill(~mask, 0.0), mask, data.ift)


def off_trajectory_mass(probs: np.ndarray, optimal: Trajectory, suboptimal: Trajectory) -> np.ndarray:
    """``[..., S]``: probability mass on actions that neither trajectory takes in that state; NaN for states
    on neither trajectory (every action is "off" there, so the measure says nothing)."""
    on = np.zeros(probs.shape[-2:], dtype=bool)
    for trajectory in (optimal, suboptimal):
        on[list(trajectory.states), list(trajectory.actions)] = True
    mass = 1.0 - np.where(on, probs, 0.0).sum(-1)
    visited = on.any(-1)
    return np.where(visited, mass, np.nan)


def _initial_params(runs: Sequence[RunSpec], num_states: int, num_actions: int, hidden_size: int,
                    activation: str) -> list[torch.Tensor]:
    seeds = sorted({run.seed for run in runs})
    stacked = stack_policies([init_policy(seed, num_states, num_actions, hidden_size, activation) for seed in seeds])
    rows = torch.tensor([seeds.index(run.seed) for run in runs])
    return [tensor[rows].clone() for tensor in stacked]


def train_batch(
    problem: BatchProblem,
    runs: Sequence[RunSpec],
    *,
    hidden_size: int,
    activation: str,
    ift_shared: IFTShared = IFTShared(),
    checkpoints: Sequence[int] = (),
) -> BatchResult:
    """Train every run in ``runs`` from ``init_policy(run.seed, ...)``; all runs advance in one loop.

    Runs are processed longest first, so at step t the runs still training are a prefix of the batch and
    finished runs cost nothing. Deterministic: the result depends only on the specs (and the thread count).
    """
    for run in runs:
        if run.method not in RUN_METHODS:
            raise ValueError(f"unknown method={run.method!r}; allowed values: {list(RUN_METHODS)}")
        if run.optimizer not in STUDY_OPTIMIZERS:
            raise ValueError(f"unknown optimizer={run.optimizer!r}; allowed values: {list(STUDY_OPTIMIZERS)}")
        if run.steps < 1 or not run.lr > 0:
            raise ValueError(f"steps must be >= 1 and lr > 0, got steps={run.steps}, lr={run.lr}")
    num_states, num_actions = problem.next_state.shape
    order = sorted(range(len(runs)), key=lambda index: -runs[index].steps)  # stable: ties keep spec order
    ordered = [runs[index] for index in order]
    count, max_steps = len(ordered), ordered[0].steps
    steps = np.array([run.steps for run in ordered])

    initial = _initial_params(ordered, num_states, num_actions, hidden_size, activation)
    params = [tensor.clone().requires_grad_(True) for tensor in initial]
    first_moment = [torch.zeros_like(tensor) for tensor in initial]
    second_moment = [torch.zeros_like(tensor) for tensor in initial]

    lr_table = np.zeros((count, max_steps))
    lambda_table = np.zeros((count, max_steps))
    for row, run in enumerate(ordered):
        lr_table[row, : run.steps] = run.lr * schedule_factors(run.schedule, run.steps, run.warmup_ratio)
        if run.method == "ift":
            lambda_table[row, : run.steps] = lambda_schedule(run)
    is_adam = torch.tensor([run.optimizer == "adam" for run in ordered])
    decay = torch.tensor([ADAM_BETAS[1] if run.optimizer == "adam" else RMSPROP_ALPHA for run in ordered])
    beta = torch.tensor([run.beta for run in ordered], dtype=torch.float32)
    groups = {method: torch.tensor([row for row, run in enumerate(ordered) if run.method == method], dtype=torch.long)
              for method in RUN_METHODS}

    data = LossData.of(problem, activation, ift_shared)
    pair, decisions = data.pair, data.decisions
    optimal_probs = torch.as_tensor(problem.optimal_probs)  # float64, as the per-run metric
    on_trajectory = torch.zeros(num_states, num_actions, dtype=torch.bool)
    for trajectory in (problem.optimal, problem.suboptimal):
        on_trajectory[list(trajectory.states), list(trajectory.actions)] = True
    visited = on_trajectory.any(-1)
    with torch.no_grad():
        reference = gather_steps(torch.log_softmax(state_logits(initial, activation), -1), pair).sum(-1)

    checkpoints = tuple(sorted(set(int(c) for c in checkpoints)))
    mse_curves = np.full((count, max_steps + 1), np.nan)
    off_curves = np.full((count, max_steps + 1), np.nan)
    checkpoint_probs = np.full((count, len(checkpoints), num_states, num_actions), np.nan)
    final_probs = np.zeros((count, num_states, num_actions))

    for step in range(max_steps + 1):
        evaluated = int(np.count_nonzero(steps >= step))  # runs whose policy after `step` updates exists
        active = int(np.count_nonzero(steps > step))  # runs that take an update at this step
        current = [tensor[:evaluated] for tensor in params]
        logits = state_logits(current, activation)
        with torch.no_grad():
            probs = torch.softmax(logits, -1).double()
            mse_curves[:evaluated, step] = ((probs[:, decisions] - optimal_probs[decisions]) ** 2).mean((1, 2)).numpy()
            off_mass = 1.0 - torch.where(on_trajectory, probs, 0.0).sum(-1)
            off_curves[:evaluated, step] = off_mass[:, visited].mean(-1).numpy()
            if step in checkpoints:
                checkpoint_probs[:evaluated, checkpoints.index(step)] = probs.numpy()
            ending = steps[:evaluated] == step
            final_probs[:evaluated][ending] = probs.numpy()[ending]
        if active == 0:
            break
        total = logits.new_zeros(())
        for method, rows in groups.items():
            rows = rows[: int(torch.searchsorted(rows, active))]  # this method's runs that are still training
            if rows.numel() > 0:
                lam = torch.as_tensor(lambda_table[rows.numpy(), step], dtype=torch.float32)
                total = total + method_losses(method, [tensor[rows] for tensor in current], logits[rows], data,
                                              lam=lam, beta=beta[rows], reference=reference[rows]).sum()
        for tensor in params:
            tensor.grad = None
        total.backward()
        _optimizer_step(params, first_moment, second_moment, active, step, lr_table[:active, step],
                        is_adam[:active], decay[:active])

    inverse = np.argsort(order)  # back to the order of the specs
    inverse_t = torch.as_tensor(inverse)
    return BatchResult(
        initial_params=[tensor[inverse_t] for tensor in initial],
        final_params=[tensor.detach()[inverse_t].clone() for tensor in params],
        final_probs=final_probs[inverse],
        mse_curves=mse_curves[inverse],
        off_curves=off_curves[inverse],
        checkpoint_probs=checkpoint_probs[inverse],
        checkpoints=checkpoints,
    )


@torch.no_grad()
def _optimizer_step(params, first_moment, second_moment, active: int, step: int, lrs: np.ndarray,
                    is_adam: torch.Tensor, decay: torch.Tensor) -> None:
    """One Adam / RMSprop step (torch's formulas) of the first ``active`` runs, each with its own lr.

    Adam: m ← lerp(m, g, 1-β1); v ← β2·v + (1-β2)·g²; p ← p - lr/(1-β1^t) · m / (√v/√(1-β2^t) + eps).
    RMSprop: v ← α·v + (1-α)·g²; p ← p - lr · g / (√v + eps).
    """
    count = step + 1  # torch's step counter, 1-based
    beta1, beta2 = ADAM_BETAS
    correction1 = torch.where(is_adam, torch.tensor(1.0 - beta1**count, dtype=torch.float64), 1.0)
    correction2 = torch.where(is_adam, torch.tensor(math.sqrt(1.0 - beta2**count), dtype=torch.float64), 1.0)
    step_size = torch.as_tensor(lrs) / correction1
    for param, first, second in zip(params, first_moment, second_moment, strict=True):
        shape = (active,) + (1,) * (param.dim() - 1)
        grad = param.grad[:active]
        m, v = first[:active], second[:active]
        m.lerp_(grad, 1.0 - beta1)
        d = decay.view(shape).to(torch.float32)
        v.mul_(d).add_((1.0 - d) * grad * grad)
        numerator = torch.where(is_adam.view(shape), m, grad)
        denominator = (v.sqrt() / correction2.view(shape).to(torch.float32)).add_(EPS)
        param[:active] -= step_size.view(shape).to(torch.float32) * (numerator / denominator)
