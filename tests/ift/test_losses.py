"""Tests of ift.losses against independent references: naive per-token loops written straight from the spec
(plain Python floats) and hand-computed numbers. Every numeric comparison of the IFT weights runs in float64."""

import itertools
import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from ift.logprobs import (
    chunked_argmax,
    chunked_greedy_and_label_logps,
    chunked_label_logps,
    chunked_label_scores,
    gather_label_logps,
    label_logps_and_reference_kl,
    mean_logits,
)
from ift.losses import (
    PROPAGATION_NORMS,
    PROPAGATION_SIDES,
    PROPAGATION_TYPES,
    discounted_cumsum,
    dpo_loss,
    ift_linear_loss,
    ift_loss,
    ift_sequence_losses,
    intuition_input_ids,
    lambda_at,
    lambda_noise,
    mix_embeddings,
    orpo_loss,
    propagation_weights,
    reduce_token_losses,
    sequence_logps,
    sft_loss,
    simpo_loss,
    tdpo_loss,
)

GAMMAS = (0.0, 0.5, 0.95, 1.0)
# (prompt positions, response positions, padding positions) per row of the [B, L-1] response mask.
RAGGED_ROWS = ((3, 6, 2), (0, 11, 0), (5, 1, 5), (11, 0, 0), (1, 8, 2), (2, 9, 0))


def ragged_mask() -> torch.Tensor:
    """Prompt prefixes of different lengths, padding at the end, a row with T = 1 and one with T = 0,
    plus a two-turn row (a gap inside the response) appended to cover non-contiguous masks."""
    rows = [[False] * p + [True] * r + [False] * q for p, r, q in RAGGED_ROWS]
    rows.append([False, True, True, False, False, True, True, True, False, True, False])
    return torch.tensor(rows)


def random_logps(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Log-probs in [log 0.05, log 0.999] everywhere, off-mask positions included (they must be ignored)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.empty(shape, dtype=torch.float64).uniform_(0.05, 0.999, generator=generator).log()


# ----------------------------------------------------------------------------------------------------------
# Naive references (loops over batch and positions, Python floats)
# ----------------------------------------------------------------------------------------------------------


def naive_weights(logps, mask, gamma, ptype, side, norm) -> list[list[float]]:
    logps, mask = logps.tolist(), mask.tolist()
    n = len(logps[0])
    if gamma == 0:
        return [[1.0 if m else 0.0 for m in row] for row in mask]
    items = []
    for lp_row, m_row in zip(logps, mask):
        length = sum(m_row)
        per_type = {
            "loss": lambda lp, length=length: -lp / length,
            "logps": lambda lp: -lp,
            "mask": lambda lp: 1.0,
        }
        items.append([per_type[ptype](lp) if m else 0.0 for lp, m in zip(lp_row, m_row)])
    cum = []
    for row in items:
        if side == "left":
            cum.append([sum(gamma ** (j - t) * row[j] for j in range(t, n)) for t in range(n)])
        else:
            cum.append([sum(gamma ** (t - j) * row[j] for j in range(t + 1)) for t in range(n)])

    def softmax(row):
        top = max(row)
        exps = [math.exp(x - top) for x in row]
        return [e / sum(exps) for e in exps]

    if side == "left":
        cum = [[c if m else 0.0 for c, m in zip(c_row, m_row)] for c_row, m_row in zip(cum, mask)]
        per_norm = {"L1": lambda x: x, "L2": lambda x: x**2, "log": lambda x: math.log(x + 1)}
        raw = [softmax(row) if norm == "softmax" else [per_norm[norm](x) for x in row] for row in cum]
    else:
        cum = [[c if m else 1e6 for c, m in zip(c_row, m_row)] for c_row, m_row in zip(cum, mask)]
        shift = min(x for row in cum for x in row if x != 0)
        cum = [[x + shift for x in row] for row in cum]
        per_norm = {"L1": lambda x: 1 / x, "L2": lambda x: 1 / x**2, "log": lambda x: 1 / math.log(x + 1)}
        raw = [
            softmax([1 / x for x in row]) if norm == "softmax" else [per_norm[norm](x) for x in row]
            for row in cum
        ]
    weights = []
    for r_row, m_row in zip(raw, mask):
        r_row = [r if m else 0.0 for r, m in zip(r_row, m_row)]
        total = sum(r_row)
        weights.append([r * sum(m_row) / total if total > 0 else 0.0 for r in r_row])
    return weights


def naive_reduce(token_losses: list[list[float]], mask, reduction: str) -> float:
    mask = mask.tolist()
    if reduction == "token_mean":
        values = [x for row, m_row in zip(token_losses, mask) for x, m in zip(row, m_row) if m]
        return sum(values) / max(1, len(values))
    per_sequence = [
        sum(x for x, m in zip(row, m_row) if m) / sum(m_row)
        for row, m_row in zip(token_losses, mask)
        if any(m_row)
    ]
    return sum(per_sequence) / max(1, len(per_sequence))


# ----------------------------------------------------------------------------------------------------------
# Propagation weights and IFT loss: every option combination against the naive loop
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ptype,side,norm,gamma",
    list(itertools.product(PROPAGATION_TYPES, PROPAGATION_SIDES, PROPAGATION_NORMS, GAMMAS)),
)
def test_weights_and_ift_loss_match_naive_loop(ptype, side, norm, gamma):
    mask = ragged_mask()
    logps = random_logps(mask.shape, seed=zlib.crc32(f"{ptype}{side}{norm}{gamma}".encode()))
    options = dict(gamma=gamma, propagation_type=ptype, propagation_side=side, propagation_norm=norm)

    expected = naive_weights(logps, mask, gamma, ptype, side, norm)
    weights = propagation_weights(logps, mask, **options)
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64), rtol=1e-8, atol=1e-10)

    weighted = [[-w * lp for w, lp in zip(w_row, lp_row)] for w_row, lp_row in zip(expected, logps.tolist())]
    per_sequence = [sum(row) / max(1, sum(m_row)) for row, m_row in zip(weighted, mask.tolist())]
    torch.testing.assert_close(
        ift_sequence_losses(logps, mask, **options), torch.tensor(per_sequence, dtype=torch.float64)
    )
    for reduction in ("sequence_mean", "token_mean"):
        loss = ift_loss(logps, mask, reduction=reduction, **options)
        assert loss.item() == pytest.approx(naive_reduce(weighted, mask, reduction), rel=1e-9)


def test_right_side_shift_is_batch_global():
    """The reference adds the smallest nonzero value of the whole batch: a sequence's weights change when
    another sequence with a smaller cumulative value joins its batch (documented coupling)."""
    mask = torch.ones(2, 4, dtype=torch.bool)
    logps = torch.tensor([[-1.0, -2.0, -0.5, -1.0], [-0.01, -3.0, -3.0, -3.0]], dtype=torch.float64)
    alone = propagation_weights(logps[:1], mask[:1], gamma=0.9, propagation_side="right")
    together = propagation_weights(logps, mask, gamma=0.9, propagation_side="right")
    assert not torch.allclose(alone[0], together[0])
    expected = naive_weights(logps, mask, 0.9, "loss", "right", "L1")
    torch.testing.assert_close(together, torch.tensor(expected, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------


@st.composite
def weight_problems(draw):
    batch = draw(st.integers(1, 4))
    length = draw(st.integers(1, 16))
    mask = torch.tensor(
        draw(
            st.lists(
                st.lists(st.booleans(), min_size=length, max_size=length), min_size=batch, max_size=batch
            )
        )
    )
    losses = draw(
        st.lists(st.floats(1e-3, 20.0), min_size=batch * length, max_size=batch * length).map(
            lambda xs: torch.tensor(xs, dtype=torch.float64).view(batch, length)
        )
    )
    gamma = draw(st.one_of(st.sampled_from(GAMMAS), st.floats(0.0, 1.0)))
    options = dict(
        gamma=gamma,
        propagation_type=draw(st.sampled_from(PROPAGATION_TYPES)),
        propagation_side=draw(st.sampled_from(PROPAGATION_SIDES)),
        propagation_norm=draw(st.sampled_from(PROPAGATION_NORMS)),
    )
    return -losses, mask, options


@settings(max_examples=150, deadline=None)
@given(weight_problems())
def test_weights_are_finite_zero_off_mask_and_rows_sum_to_length(problem):
    logps, mask, options = problem
    weights = propagation_weights(logps, mask, **options)
    assert torch.isfinite(weights).all()
    assert (weights[~mask] == 0).all()
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), mask.sum(-1).to(torch.float64), rtol=1e-9, atol=1e-9)
    if options["gamma"] == 0:
        torch.testing.assert_close(weights, mask.to(torch.float64))
    assert torch.isfinite(ift_loss(logps, mask, **options))


@pytest.mark.parametrize("reduction", ["sequence_mean", "token_mean"])
def test_gamma_zero_and_lambda_zero_ift_is_sft(reduction):
    mask = ragged_mask()
    logps = random_logps(mask.shape, seed=3)
    true_embeds, intuition_embeds = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    assert torch.equal(mix_embeddings(true_embeds, intuition_embeds, 0.0), true_embeds)
    for ptype, side, norm in itertools.product(PROPAGATION_TYPES, PROPAGATION_SIDES, PROPAGATION_NORMS):
        options = dict(propagation_type=ptype, propagation_side=side, propagation_norm=norm)
        ift = ift_loss(logps, mask, gamma=0.0, reduction=reduction, **options)
        torch.testing.assert_close(ift, sft_loss(logps, mask, reduction))


@pytest.mark.parametrize("side,norm", list(itertools.product(PROPAGATION_SIDES, PROPAGATION_NORMS)))
def test_weights_gradcheck_float64(side, norm):
    mask = torch.tensor([[False, True, True, True, True], [False, False, True, True, False], [True] * 5])
    logps = random_logps(mask.shape, seed=11).requires_grad_(True)
    options = dict(gamma=0.95, propagation_type="loss", propagation_side=side, propagation_norm=norm)
    assert torch.autograd.gradcheck(lambda lp: propagation_weights(lp, mask, **options), (logps,))
    assert torch.autograd.gradcheck(lambda lp: ift_loss(lp, mask, **options), (logps,))


def test_gradient_flows_through_weights():
    """Not detached (the authors' intent): the IFT gradient differs from the one with frozen weights."""
    mask = ragged_mask()
    logps = random_logps(mask.shape, seed=5).requires_grad_(True)
    (grad,) = torch.autograd.grad(ift_loss(logps, mask, gamma=0.95), logps)
    weights = propagation_weights(logps, mask, gamma=0.95)
    (grad_frozen,) = torch.autograd.grad(reduce_token_losses(weights.detach() * -logps, mask), logps)
    assert grad[mask].abs().min() > 0
    assert not torch.allclose(grad, grad_frozen)
    assert (grad[~mask] == 0).all()


def test_empty_and_zero_loss_rows_give_no_nan_values_or_gradients():
    """Row 0 has T = 0; row 2 is predicted perfectly (log p = 0), so its "loss"/"logps" items are all 0 and
    left-side L1/L2/log weights have no mass to rescale (the reference divides 0 by 0 there)."""
    mask = torch.tensor([[False, False, False], [False, True, True], [False, True, True]])
    logps = random_logps(mask.shape, seed=2)
    logps[2] = 0.0
    logps.requires_grad_(True)
    for ptype, side, norm in itertools.product(PROPAGATION_TYPES, PROPAGATION_SIDES, PROPAGATION_NORMS):
        options = dict(gamma=0.5, propagation_type=ptype, propagation_side=side, propagation_norm=norm)
        weights = propagation_weights(logps, mask, **options)
        assert (weights[0] == 0).all() and torch.isfinite(weights).all()
        if side == "left" and norm != "softmax" and ptype != "mask":
            assert (weights[2] == 0).all()
        assert ift_sequence_losses(logps, mask, **options)[0] == 0
        (grad,) = torch.autograd.grad(ift_loss(logps, mask, **options), logps)
        assert torch.isfinite(grad).all()
    empty = torch.zeros_like(mask)
    for reduction in ("sequence_mean", "token_mean"):
        loss = ift_loss(logps, empty, reduction=reduction)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, logps)
        assert (grad == 0).all()


def test_discounted_cumsum_matches_loop():
    values = random_logps((2, 6), seed=8)
    for direction, gamma in itertools.product(("future", "past"), (0.0, 0.3, 1.0)):
        out = discounted_cumsum(values, gamma, direction).tolist()
        for b, t in itertools.product(range(2), range(6)):
            js = range(t, 6) if direction == "future" else range(t + 1)
            expected = sum(gamma ** abs(j - t) * values[b, j].item() for j in js)
            assert out[b][t] == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_ift_linear_loss_matches_loop(gamma):
    mask = ragged_mask()
    logps = random_logps(mask.shape, seed=9)
    losses, m = (-logps).tolist(), mask.tolist()
    n = len(m[0])
    expected = []
    for row, m_row in zip(losses, m):
        positions = [t for t in range(n) if m_row[t]]
        discounted = sum(gamma ** (j - t) * row[j] for t in positions for j in positions if j >= t)
        mass = sum(gamma ** (j - t) for t in positions for j in positions if j >= t)
        expected.append(discounted / mass if positions else 0.0)
    torch.testing.assert_close(
        ift_linear_loss(logps, mask, gamma=gamma), torch.tensor(expected, dtype=torch.float64)
    )
    if gamma == 0:
        torch.testing.assert_close(
            ift_linear_loss(logps, mask, gamma=0.0), -sequence_logps(logps, mask, average=True)
        )


# ----------------------------------------------------------------------------------------------------------
# SFT and reductions by hand
# ----------------------------------------------------------------------------------------------------------


def test_sft_reductions_by_hand():
    logps = torch.tensor([[9.0, -1.0, -3.0], [9.0, 9.0, -2.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[False, True, True], [False, False, True], [False, False, False]])
    assert sft_loss(logps, mask).item() == pytest.approx((2.0 + 2.0) / 2)  # T = 0 row excluded
    assert sft_loss(logps, mask, "token_mean").item() == pytest.approx(6.0 / 3)
    torch.testing.assert_close(sequence_logps(logps, mask), torch.tensor([-4.0, -2.0, 0.0]))
    torch.testing.assert_close(sequence_logps(logps, mask, average=True), torch.tensor([-2.0, -2.0, 0.0]))


# ----------------------------------------------------------------------------------------------------------
# Log-probs from logits: plain, chunked, argmax
# ----------------------------------------------------------------------------------------------------------


def test_gather_label_logps_matches_loop():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, generator=generator) * 3
    labels = torch.tensor([[-100, -100, 3, 6, -100], [-100, 0, 1, 2, 4]])
    token_logps, mask = gather_label_logps(logits, labels)
    assert token_logps.shape == mask.shape == (2, 4)
    for b, t in itertools.product(range(2), range(4)):
        label = labels[b, t + 1].item()
        assert mask[b, t].item() == (label != -100)
        row = logits[b, t].tolist()
        expected = row[label] - math.log(sum(math.exp(x) for x in row)) if label != -100 else 0.0
        assert token_logps[b, t].item() == pytest.approx(expected, abs=1e-12)
    half, _ = gather_label_logps(logits.to(torch.bfloat16), labels)
    assert half.dtype == torch.float32


def lm_head_problem(dtype=torch.float64, bias=False):
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 7, 5, dtype=dtype, generator=generator).requires_grad_(True)
    weight = torch.randn(11, 5, dtype=dtype, generator=generator).requires_grad_(True)
    lm_bias = torch.randn(11, dtype=dtype, generator=generator).requires_grad_(True) if bias else None
    labels = torch.randint(0, 11, (3, 7), generator=generator)
    labels[0, :3] = -100
    labels[1, 5:] = -100
    labels[2, :] = -100
    return hidden, weight, lm_bias, labels


# lm_head_problem scores 8 positions (labels[:, t+1] != -100): 3 and 5 do not divide 8, 100 > 8
@pytest.mark.parametrize("chunk_size", [1, 3, 5, 8, 100])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_label_logps_values_and_gradients_equal_plain_path(chunk_size, dtype, tol, bias):
    hidden, weight, lm_bias, labels = lm_head_problem(dtype, bias)
    params = [p for p in (hidden, weight, lm_bias) if p is not None]
    coefficients = torch.randn(3, 6, dtype=dtype)

    plain, plain_mask = gather_label_logps(F.linear(hidden, weight, lm_bias), labels)
    plain_grads = torch.autograd.grad((plain * coefficients).sum(), params)
    chunked, chunked_mask = chunked_label_logps(
        hidden, weight, labels, chunk_size=chunk_size, lm_head_bias=lm_bias
    )
    chunked_grads = torch.autograd.grad((chunked * coefficients).sum(), params)

    assert torch.equal(plain_mask, chunked_mask)
    torch.testing.assert_close(chunked, plain, rtol=tol, atol=tol)
    for got, want in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    with torch.no_grad():
        no_graph, _ = chunked_label_logps(hidden, weight, labels, chunk_size=chunk_size, lm_head_bias=lm_bias)
    torch.testing.assert_close(no_graph, plain.detach(), rtol=tol, atol=tol)


def naive_label_logps(hidden, weight, bias, labels) -> torch.Tensor:
    """Straight from the definition: full logits, full log_softmax, pick the next label; 0 where it is ignored."""
    log_probs = torch.log_softmax(F.linear(hidden, weight, bias), dim=-1)
    rows = []
    for b in range(labels.shape[0]):
        row = []
        for t in range(labels.shape[1] - 1):
            label = labels[b, t + 1].item()
            row.append(log_probs[b, t, label] if label != -100 else log_probs.new_zeros(()))
        rows.append(torch.stack(row))
    return torch.stack(rows)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 8, 100])  # 8 scored positions; 3 and 5 do not divide 8
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_label_logps_matches_naive_log_softmax_gather_float64(chunk_size, bias):
    """IFT's pass-2 math against full-logits log_softmax + gather, float64: values and the gradients of the hidden
    states, LM head weight and bias, with prompt, padding and a fully ignored row (labels -100)."""
    hidden, weight, lm_bias, labels = lm_head_problem(torch.float64, bias)
    params = [p for p in (hidden, weight, lm_bias) if p is not None]
    coefficients = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = naive_label_logps(hidden, weight, lm_bias, labels)
    expected_grads = torch.autograd.grad((expected * coefficients).sum(), params)
    got, mask = chunked_label_logps(hidden, weight, labels, chunk_size=chunk_size, lm_head_bias=lm_bias)
    got_grads = torch.autograd.grad((got * coefficients).sum(), params)
    assert got.dtype == torch.float64 and got.shape == (3, 6)
    assert torch.equal(mask, labels[:, 1:] != -100)
    assert torch.all(got[~mask] == 0)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for name, got_grad, want in zip(("hidden", "weight", "bias"), got_grads, expected_grads):
        torch.testing.assert_close(got_grad, want, rtol=0, atol=1e-12, msg=f"gradient of {name}")
    assert torch.all(got_grads[0][2] == 0)  # the fully ignored row gets no gradient
    # the hand-written backward against finite differences
    assert torch.autograd.gradcheck(
        lambda *args: chunked_label_logps(args[0], args[1], labels, chunk_size=chunk_size,
                                          lm_head_bias=args[2] if bias else None)[0],
        tuple(params),
    )


def test_chunked_label_logps_all_ignored_gives_zeros_and_zero_gradients():
    hidden, weight, _, labels = lm_head_problem(torch.float64)
    labels = torch.full_like(labels, -100)
    got, mask = chunked_label_logps(hidden, weight, labels, chunk_size=4)
    assert not mask.any() and torch.all(got == 0)
    grad_hidden, grad_weight = torch.autograd.grad(got.sum(), (hidden, weight))
    assert torch.all(grad_hidden == 0) and torch.all(grad_weight == 0)


def test_chunked_label_logps_under_autocast_matches_plain_path():
    """bf16 autocast (float32 parameters, as Trainer's bf16 on a GPU): the LM head runs in bf16 like F.linear would,
    log-probs come out in float32 and gradients in the parameters' dtype."""
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 9, 16, generator=generator).requires_grad_(True)
    weight = torch.randn(50, 16, generator=generator).requires_grad_(True)
    labels = torch.randint(0, 50, (2, 9), generator=generator)
    labels[:, :3] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, _ = gather_label_logps(F.linear(hidden, weight), labels)
        chunked, _ = chunked_label_logps(hidden, weight, labels, chunk_size=5)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-5)
    coefficients = torch.randn(2, 8, generator=generator)
    plain_grads = torch.autograd.grad((plain * coefficients).sum(), (hidden, weight))
    chunked_grads = torch.autograd.grad((chunked * coefficients).sum(), (hidden, weight))
    for got, want in zip(chunked_grads, plain_grads):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in torch.utils._pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


def largest_tensor_in_training(compute) -> int:
    with _LargestTensor() as mode:
        token_logps, _ = compute()
        token_logps.sum().backward()
    return mode.largest


def largest_saved_for_backward(compute) -> int:
    """Elements of the largest tensor autograd saves for backward while ``compute()`` runs."""
    sizes = []

    def record(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(record, lambda tensor: tensor):
        compute()
    return max(sizes)


@pytest.mark.parametrize("largest", [largest_tensor_in_training, largest_saved_for_backward],
                         ids=["any op output, forward or backward", "saved for backward"])
def test_chunked_label_logps_never_holds_full_logits(largest):
    """No op output (forward or backward: backward recomputes each chunk's logits) and nothing saved for backward is
    larger than the LM head weight or one chunk of logits; the plain path's full [rows, V] logits are seen by both."""
    batch, length, hidden_size, vocab, chunk_size = 2, 50, 8, 1000, 16
    hidden = torch.randn(batch, length, hidden_size, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, requires_grad=True)
    labels = torch.randint(0, vocab, (batch, length))
    plain = largest(lambda: gather_label_logps(F.linear(hidden, weight), labels))
    chunked = largest(lambda: chunked_label_logps(hidden, weight, labels, chunk_size=chunk_size))
    assert plain >= batch * (length - 1) * vocab  # the measurement does see full logits on the plain path
    assert chunked <= max(vocab * hidden_size, chunk_size * vocab)


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 100])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_label_scores_stats_equal_the_full_logits(chunk_size, bias):
    """TRL's logged per-token values from the chunks (entropy, label is the argmax) and from the identity
    mean_v logit_v = h·mean_v W_v + mean_v b_v, against full float64 logits; asking for them changes neither the
    log-probs nor their gradients, and they carry no gradient."""
    hidden, weight, lm_bias, labels = lm_head_problem(torch.float64, bias)
    params = [p for p in (hidden, weight, lm_bias) if p is not None]
    logits = F.linear(hidden, weight, lm_bias).detach()
    labels[0, 4], labels[1, 2] = logits[0, 3].argmax(), logits[1, 1].argmax()  # two labels are the argmax
    log_probs = torch.log_softmax(logits[:, :-1], -1)
    plain = chunked_label_scores(hidden, weight, labels, chunk_size, lm_bias)
    scored = chunked_label_scores(hidden, weight, labels, chunk_size, lm_bias, with_stats=True)
    mask = scored.response_mask
    assert plain.entropy is None and plain.is_top1 is None
    assert torch.equal(scored.token_logps, plain.token_logps) and torch.equal(mask, labels[:, 1:] != -100)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    torch.testing.assert_close(scored.entropy, entropy.masked_fill(~mask, 0), rtol=0, atol=1e-12)
    top1 = (logits[:, :-1].argmax(-1) == labels[:, 1:]) & mask
    assert torch.equal(scored.is_top1, top1) and top1.any() and (mask & ~top1).any()
    assert not scored.entropy.requires_grad and not scored.is_top1.requires_grad
    coefficients = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with_stats = torch.autograd.grad((scored.token_logps * coefficients).sum(), params)
    without = torch.autograd.grad((plain.token_logps * coefficients).sum(), params)
    for got, want in zip(with_stats, without):
        assert torch.equal(got, want)
    torch.testing.assert_close(mean_logits(hidden, weight, lm_bias), logits.mean(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 21, 100])
def test_chunked_argmax_equals_plain_argmax(chunk_size):
    hidden, weight, lm_bias, _ = lm_head_problem(torch.float64, bias=True)
    for b in (None, lm_bias):
        expected = F.linear(hidden, weight, b).argmax(-1)
        got = chunked_argmax(hidden, weight, chunk_size, lm_head_bias=b)
        assert got.shape == (3, 7) and torch.equal(got, expected)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 18, 100])
def test_chunked_greedy_and_label_logps_equals_plain_path(chunk_size):
    hidden, weight, lm_bias, labels = lm_head_problem(torch.float64, bias=True)
    logits = F.linear(hidden, weight, lm_bias)
    greedy, logps, mask = chunked_greedy_and_label_logps(hidden, weight, labels, chunk_size, lm_head_bias=lm_bias)
    plain_logps, plain_mask = gather_label_logps(logits, labels)
    assert torch.equal(greedy, logits.argmax(-1))
    assert torch.equal(mask, plain_mask)
    torch.testing.assert_close(logps, plain_logps, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Intuition tokens, embedding mix, λ schedule
# ----------------------------------------------------------------------------------------------------------


def test_intuition_input_ids_by_hand():
    input_ids = torch.tensor([[10, 11, 12, 13, 14], [30, 31, 32, 33, 34]])
    labels = torch.tensor(
        [[-100, -100, 12, 13, -100], [30, 31, 32, 33, 34]]
    )  # row 1: labelled from position 0
    greedy = torch.tensor([[20, 21, 22, 23, 24], [40, 41, 42, 43, 44]])
    expected = torch.tensor([[10, 11, 21, 22, 14], [30, 40, 41, 42, 43]])  # shifted right, x̃_0 = x_0
    assert torch.equal(intuition_input_ids(input_ids, greedy, labels), expected)
    assert torch.equal(intuition_input_ids(input_ids, greedy[:, :-1], labels), expected)
    with pytest.raises(ValueError, match="greedy_next_ids"):
        intuition_input_ids(input_ids, greedy[:, :3], labels)


def test_mix_embeddings_by_hand():
    true_embeds, intuition_embeds = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    torch.testing.assert_close(mix_embeddings(true_embeds, intuition_embeds, 0.25), torch.tensor([1.5, 1.0]))
    with pytest.raises(ValueError, match="lam"):
        mix_embeddings(true_embeds, intuition_embeds, 1.5)


def test_lambda_static_and_linear_warmup_by_hand():
    assert lambda_at(0, max_lambda=0.2) == 0.2
    assert lambda_at(999, max_lambda=0.2, min_lambda=0.1) == 0.2
    warmup = dict(max_lambda=0.5, min_lambda=0.1, schedule="linear", warmup_steps=4)
    assert [lambda_at(s, **warmup) for s in (0, 1, 2, 4, 10)] == pytest.approx([0.1, 0.2, 0.3, 0.5, 0.5])
    # warmup 0: the reference's linear_warmup returns 1 at once, so λ = max from step 0
    assert lambda_at(0, max_lambda=0.5, schedule="linear") == 0.5
    assert lambda_at(1, max_lambda=0.5, schedule="linear") == 0.5


def test_lambda_disturbance_is_deterministic_and_clamped():
    noise = lambda_noise(seed=7, num_steps=20)
    assert noise == lambda_noise(seed=7, num_steps=20)
    assert noise[:5] == lambda_noise(seed=7, num_steps=5)  # same ε per (seed, step) whatever the horizon
    assert noise != lambda_noise(seed=8, num_steps=20)
    for step in range(20):
        expected = min(1.0, max(0.0, 0.2 + noise[step] * 0.5 * 0.2))
        assert lambda_at(step, max_lambda=0.2, disturb="normal", noise=noise) == pytest.approx(expected)
    assert lambda_at(0, max_lambda=0.8, disturb="normal", disturb_std=0.5, noise=[10.0]) == 1.0
    assert lambda_at(0, max_lambda=0.8, disturb="normal", disturb_std=0.5, noise=[-10.0]) == 0.0


@pytest.mark.parametrize(
    "kwargs,option",
    [
        (dict(max_lambda=0.2, schedule="cosine"), "schedule"),
        (dict(max_lambda=0.2, disturb="uniform"), "disturb"),
        (dict(max_lambda=1.5), "max_lambda"),
        (dict(max_lambda=0.2, min_lambda=-0.1), "min_lambda"),
        (dict(max_lambda=0.2, disturb="normal"), "noise"),
        (dict(max_lambda=0.2, disturb="normal", noise=[0.1, 0.2]), "noise"),
    ],
)
def test_lambda_bad_options_raise(kwargs, option):
    with pytest.raises(ValueError, match=option):
        lambda_at(3, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# DPO and ORPO by hand
# ----------------------------------------------------------------------------------------------------------


def test_dpo_loss_by_hand():
    beta = 0.1
    policy_chosen, policy_rejected = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
    ref_chosen, ref_rejected = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta
    )
    # pair 0: margins +1 and -1 -> logit 0.1 * 2; pair 1: margins 0 and +1 -> logit 0.1 * -1
    expected = [math.log(1 + math.exp(-0.2)), math.log(1 + math.exp(0.1))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert chosen_rewards.tolist() == pytest.approx([0.1, 0.0], abs=1e-6)
    assert rejected_rewards.tolist() == pytest.approx([-0.1, 0.1], abs=1e-6)
    assert not chosen_rewards.requires_grad


def test_orpo_loss_by_hand():
    beta = 0.25
    chosen, rejected = [-0.5, -2.0, -1e-4], [-1.5, -0.3, -3.0]  # -1e-4: log(1 - p) needs expm1 in float32
    log_odds = [
        (c - r) - (math.log(1 - math.exp(c)) - math.log(1 - math.exp(r))) for c, r in zip(chosen, rejected)
    ]
    expected = [-c + beta * math.log(1 + math.exp(-z)) for c, z in zip(chosen, log_odds)]
    losses, got_log_odds = orpo_loss(torch.tensor(chosen), torch.tensor(rejected), beta)
    assert got_log_odds.tolist() == pytest.approx(log_odds, rel=1e-5)
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)


def test_orpo_certain_answer_is_finite():
    chosen = torch.tensor([0.0, -1e-12], requires_grad=True)
    losses, log_odds = orpo_loss(chosen, torch.tensor([-1.0, 0.0]))
    assert torch.isfinite(losses).all() and torch.isfinite(log_odds).all()
    (grad,) = torch.autograd.grad(losses.sum(), chosen)
    assert torch.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------------------
# SimPO and TDPO: by hand, and from logits against per-token loops written from the papers' formulas
# ----------------------------------------------------------------------------------------------------------


def test_simpo_loss_by_hand():
    beta, ratio = 2.0, 0.8  # the IFT paper's: γ = 1.6
    chosen, rejected = [-0.5, -2.0], [-1.5, -0.3]
    losses, chosen_rewards, rejected_rewards = simpo_loss(torch.tensor(chosen), torch.tensor(rejected), beta, ratio)
    expected = [math.log(1 + math.exp(-(beta * c - beta * r - 1.6))) for c, r in zip(chosen, rejected)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert chosen_rewards.tolist() == pytest.approx([-1.0, -4.0]) and rejected_rewards.tolist() == pytest.approx(
        [-3.0, -0.6])
    assert not chosen_rewards.requires_grad


def test_tdpo_loss_by_hand():
    logratios_w, logratios_l = torch.tensor([1.0, -0.5]), torch.tensor([-1.0, 0.5])
    kl_w, kl_l = torch.tensor([0.2, 0.0]), torch.tensor([0.6, 0.3])
    # pair 0: u = 2, KL_l - KL_w = 0.4; pair 1: u = -1, KL_l - KL_w = 0.3
    tdpo1, _, _ = tdpo_loss(logratios_w, logratios_l, kl_w, kl_l, beta=0.1, variant="tdpo1")
    tdpo2, chosen_rewards, rejected_rewards = tdpo_loss(logratios_w, logratios_l, kl_w, kl_l, beta=0.1, alpha=0.5)
    assert tdpo1.tolist() == pytest.approx([math.log(1 + math.exp(-0.1 * 1.6)), math.log(1 + math.exp(0.1 * 1.3))])
    assert tdpo2.tolist() == pytest.approx([math.log(1 + math.exp(-0.1 * 1.8)), math.log(1 + math.exp(0.1 * 1.15))])
    assert chosen_rewards.tolist() == pytest.approx([0.12, -0.05]) and rejected_rewards.tolist() == pytest.approx(
        [-0.04, 0.08])


def pair_problem(seed: int, vocab: int = 7):
    """Chosen rows then rejected rows ([2B, L]): random policy and reference logits, labels with ragged answers
    (different prompt lengths, padding, a two-turn answer), as DPOTrainer and CPOTrainer batch them."""
    generator = torch.Generator().manual_seed(seed)
    masks = [[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0],   # chosen answers
             [0, 0, 1, 0, 0, 0], [0, 1, 1, 0, 1, 1], [0, 0, 0, 1, 1, 1]]   # rejected answers
    ids = torch.randint(0, vocab, (len(masks), len(masks[0])), generator=generator)
    labels = ids.masked_fill(torch.tensor(masks) == 0, -100)
    logits = torch.randn(*ids.shape, vocab, generator=generator, dtype=torch.float64).requires_grad_(True)
    ref_logits = torch.randn(*ids.shape, vocab, generator=generator, dtype=torch.float64)
    return logits, ref_logits, labels


def naive_token_terms(logits, ref_logits, labels, row, t):
    """log π(label), log π_ref(label) and KL(π_ref ‖ π) at position t of one row, one vocabulary entry at a time."""
    vocab = logits.shape[-1]
    log_z = torch.log(sum(torch.exp(logits[row, t, v]) for v in range(vocab)))
    ref_log_z = math.log(sum(math.exp(float(ref_logits[row, t, v])) for v in range(vocab)))
    kl = 0.0
    for v in range(vocab):
        ref_logp = float(ref_logits[row, t, v]) - ref_log_z
        kl = kl + math.exp(ref_logp) * (ref_logp - (logits[row, t, v] - log_z))
    label = int(labels[row, t + 1])
    return logits[row, t, label] - log_z, float(ref_logits[row, t, label]) - ref_log_z, kl


def naive_answer_sums(logits, ref_logits, labels, row):
    """Σ_t log π, Σ_t log π_ref, Σ_t KL and T over one row's answer positions (label t+1 not -100)."""
    logp, ref_logp, kl, length = 0.0, 0.0, 0.0, 0
    for t in range(labels.shape[1] - 1):
        if int(labels[row, t + 1]) != -100:
            term_logp, term_ref, term_kl = naive_token_terms(logits, ref_logits, labels, row, t)
            logp, ref_logp, kl, length = logp + term_logp, ref_logp + term_ref, kl + term_kl, length + 1
    return logp, ref_logp, kl, length


def softplus_of_minus(z):
    """-log σ(z) = log(1 + e^{-z}), written out rather than through F.logsigmoid."""
    return torch.log1p(torch.exp(-z))


def test_label_logps_and_reference_kl_match_a_loop_over_the_vocabulary():
    logits, ref_logits, labels = pair_problem(seed=1)
    ref_logits.requires_grad_(True)  # even a reference that carries a graph is used as a constant
    token_logps, ref_token_logps, token_kl, mask = label_logps_and_reference_kl(logits, ref_logits, labels)
    assert torch.equal(mask, labels[:, 1:] != -100)
    for row in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if not mask[row, t]:
                assert token_logps[row, t] == 0 and ref_token_logps[row, t] == 0 and token_kl[row, t] == 0
                continue
            with torch.no_grad():
                logp, ref_logp, kl = naive_token_terms(logits, ref_logits.detach(), labels, row, t)
            assert float(token_logps[row, t].detach()) == pytest.approx(float(logp), rel=1e-12)
            assert float(ref_token_logps[row, t].detach()) == pytest.approx(ref_logp, rel=1e-12)
            assert float(token_kl[row, t].detach()) == pytest.approx(float(kl), rel=1e-10) and float(kl) > 0
    same, _, zero_kl, _ = label_logps_and_reference_kl(ref_logits.detach(), ref_logits.detach(), labels)
    assert zero_kl.abs().max() < 1e-12
    torch.testing.assert_close(same, gather_label_logps(ref_logits.detach(), labels)[0], rtol=1e-12, atol=1e-12)
    (token_kl.sum() + ref_token_logps.sum()).backward()
    assert ref_logits.grad is None and logits.grad.abs().max() > 0  # the reference is a constant


def test_simpo_loss_from_logits_matches_the_per_token_loop_value_and_gradient():
    logits, _, labels = pair_problem(seed=2)
    beta, gamma = 2.0, 1.6
    pairs = labels.shape[0] // 2
    token_logps, mask = gather_label_logps(logits, labels)
    means = sequence_logps(token_logps, mask, average=True)
    losses, _, _ = simpo_loss(means[:pairs], means[pairs:], beta=beta, gamma_beta_ratio=gamma / beta)
    (grad,) = torch.autograd.grad(losses.mean(), logits)
    naive = 0.0
    for pair in range(pairs):
        chosen, _, _, chosen_length = naive_answer_sums(logits, logits.detach(), labels, pair)
        rejected, _, _, rejected_length = naive_answer_sums(logits, logits.detach(), labels, pairs + pair)
        naive = naive + softplus_of_minus(beta / chosen_length * chosen - beta / rejected_length * rejected - gamma)
    naive = naive / pairs
    (naive_grad,) = torch.autograd.grad(naive, logits)
    assert float(losses.mean()) == pytest.approx(float(naive), rel=1e-12)
    torch.testing.assert_close(grad, naive_grad, rtol=1e-10, atol=1e-12)


def naive_tdpo(logits, ref_logits, labels, beta, alpha, variant):
    """TDPO from its definition: u = β (log-ratio_w - log-ratio_l), δ = β (SeqKL_l - SeqKL_w); TDPO1: -log σ(u - δ),
    TDPO2: -log σ(u - α δ) with the chosen answer's SeqKL a constant (stop-gradient); mean over pairs."""
    pairs = labels.shape[0] // 2
    total = 0.0
    for pair in range(pairs):
        logp_w, ref_w, kl_w, _ = naive_answer_sums(logits, ref_logits, labels, pair)
        logp_l, ref_l, kl_l, _ = naive_answer_sums(logits, ref_logits, labels, pairs + pair)
        u = beta * ((logp_w - ref_w) - (logp_l - ref_l))
        if variant == "tdpo1":
            total = total + softplus_of_minus(u - beta * (kl_l - kl_w))
        else:
            total = total + softplus_of_minus(u - alpha * beta * (kl_l - kl_w.detach()))
    return total / pairs


@pytest.mark.parametrize("variant", ["tdpo1", "tdpo2"])
def test_tdpo_loss_from_logits_matches_the_per_token_loop_value_and_gradient(variant):
    logits, ref_logits, labels = pair_problem(seed=3)
    beta, alpha = 0.1, 0.5
    pairs = labels.shape[0] // 2
    token_logps, ref_token_logps, token_kl, mask = label_logps_and_reference_kl(logits, ref_logits, labels)
    logratios = sequence_logps(token_logps - ref_token_logps, mask)
    seq_kl = sequence_logps(token_kl, mask)
    losses, _, _ = tdpo_loss(logratios[:pairs], logratios[pairs:], seq_kl[:pairs], seq_kl[pairs:], beta=beta,
                             alpha=alpha, variant=variant)
    (grad,) = torch.autograd.grad(losses.mean(), logits, retain_graph=True)
    naive = naive_tdpo(logits, ref_logits, labels, beta, alpha, variant)
    (naive_grad,) = torch.autograd.grad(naive, logits)
    assert float(losses.mean()) == pytest.approx(float(naive), rel=1e-12)
    torch.testing.assert_close(grad, naive_grad, rtol=1e-10, atol=1e-12)
    # the sequential-KL term moves the gradient: it is not DPO's
    policy, reference = sequence_logps(token_logps, mask), sequence_logps(ref_token_logps, mask)
    dpo, _, _ = dpo_loss(policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:], beta=beta)
    (dpo_grad,) = torch.autograd.grad(dpo.mean(), logits)
    assert (grad - dpo_grad).abs().max() > 1e-4


def test_tdpo2_stops_the_gradient_of_the_chosen_answers_kl_only():
    """TDPO2's gradient is the loop's with sg(SeqKL_w), and differs from the loop's with the gradient kept."""
    logits, ref_logits, labels = pair_problem(seed=4)
    pairs = labels.shape[0] // 2
    token_logps, ref_token_logps, token_kl, mask = label_logps_and_reference_kl(logits, ref_logits, labels)
    logratios, seq_kl = sequence_logps(token_logps - ref_token_logps, mask), sequence_logps(token_kl, mask)
    losses, _, _ = tdpo_loss(logratios[:pairs], logratios[pairs:], seq_kl[:pairs], seq_kl[pairs:], alpha=0.5)
    (grad,) = torch.autograd.grad(losses.mean(), logits)
    beta, alpha = 0.1, 0.5
    kept = 0.0
    for pair in range(pairs):
        logp_w, ref_w, kl_w, _ = naive_answer_sums(logits, ref_logits, labels, pair)
        logp_l, ref_l, kl_l, _ = naive_answer_sums(logits, ref_logits, labels, pairs + pair)
        kept = kept + softplus_of_minus(beta * ((logp_w - ref_w) - (logp_l - ref_l)) - alpha * beta * (kl_l - kl_w))
    (kept_grad,) = torch.autograd.grad(kept / pairs, logits)
    assert (grad - kept_grad)[:pairs].abs().max() > 1e-6  # the chosen rows' KL gradient is stopped
    torch.testing.assert_close(grad[pairs:], kept_grad[pairs:], rtol=1e-10, atol=1e-12)  # the rejected rows' is not


# ----------------------------------------------------------------------------------------------------------
# Bad options
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,option",
    [
        (dict(propagation_type="reward"), "propagation_type"),
        (dict(propagation_side="middle"), "propagation_side"),
        (dict(propagation_norm="L3"), "propagation_norm"),
        (dict(gamma=1.5), "gamma"),
        (dict(gamma=-0.1), "gamma"),
        (dict(gamma=0.0, propagation_norm="L3"), "propagation_norm"),  # validated even when γ = 0
    ],
)
def test_propagation_bad_options_raise(kwargs, option):
    mask = ragged_mask()
    logps = random_logps(mask.shape, seed=0)
    with pytest.raises(ValueError, match=option):
        propagation_weights(logps, mask, **{"gamma": 0.5, **kwargs})
    with pytest.raises(ValueError, match=option):
        ift_loss(logps, mask, **kwargs)


def test_other_bad_options_raise():
    mask = ragged_mask()
    logps = random_logps(mask.shape, seed=0)
    with pytest.raises(ValueError, match="reduction.*sequence_mean"):
        sft_loss(logps, mask, reduction="mean")
    with pytest.raises(ValueError, match="reduction"):
        ift_loss(logps, mask, reduction="sum")
    with pytest.raises(ValueError, match="direction"):
        discounted_cumsum(logps, 0.5, "sideways")
    with pytest.raises(ValueError, match="gamma"):
        ift_linear_loss(logps, mask, gamma=2.0)
    hidden, weight, _, labels = lm_head_problem()
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_label_logps(hidden, weight, labels, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_argmax(hidden, weight, chunk_size=0)
    with pytest.raises(ValueError, match="variant"):
        tdpo_loss(*torch.zeros(4, 1), variant="tdpo3")
    with pytest.raises(ValueError, match="hidden_states"):
        chunked_argmax(hidden[0], weight)
