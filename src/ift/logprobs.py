"""Per-token log-probs of the labels, and greedy next tokens, from a causal LM's outputs.

Two ways to get them, with the same result (tests/ift/test_losses.py checks them against each other):

* from full logits ``[B, L, V]`` (:func:`gather_label_logps`), the plain path;
* from the final hidden states and the LM head, ``chunk_size`` positions at a time (:func:`chunked_label_logps`,
  :func:`chunked_argmax`, :func:`chunked_greedy_and_label_logps`): no full-vocabulary logits are ever kept; in
  backward each chunk's logits are recomputed (:class:`_ChunkedLabelLogps`). This is the memory-efficient path
  (``memory_efficient: true``).

TDPO also needs, at every response position, the KL between the reference's and the policy's whole next-token
distributions: :func:`label_logps_and_reference_kl` (from full logits).

The conventions are ift.losses': HF-style ``labels`` aligned to ``input_ids`` with ``-100`` on prompt and padding;
position ``t`` predicts label ``t + 1``, so per-token log-probs are ``[B, L-1]`` with the response mask
``labels[:, 1:] != -100``.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

IGNORE_INDEX = -100
DEFAULT_CHUNK_SIZE = 1024


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size!r}")




def at_least_float32(values: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32 (bf16 log-softmax loses whole nats); float64 stays float64."""
    return values.to(torch.promote_types(values.dtype, torch.float32))


def _label_logps_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] in at least float32.

    ``logit[target] - logsumexp(logits)`` instead of a full ``log_softmax`` so no second ``[..., V]`` tensor.
    """
    logits = at_least_float32(logits)
    target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return target_logits - logits.logsumexp(-1)


def _shifted_targets(labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of positions 0..L-2 (label t+1) with ignored ones replaced by a valid index, and the mask."""
    targets = labels[:, 1:]
    response_mask = targets != ignore_index
    return targets.masked_fill(~response_mask, 0), response_mask


def gather_label_logps(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-prob of the next label: ``(token_logps [B, L-1], response_mask [B, L-1] bool)``.

    ``token_logps[b, t] = log softmax(logits[b, t])[labels[b, t+1]]``, zero where the label is ignored.
    """
    targets, response_mask = _shifted_targets(labels, ignore_index)
    token_logps = _label_logps_from_logits(logits[:, :-1], targets)
    return token_logps.masked_fill(~response_mask, 0.0), response_mask


def _lm_head_rows(hidden_states: torch.Tensor, lm_head_weight: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Flatten positions 0..L-2 of ``[B, L, H]`` hidden states into rows ``[B*(L-1), H]`` for the LM head."""
    if hidden_states.dim() != 3 or hidden_states.shape[-1] != lm_head_weight.shape[-1]:
        raise ValueError(
            f"hidden_states must be [B, L, H] with H = lm_head_weight.shape[1]; got {tuple(hidden_states.shape)}"
            f" and lm_head_weight {tuple(lm_head_weight.shape)}"
        )
    batch, length, hidden = hidden_states.shape
    return hidden_states.reshape(batch * length, hidden), batch, length


def _response_rows(
    hidden_states: torch.Tensor, labels: torch.Tensor, lm_head_weight: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows the LM head must score: hidden states ``[n, H]`` of the n positions whose next label counts, their
    targets ``[n]``, their flat indices into ``[B*L]`` and the response mask ``[B, L-1]``."""
    all_rows, _, _ = _lm_head_rows(hidden_states, lm_head_weight)
    targets, response_mask = _shifted_targets(labels, ignore_index)
    # Row b*L + t of the flattened [B*L, H] hidden states predicts labels[b, t+1]; position L-1 predicts nothing.
    index = F.pad(response_mask, (0, 1), value=False).reshape(-1).nonzero().squeeze(1)
    targets = F.pad(targets, (0, 1), value=0).reshape(-1).index_select(0, index)
    return all_rows.index_select(0, index), targets, index, response_mask


class _ChunkedLabelLogps(torch.autograd.Function):
    """log softmax(rows @ W.T + b)[target] for ``[n, H]`` rows, ``chunk_size`` rows at a time, logits never kept.

    Forward keeps only the per-row log-sum-exp ``[n]`` (besides its inputs). Backward recomputes each chunk's logits
    (one extra LM-head matmul per chunk) and turns them in place into the logits' gradient
    ``g · (onehot(target) - softmax)``, so one ``[chunk_size, V]`` float32 buffer exists at a time, in forward and in
    backward (plus its compute-dtype twin in half precision). The weight and bias gradients are accumulated over
    chunks in at least float32. Under autocast the matmuls run in the autocast dtype, as ``F.linear`` would.

    With ``with_stats`` the forward also returns, without gradient, each row's entropy of the next-token distribution
    and whether the target is the argmax (the first maximum, as ``argmax`` breaks ties): TRL's trainers log both.
    That costs a second ``[chunk_size, V]`` buffer and three more passes over it; without it the outputs are None.
    """

    @staticmethod
    def forward(ctx, rows, targets, weight, bias, chunk_size, with_stats=False):
        device = rows.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else rows.dtype
        ctx.input_dtypes = (rows.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.chunk_size = chunk_size
        with torch.autocast(device, enabled=False):
            rows, weight = rows.to(compute), weight.to(compute)
            bias = None if bias is None else bias.to(compute)
            out_dtype = torch.promote_types(compute, torch.float32)
            token_logps = torch.empty(rows.shape[0], dtype=out_dtype, device=rows.device)
            log_normalisers = torch.empty_like(token_logps)
            entropy = torch.empty_like(token_logps) if with_stats else None
            is_top1 = torch.empty(rows.shape[0], dtype=torch.bool, device=rows.device) if with_stats else None
            for start in range(0, rows.shape[0], chunk_size):
                chunk = slice(start, start + chunk_size)
                logits = at_least_float32(F.linear(rows[chunk], weight, bias))
                target_logits = logits.gather(-1, targets[chunk, None]).squeeze(-1)
                row_max = logits.amax(-1, keepdim=True)
                if with_stats:
                    is_top1[chunk] = logits.argmax(-1) == targets[chunk]
                    shifted = logits.sub_(row_max)
                    weights = shifted.exp()
                    total = weights.sum(-1)
                    log_total = total.log()
                    # H = log Σ e^z - Σ e^z·z / Σ e^z for z = logits - max (the max cancels)
                    entropy[chunk] = log_total - weights.mul_(shifted).sum(-1) / total
                    log_normalisers[chunk] = log_total + row_max.squeeze(-1)
                else:
                    # log-sum-exp in place (torch.logsumexp would allocate a second [chunk, V] temporary)
                    log_normalisers[chunk] = logits.sub_(row_max).exp_().sum(-1).log_() + row_max.squeeze(-1)
                token_logps[chunk] = target_logits - log_normalisers[chunk]
        ctx.save_for_backward(rows, targets, weight, bias, log_normalisers)
        if with_stats:
            ctx.mark_non_differentiable(entropy, is_top1)
        return token_logps, entropy, is_top1

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logps, *_stats_grads):
        rows, targets, weight, bias, log_normalisers = ctx.saved_tensors
        need_rows, _, need_weight, need_bias = ctx.needs_input_grad[:4]
        rows_dtype, weight_dtype, bias_dtype = ctx.input_dtypes
        accumulate = torch.promote_types(weight.dtype, torch.float32)
        grad_rows = torch.empty_like(rows) if need_rows else None
        grad_weight = torch.zeros(weight.shape, dtype=accumulate, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=accumulate, device=bias.device) if need_bias else None
        grad_logps = grad_logps.to(log_normalisers.dtype)
        with torch.autocast(rows.device.type, enabled=False):
            for start in range(0, rows.shape[0], ctx.chunk_size):
                chunk = slice(start, start + ctx.chunk_size)
                scale = grad_logps[chunk, None]
                # d logp / d logits = onehot(target) - softmax: the softmax is rebuilt in place from the logits
                grad_logits = at_least_float32(F.linear(rows[chunk], weight, bias))
                grad_logits.sub_(log_normalisers[chunk, None]).exp_().mul_(-scale)
                grad_logits.scatter_add_(-1, targets[chunk, None], scale)
                if need_bias:
                    grad_bias += grad_logits.sum(0)
                grad_logits = grad_logits.to(weight.dtype)
                if need_rows:
                    grad_rows[chunk] = grad_logits @ weight
                if need_weight:
                    if accumulate == weight.dtype:
                        grad_weight.addmm_(grad_logits.T, rows[chunk])
                    else:
                        grad_weight += grad_logits.T @ rows[chunk]
        return (
            None if grad_rows is None else grad_rows.to(rows_dtype),
            None,
            None if grad_weight is None else grad_weight.to(weight_dtype),
            None if grad_bias is None else grad_bias.to(bias_dtype),
            None,
            None,
        )


def chunked_label_logps(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lm_head_bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same result as ``gather_label_logps(F.linear(hidden_states, W, b), labels)`` without full logits.

    Only positions whose next label counts (``labels[:, t+1] != ignore_index``) are scored: their hidden states are
    gathered into ``n`` rows and the LM head runs over ``chunk_size`` rows at a time, so at most one
    ``[chunk_size, V]`` float32 logits buffer exists at once, in forward and (recomputed) in backward; see
    :class:`_ChunkedLabelLogps`. Ignored positions get 0 and no gradient, as on the plain path. Gradients flow to
    the hidden states, the weight and the bias (cost: one extra LM-head matmul per chunk in backward). Logit
    soft-capping/scaling (absent in Mistral) is not applied.
    """
    scored = chunked_label_scores(hidden_states, lm_head_weight, labels, chunk_size, lm_head_bias, ignore_index)
    return scored.token_logps, scored.response_mask


class LabelScores(NamedTuple):
    """Per position ``[B, L-1]``: the label's log-prob, the response mask and, when asked for, the entropy of the
    next-token distribution and whether the label is its argmax (0 / False off the mask; None when not asked for)."""

    token_logps: torch.Tensor
    response_mask: torch.Tensor
    entropy: torch.Tensor | None = None
    is_top1: torch.Tensor | None = None


def chunked_label_scores(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lm_head_bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    with_stats: bool = False,
) -> LabelScores:
    """:func:`chunked_label_logps` and, with ``with_stats``, each response position's entropy and top-1 hit (no
    gradient; computed from the same chunk of logits, see :class:`_ChunkedLabelLogps`)."""
    _check_chunk_size(chunk_size)
    rows, targets, index, response_mask = _response_rows(hidden_states, labels, lm_head_weight, ignore_index)
    logps, entropy, is_top1 = _ChunkedLabelLogps.apply(rows, targets, lm_head_weight, lm_head_bias, chunk_size,
                                                        with_stats)
    batch, length = labels.shape

    def scatter(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(batch * length).index_copy(0, index, values).view(batch, length)[:, :-1]

    if not with_stats:
        return LabelScores(scatter(logps), response_mask)
    return LabelScores(scatter(logps), response_mask, scatter(entropy), scatter(is_top1))


@torch.no_grad()
def mean_logits(
    hidden_states: torch.Tensor, lm_head_weight: torch.Tensor, lm_head_bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the vocabulary of the logits at every position ``[B, L]``, in at least float32, without the logits:
    ``mean_v (h·W_v + b_v) = h · mean_v W_v + mean_v b_v``. No gradient (TRL logs it)."""
    with torch.autocast(hidden_states.device.type, enabled=False):
        means = at_least_float32(hidden_states) @ at_least_float32(lm_head_weight).mean(0)
        return means if lm_head_bias is None else means + at_least_float32(lm_head_bias).mean()


@torch.no_grad()
def chunked_argmax(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lm_head_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy token ids ``[B, L]`` (argmax of the logits at every position), ``chunk_size`` rows at a time.

    IFT's pass 1 needs only these ids, never the logits, so no gradient and no full ``[B, L, V]`` tensor.
    """
    _check_chunk_size(chunk_size)
    rows, batch, length = _lm_head_rows(hidden_states, lm_head_weight)
    pieces = [
        F.linear(rows[start : start + chunk_size], lm_head_weight, lm_head_bias).argmax(-1)
        for start in range(0, max(rows.shape[0], 1), chunk_size)
    ]
    return torch.cat(pieces).view(batch, length)


@torch.no_grad()
def chunked_greedy_and_label_logps(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lm_head_bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunked LM-head pass, no gradient: greedy ids ``[B, L]`` and label log-probs ``[B, L-1]`` + mask.

    IFT's pass 1 needs the argmax (for the intuition) and, for monitoring, the plain SFT loss on the true
    inputs; both come from the same ``[chunk_size, V]`` logits, so the head runs once per position.
    """
    _check_chunk_size(chunk_size)
    rows, batch, length = _lm_head_rows(hidden_states, lm_head_weight)
    targets, response_mask = _shifted_targets(labels, ignore_index)
    # Row r = (b, t) predicts label t+1; the last position of each sequence has no label (use index 0).
    padded_targets = F.pad(targets, (0, 1), value=0).reshape(-1)
    greedy, logps = [], []
    for start in range(0, max(rows.shape[0], 1), chunk_size):
        logits = F.linear(rows[start : start + chunk_size], lm_head_weight, lm_head_bias)
        greedy.append(logits.argmax(-1))
        logps.append(_label_logps_from_logits(logits, padded_targets[start : start + chunk_size]))
    greedy_ids = torch.cat(greedy).view(batch, length)
    token_logps = torch.cat(logps).view(batch, length)[:, :-1]
    return greedy_ids, token_logps.masked_fill(~response_mask, 0.0), response_mask


def label_logps_and_reference_kl(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """TDPO's per-token terms from full logits: ``(token_logps, ref_token_logps, token_kl, response_mask)``, ``[B, L-1]``.

    ``token_logps`` / ``ref_token_logps``: log-prob of the next label under the policy / the reference (as
    :func:`gather_label_logps`); ``token_kl[b, t] = KL(π_ref(· | x_≤t) ‖ π(· | x_≤t)) = Σ_v p_ref(v) (log p_ref(v) -
    log p(v))`` over the whole vocabulary. All three are 0 off the response mask. Only response positions go through
    the log-softmax (``[n, V]`` for n response tokens, in at least float32); ``ref_logits`` is a constant (detached), so
    gradients reach ``logits`` only, through ``token_logps`` and ``token_kl``.
    """
    targets, response_mask = _shifted_targets(labels, ignore_index)
    policy = at_least_float32(logits[:, :-1][response_mask]).log_softmax(-1)
    reference = at_least_float32(ref_logits[:, :-1][response_mask].detach()).log_softmax(-1)
    index = targets[response_mask].unsqueeze(-1)
    per_row = (policy.gather(-1, index).squeeze(-1), reference.gather(-1, index).squeeze(-1),
               (reference.exp() * (reference - policy)).sum(-1))

    def scatter(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(response_mask.shape).masked_scatter(response_mask, values)

    token_logps, ref_token_logps, token_kl = (scatter(values) for values in per_row)
    return token_logps, ref_token_logps, token_kl, response_mask
