"""Every method's loss, as pure torch functions of per-token log-probs; the formulas a reader checks.

Nothing here knows about models, tokenizers or trainers; log-probs come from ift.logprobs.

| method | formula (one optimiser step over sequences i; T_i response tokens) | trained by | here |
|---|---|---|---|
| SFT, token mean | -Σ_i Σ_t log p(y_it) / Σ_i T_i | TRL's SFTTrainer (its own loss) | :func:`sft_loss` (tests) |
| SFT, sequence mean (the authors') | -mean_i (1/T_i) Σ_t log p(y_it) | SequenceMeanSFTTrainer | :func:`sft_loss` |
| DPO | -log σ(β[(log π_w - log π_ref,w) - (log π_l - log π_ref,l)]) | TRL's DPOTrainer | :func:`dpo_loss` (tests, Frozen Lake) |
| ORPO | -mean log p(y_w) / T_w - β log σ(log odds_w - log odds_l) | ResponseNLLORPOTrainer (TRL's, NLL fixed) | :func:`orpo_loss` (tests, Frozen Lake) |
| SimPO | -log σ(β/T_w log p(y_w) - β/T_l log p(y_l) - γ) | TRL's CPOTrainer (loss_type simpo, cpo_alpha 0) | :func:`simpo_loss` (tests) |
| TDPO | -log σ(β[(log π_w - log π_ref,w) - (log π_l - log π_ref,l)] - αβ[SeqKL_l - sg(SeqKL_w)]) | TDPOTrainer (TRL's DPOTrainer + this loss) | :func:`tdpo_loss` |
| IFT | mean_i Σ_t w_it · (-log p(y_it | (1-λ)E(x) + λE(x̃))) | IFTTrainer | :func:`ift_loss` and its parts |

"(tests)": the trainer computes the loss itself; tests/ift/train/test_trainers.py checks TRL's value and gradients
against the function here. Frozen Lake (ift.frozen_lake) trains with these functions directly.

Notation (the contract every function follows): a batch of sequences (prompt + response) with HF-style
``labels`` aligned to ``input_ids``, ``labels == -100`` on prompt and padding tokens. Position ``t`` predicts
label ``t + 1``, so per-token log-probs ``token_logps`` have shape ``[B, L-1]`` and the response mask is
``labels[:, 1:] != -100``. ``T`` is the number of response positions of a sequence. Sequences with ``T = 0``
never produce NaN: they get zero weights and a zero loss and are left out of every mean over sequences.

IFT (Hua et al., arXiv 2405.11870) in short: pass 1 predicts the greedy next token at every position
(ift.logprobs.chunked_argmax); the response tokens are replaced by those "intuitions"
(:func:`intuition_input_ids`); pass 2 runs on the mixture ``(1-λ)·embed(x) + λ·embed(x̃)``
(:func:`mix_embeddings`, λ from :func:`lambda_at`) and its token losses are re-weighted along the sequence
(:func:`propagation_weights`, :func:`ift_loss`); w above is those weights. The weighting follows the authors'
``get_cumsum_weight`` (docs/design.md).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ift.logprobs import DEFAULT_CHUNK_SIZE, IGNORE_INDEX, at_least_float32

REDUCTIONS = ("sequence_mean", "token_mean")
PROPAGATION_TYPES = ("loss", "logps", "mask")
PROPAGATION_SIDES = ("left", "right")
PROPAGATION_NORMS = ("L1", "L2", "softmax", "log")
LAMBDA_SCHEDULES = (None, "linear")
LAMBDA_DISTURBANCES = (None, "normal")

# The reference implementation parks off-mask positions of the right-side cumulative sum at this value
# before inverting it, so they get (almost) zero weight; kept so that the batch-global shift matches it.
_RIGHT_SIDE_OFF_MASK_VALUE = 1e6
# ORPO needs log(1 - p) of a mean log-prob; at p = 1 (mean log-prob 0) that is -inf, so mean log-probs are
# clamped to at most this value (p ≤ 1 - 1e-7, log(1 - p) ≥ about -16.1).
_ORPO_MAX_MEAN_LOGP = -1e-7


def _check_choice(option: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {option}={value!r}; allowed values: {list(allowed)}")


def _check_unit_interval(option: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{option} must lie in [0, 1], got {value!r}")


# --------------------------------------------------------------------------------------------------------
# Reductions and SFT
# --------------------------------------------------------------------------------------------------------


def _masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row mean over masked positions ``[B]``; rows with an empty mask give 0 (not 0/0)."""
    lengths = mask.sum(-1).clamp_min(1).to(values.dtype)
    return values.masked_fill(~mask, 0.0).sum(-1) / lengths


def sequence_logps(
    token_logps: torch.Tensor, response_mask: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """Response log-prob per sequence ``[B]``: the sum (DPO) or, with ``average``, the mean (ORPO)."""
    mask = response_mask.bool()
    if average:
        return _masked_row_mean(token_logps, mask)
    return token_logps.masked_fill(~mask, 0.0).sum(-1)


def reduce_token_losses(
    token_losses: torch.Tensor, response_mask: torch.Tensor, reduction: str = "sequence_mean"
) -> torch.Tensor:
    """Scalar loss from per-token losses ``[B, L-1]``.

    ``"sequence_mean"`` (the paper's reference): mean over sequences of each sequence's mean token loss;
    sequences with T = 0 are excluded from that mean (an all-empty batch gives 0, still attached to the
    graph). ``"token_mean"``: sum over all response tokens / number of response tokens in the batch.
    """
    _check_choice("reduction", reduction, REDUCTIONS)
    mask = response_mask.bool()
    if reduction == "token_mean":
        return token_losses.masked_fill(~mask, 0.0).sum() / mask.sum().clamp_min(1)
    non_empty = mask.any(-1).sum().clamp_min(1)
    return _masked_row_mean(token_losses, mask).sum() / non_empty


def sft_loss(
    token_logps: torch.Tensor, response_mask: torch.Tensor, reduction: str = "sequence_mean"
) -> torch.Tensor:
    """Negative log-likelihood of the response tokens, reduced as in :func:`reduce_token_losses`."""
    return reduce_token_losses(-token_logps, response_mask, reduction)


# --------------------------------------------------------------------------------------------------------
# IFT: propagation weights and losses
# --------------------------------------------------------------------------------------------------------


def discounted_cumsum(values: torch.Tensor, gamma: float, direction: str) -> torch.Tensor:
    """Discounted cumulative sum along the last dim.

    ``"future"``: ``out_t = Σ_{j≥t} γ^{j-t} v_j`` (right to left); ``"past"``: ``out_t = Σ_{j≤t} γ^{t-j} v_j``.
    One matmul with a triangular ``[L, L]`` matrix of powers of γ: vectorised, differentiable, exact plain
    cumsums at γ = 1; powers that underflow for long sequences simply become 0.
    """
    _check_choice("direction", direction, ("future", "past"))
    positions = torch.arange(values.shape[-1], device=values.device)
    lag = positions[None, :] - positions[:, None]  # lag[t, j] = j - t
    if direction == "past":
        lag = -lag
    powers = torch.pow(torch.tensor(float(gamma), dtype=values.dtype, device=values.device), lag.clamp_min(0))
    discount = torch.where(lag >= 0, powers, torch.zeros_like(powers))
    return values @ discount.T


def _propagation_items(token_logps: torch.Tensor, mask: torch.Tensor, propagation_type: str) -> torch.Tensor:
    """What gets propagated: c_t = -log p_t / T ("loss"), -log p_t ("logps") or 1 ("mask"); 0 off the mask."""
    if propagation_type == "mask":
        items = torch.ones_like(token_logps)
    elif propagation_type == "logps":
        items = -token_logps
    else:
        lengths = mask.sum(-1, keepdim=True).clamp_min(1).to(token_logps.dtype)
        items = -token_logps / lengths
    return items.masked_fill(~mask, 0.0)


def _exp_shifted_on_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exp(score - row max over the mask), 0 off the mask: a softmax over the response before normalising.

    The reference takes the softmax over the whole row; after the off-mask zeroing and the rescale to T that
    is exactly exp(score) normalised over the response, which this computes without overflow. The row max is
    detached: the result is normalised afterwards, so the shift cancels and needs no gradient.
    """
    row_max = scores.masked_fill(~mask, float("-inf")).amax(-1, keepdim=True).detach()
    row_max = torch.where(mask.any(-1, keepdim=True), row_max, torch.zeros_like(row_max))
    return torch.exp(scores - row_max).masked_fill(~mask, 0.0)


def _left_side_weights(items: torch.Tensor, mask: torch.Tensor, gamma: float, norm: str) -> torch.Tensor:
    """W_t = discounted sum of the items of t and the FUTURE; tokens early in the response weigh more."""
    future = discounted_cumsum(items, gamma, "future").masked_fill(~mask, 0.0)
    if norm == "L1":
        return future
    if norm == "L2":
        return future**2
    if norm == "softmax":
        return _exp_shifted_on_mask(future, mask)
    return torch.log1p(future)


def _right_side_weights(items: torch.Tensor, mask: torch.Tensor, gamma: float, norm: str) -> torch.Tensor:
    """Inverse of W_t = discounted sum of the items of t and the PAST, shifted as in the reference.

    The shift is the smallest nonzero value of the WHOLE batch tensor (``w += w[w.nonzero()].min()`` in the
    reference), so the weights of one sequence depend on the other sequences of its batch (and on how a
    trainer splits it into micro-batches). Off-mask values are parked at 1e6 first, so they take part in that
    minimum (and bound it). If the tensor holds no nonzero value at all (the reference would crash) the
    shift is 1.
    """
    past = discounted_cumsum(items, gamma, "past").masked_fill(~mask, _RIGHT_SIDE_OFF_MASK_VALUE)
    nonzero = past[past != 0]
    shift = nonzero.min() if nonzero.numel() > 0 else past.new_tensor(1.0)
    past = past + shift
    if norm == "L1":
        return 1.0 / past
    if norm == "L2":
        return 1.0 / past**2
    if norm == "softmax":
        return _exp_shifted_on_mask(1.0 / past, mask)
    return 1.0 / torch.log1p(past)


def _rescale_rows_to_length(raw_weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero off the mask, then scale each row to sum to its T; rows summing to 0 (e.g. T = 0) stay 0."""
    raw_weights = raw_weights.masked_fill(~mask, 0.0)
    lengths = mask.sum(-1, keepdim=True).to(raw_weights.dtype)
    totals = raw_weights.sum(-1, keepdim=True)
    has_mass = totals > 0
    # where() on both sides: the unselected branch must not divide by zero or its NaN gradient leaks through.
    safe_totals = torch.where(has_mass, totals, torch.ones_like(totals))
    return torch.where(has_mass, raw_weights * (lengths / safe_totals), torch.zeros_like(raw_weights))


def _check_propagation_options(gamma: float, propagation_type: str, propagation_side: str, norm: str) -> None:
    _check_unit_interval("gamma", gamma)
    _check_choice("propagation_type", propagation_type, PROPAGATION_TYPES)
    _check_choice("propagation_side", propagation_side, PROPAGATION_SIDES)
    _check_choice("propagation_norm", norm, PROPAGATION_NORMS)


def propagation_weights(
    token_logps: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    gamma: float,
    propagation_type: str = "loss",
    propagation_side: str = "left",
    propagation_norm: str = "L1",
) -> torch.Tensor:
    """IFT's per-token loss weights ``[B, L-1]``: 0 off the mask, each row summing to its T.

    Follows the reference ``get_cumsum_weight``: propagate items c_t (see ``propagation_type``) with a
    γ-discounted cumulative sum, over the future (``"left"``: W_t = Σ_{j≥t} γ^{j-t} c_j, then L1: W,
    L2: W², softmax: exp(W), log: log(W+1)) or over the past (``"right"``: W_t = Σ_{j≤t} γ^{t-j} c_j,
    shifted by the batch-global smallest nonzero value, then L1: 1/W, L2: 1/W², softmax: exp(1/W),
    log: 1/log(W+1)); finally rescale each row to sum to T. γ = 0 gives unit weights (plain SFT).

    The weights are NOT detached: the gradient flows through them, as in the authors' code (intended).
    Options are validated even at γ = 0, so a typo fails at the first step rather than when γ changes.
    """
    _check_propagation_options(gamma, propagation_type, propagation_side, propagation_norm)
    mask = response_mask.bool()
    if gamma == 0:
        return mask.to(token_logps.dtype)
    items = _propagation_items(token_logps, mask, propagation_type)
    side_weights = _left_side_weights if propagation_side == "left" else _right_side_weights
    return _rescale_rows_to_length(side_weights(items, mask, gamma, propagation_norm), mask)


def ift_sequence_losses(
    token_logps: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    gamma: float = 0.95,
    propagation_type: str = "loss",
    propagation_side: str = "left",
    propagation_norm: str = "L1",
) -> torch.Tensor:
    """Per-sequence IFT losses ``[B]``: (1/T) Σ_t w_t · (-log p_t), 0 for sequences with T = 0.

    Exposed so a trainer can sum them over micro-batches and divide by the global number of sequences.
    """
    weights = propagation_weights(
        token_logps,
        response_mask,
        gamma=gamma,
        propagation_type=propagation_type,
        propagation_side=propagation_side,
        propagation_norm=propagation_norm,
    )
    return _masked_row_mean(weights * -token_logps, response_mask.bool())


def ift_loss(
    token_logps: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    gamma: float = 0.95,
    propagation_type: str = "loss",
    propagation_side: str = "left",
    propagation_norm: str = "L1",
    reduction: str = "sequence_mean",
) -> torch.Tensor:
    """Scalar IFT loss: weighted token losses w_t · (-log p_t), reduced as in :func:`reduce_token_losses`.

    ``"sequence_mean"`` is the reference (mean of :func:`ift_sequence_losses` over non-empty sequences).
    With γ = 0 the weights are 1 and this is exactly :func:`sft_loss` with the same reduction.
    """
    weights = propagation_weights(
        token_logps,
        response_mask,
        gamma=gamma,
        propagation_type=propagation_type,
        propagation_side=propagation_side,
        propagation_norm=propagation_norm,
    )
    return reduce_token_losses(weights * -token_logps, response_mask, reduction)


def ift_linear_loss(token_logps: torch.Tensor, response_mask: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """The paper's LINEAR form (Eq. 21), per sequence ``[B]``: discounted future losses, normalised.

    With ℓ_j = -log p_j on the mask, W_t = Σ_{j≥t} γ^{j-t} ℓ_j and the discount mass D_t = Σ_{j≥t, j on mask}
    γ^{j-t}, the loss is ``(1/T) Σ_t W_t / ((1/T) Σ_t D_t) = Σ_t W_t / Σ_t D_t`` (sums over the mask).
    Why this normalisation: Σ_t W_t = Σ_j E_j ℓ_j with E_j = Σ_{t≤j, t on mask} γ^{j-t}, and Σ_t D_t = Σ_j E_j,
    so the loss is a convex combination of the token losses (same scale as SFT, whatever γ and T) that
    puts more weight on later tokens; at γ = 0 it is exactly the per-sequence SFT loss. Rows with T = 0 give 0.
    Unlike :func:`propagation_weights` it is linear in the token losses (the weights E_j do not depend on them).
    """
    _check_unit_interval("gamma", gamma)
    mask = response_mask.bool()
    token_losses = (-token_logps).masked_fill(~mask, 0.0)
    on_mask = mask.to(token_logps.dtype)
    discounted_losses = discounted_cumsum(token_losses, gamma, "future") * on_mask
    discount_mass = discounted_cumsum(on_mask, gamma, "future") * on_mask
    total_mass = discount_mass.sum(-1)
    return discounted_losses.sum(-1) / torch.where(total_mass > 0, total_mass, torch.ones_like(total_mass))


# --------------------------------------------------------------------------------------------------------
# IFT: the temporal-residual input (λ schedule, intuition tokens, embedding mix)
# --------------------------------------------------------------------------------------------------------


def lambda_noise(seed: int, num_steps: int) -> list[float]:
    """One standard-normal draw per optimiser step from a ``torch.Generator`` seeded with ``seed``.

    Draws one at a time, so the list for fewer steps is a prefix of the list for more steps: the ε of a step
    depends only on (seed, step), identical across processes and after resuming with another horizon.
    """
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn((), generator=generator).item() for _ in range(num_steps)]


def lambda_at(
    step: int,
    *,
    max_lambda: float,
    min_lambda: float = 0.0,
    schedule: str | None = None,
    warmup_steps: int = 0,
    disturb: str | None = None,
    disturb_std: float = 0.5,
    noise: Sequence[float] | None = None,
) -> float:
    """IFT's mixing coefficient λ at optimiser step ``step`` (0-based), clamped to [0, 1].

    schedule None: λ = max_lambda; ``"linear"``: λ = min + (max - min) · r with r = step / warmup_steps while
    step < warmup_steps and r = 1 afterwards (the reference's ``linear_warmup``; warmup 0 means λ = max at once).
    disturb ``"normal"``: λ += ε · disturb_std · λ with ε = ``noise[step]`` (see :func:`lambda_noise`).
    """
    _check_choice("schedule", schedule, LAMBDA_SCHEDULES)
    _check_choice("disturb", disturb, LAMBDA_DISTURBANCES)
    _check_unit_interval("max_lambda", max_lambda)
    _check_unit_interval("min_lambda", min_lambda)
    if step < 0 or warmup_steps < 0 or disturb_std < 0:
        raise ValueError(
            f"step, warmup_steps and disturb_std must be >= 0, got {step}, {warmup_steps}, {disturb_std}"
        )
    lam = max_lambda
    if schedule == "linear":
        ramp = step / warmup_steps if step < warmup_steps else 1.0
        lam = min_lambda + (max_lambda - min_lambda) * ramp
    if disturb == "normal":
        if noise is None or step >= len(noise):
            have = "no noise" if noise is None else f"noise for {len(noise)} steps"
            raise ValueError(
                f"disturb='normal' needs noise[{step}] (lambda_noise(seed, num_steps)); got {have}"
            )
        lam += noise[step] * disturb_std * lam
    return min(1.0, max(0.0, lam))


def intuition_input_ids(
    input_ids: torch.Tensor,
    greedy_next_ids: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """The "intuition" sequence x̃: each response token replaced by the model's greedy guess for it.

    ``greedy_next_ids[:, t]`` is the argmax at position t, i.e. the guess for position t+1 (``[B, L]`` from
    :func:`chunked_argmax`, or its first L-1 columns). x̃_0 = x_0; for t ≥ 1, x̃_t = greedy_next_ids[t-1]
    where ``labels[t] != ignore_index``, else x_t (prompt and padding are kept).
    """
    length = input_ids.shape[1]
    if greedy_next_ids.shape[0] != input_ids.shape[0] or greedy_next_ids.shape[1] not in (length, length - 1):
        raise ValueError(
            f"greedy_next_ids must be [B, L] or [B, L-1] for input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(greedy_next_ids.shape)}"
        )
    guesses = torch.cat([input_ids[:, :1], greedy_next_ids[:, : length - 1].to(input_ids.dtype)], dim=1)
    return torch.where(labels == ignore_index, input_ids, guesses)


def mix_embeddings(true_embeds: torch.Tensor, intuition_embeds: torch.Tensor, lam: float) -> torch.Tensor:
    """IFT's pass-2 input: (1 - λ) · embed(x) + λ · embed(x̃)."""
    _check_unit_interval("lam", lam)
    return (1.0 - lam) * true_embeds + lam * intuition_embeds


# --------------------------------------------------------------------------------------------------------
# IFT's hyperparameters (conf/method/ift.yaml)
# --------------------------------------------------------------------------------------------------------


MEMORY_EFFICIENT_CHOICES = (True, False, "pass1", "pass2")


@dataclass(frozen=True)
class IFTOptions:
    """IFT's hyperparameters (conf/method/ift.yaml); defaults are the paper's (λ = 0.2, γ = 0.95)."""

    max_lambda: float = 0.2
    min_lambda: float = 0.2
    lambda_schedule: str | None = None
    lambda_disturb: str | None = None
    disturb_std: float = 0.5
    gamma: float = 0.95
    propagation_type: str = "loss"
    propagation_side: str = "left"
    propagation_norm: str = "L1"
    linear_form: bool = False  # the paper's Eq. 21 (linear in token losses) instead of the reference code's form
    # True: the LM head over chunks of positions in both passes (no full-vocabulary logits); False: full logits in
    # both (the plain path); "pass1" / "pass2": chunked in that pass only (the benchmark's ablations, ift.bench)
    memory_efficient: bool | str = True
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def validate(self) -> None:
        """Raise ValueError naming the key for any impossible value (called before any model loads)."""
        lambda_at(0, max_lambda=self.max_lambda, min_lambda=self.min_lambda, schedule=self.lambda_schedule,
                  disturb=None, disturb_std=self.disturb_std)
        if self.lambda_disturb not in LAMBDA_DISTURBANCES:
            raise ValueError(f"unknown method.lambda_disturb={self.lambda_disturb!r}; "
                             f"allowed: {list(LAMBDA_DISTURBANCES)}")
        propagation_weights(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), gamma=self.gamma,
                            propagation_type=self.propagation_type, propagation_side=self.propagation_side,
                            propagation_norm=self.propagation_norm)
        if self.chunk_size < 1:
            raise ValueError(f"method.chunk_size must be >= 1, got {self.chunk_size}")
        if self.memory_efficient not in MEMORY_EFFICIENT_CHOICES:
            raise ValueError(f"method.memory_efficient must be one of {list(MEMORY_EFFICIENT_CHOICES)}, "
                             f"got {self.memory_efficient!r}")

    def chunked(self, ift_pass: str) -> bool:
        """Whether IFT's ``"pass1"`` or ``"pass2"`` runs the LM head over chunks of positions."""
        return self.memory_efficient is True or self.memory_efficient == ift_pass


def ift_options(method) -> IFTOptions:
    """IFTOptions from an IFT method node (every key of conf/method/ift.yaml except name/targets)."""
    fields = {key: method[key] for key in IFTOptions.__dataclass_fields__ if key in method}
    unknown = set(method) - set(IFTOptions.__dataclass_fields__) - {"name", "targets", "peft"}  # peft: ift.train.lora
    if unknown:
        raise ValueError(f"unknown key(s) method.{', method.'.join(sorted(unknown))} for method=ift")
    return IFTOptions(**fields)


# --------------------------------------------------------------------------------------------------------
# Preference losses (reference formulas; the LLM trainers use TRL's, tests check TRL against these)
# --------------------------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (sigmoid) loss per pair from SUMMED response log-probs: ``(losses, chosen_rewards, rejected_rewards)``.

    loss = -log σ(β [(π_w - ref_w) - (π_l - ref_l)]); rewards = β (π - ref), detached (for logging).
    """
    chosen_margin = policy_chosen_logps - ref_chosen_logps
    rejected_margin = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_margin - rejected_margin))
    return losses, beta * chosen_margin.detach(), beta * rejected_margin.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0 without cancellation (switches formula at -ln 2, as TRL does)."""
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(
    chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, beta: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """ORPO loss per pair from MEAN (length-normalised) response log-probs: ``(losses, log_odds)``.

    log_odds = (lc - lr) - (log(1 - e^lc) - log(1 - e^lr)); loss = -lc - β log σ(log_odds).
    Mean log-probs are clamped to ≤ -1e-7 so a (near-)certain answer gives a finite log(1 - p); the clamp only
    acts where TRL would return ±inf. TRL's metrics: ``log_odds_chosen`` = mean of ``log_odds``,
    ``log_odds_ratio`` = mean of log σ(log_odds). TRL's NLL term is the token-mean cross-entropy of the chosen
    answers over the batch, which equals the mean of ``-lc`` only when the chosen answers have equal length.
    """
    chosen_mean_logps = at_least_float32(chosen_mean_logps)
    chosen = chosen_mean_logps.clamp(max=_ORPO_MAX_MEAN_LOGP)
    rejected = at_least_float32(rejected_mean_logps).clamp(max=_ORPO_MAX_MEAN_LOGP)
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    losses = -chosen_mean_logps - beta * F.logsigmoid(log_odds)
    return losses, log_odds


def simpo_loss(
    chosen_mean_logps: torch.Tensor,
    rejected_mean_logps: torch.Tensor,
    beta: float = 2.0,
    gamma_beta_ratio: float = 0.8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO loss per pair from MEAN (length-normalised) response log-probs: ``(losses, chosen_rewards, rejected_rewards)``.

    SimPO (Meng, Xia and Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward", NeurIPS 2024,
    arXiv:2405.14734): the reward of an answer is β times its mean token log-prob, and the loss asks the chosen
    answer's reward to beat the rejected one's by a target margin γ:

        loss = -log σ(β/T_w · Σ_t log π(y_w,t) - β/T_l · Σ_t log π(y_l,t) - γ),   γ = gamma_beta_ratio · β

    No reference model and no NLL term. The IFT paper's setting: β 2.0, γ/β 0.8. Rewards (β · mean log-prob) are
    detached, for logging. TRL's CPOTrainer with ``loss_type="simpo"``, ``simpo_gamma=γ`` and ``cpo_alpha=0`` is this
    loss (tests/ift/train/test_trainers.py).
    """
    chosen_rewards = beta * at_least_float32(chosen_mean_logps)
    rejected_rewards = beta * at_least_float32(rejected_mean_logps)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma_beta_ratio * beta)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


TDPO_VARIANTS = ("tdpo1", "tdpo2")


def tdpo_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    chosen_seq_kl: torch.Tensor,
    rejected_seq_kl: torch.Tensor,
    beta: float = 0.1,
    alpha: float = 0.5,
    variant: str = "tdpo2",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TDPO loss per pair: ``(losses, chosen_rewards, rejected_rewards)``.

    TDPO (Zeng et al., "Token-level Direct Preference Optimization", ICML 2024, arXiv:2404.11999) adds to DPO's
    margin the difference of the two answers' sequential KL divergences from the reference:

        u = (Σ_t log π(y_w,t) - log π_ref(y_w,t)) - (Σ_t log π(y_l,t) - log π_ref(y_l,t))   (``*_logratios``)
        SeqKL(y) = Σ_t KL(π_ref(· | x, y_<t) ‖ π(· | x, y_<t)), over the vocabulary   (``*_seq_kl``)
        TDPO1: loss = -log σ(β [u - (SeqKL(y_l) - SeqKL(y_w))])
        TDPO2: loss = -log σ(β [u - α (SeqKL(y_l) - sg(SeqKL(y_w)))])   (sg: stop-gradient)

    Sums run over each answer's response tokens (per-token values from
    :func:`ift.logprobs.label_logps_and_reference_kl`, summed by :func:`sequence_logps`). TDPO2 (α 0.5) is the
    TDPO paper's main method and its code's default when the IFT paper was written; the IFT paper gives β 0.1 only
    (docs/design.md). Rewards are β (log-ratio + SeqKL), detached, as the TDPO authors log them.
    """
    _check_choice("variant", variant, TDPO_VARIANTS)
    margin = chosen_logratios - rejected_logratios
    if variant == "tdpo1":
        logits = margin - (rejected_seq_kl - chosen_seq_kl)
    else:
        logits = margin - alpha * (rejected_seq_kl - chosen_seq_kl.detach())
    losses = -F.logsigmoid(beta * logits)
    chosen_rewards = beta * (chosen_logratios + chosen_seq_kl).detach()
    rejected_rewards = beta * (rejected_logratios + rejected_seq_kl).detach()
    return losses, chosen_rewards, rejected_rewards
