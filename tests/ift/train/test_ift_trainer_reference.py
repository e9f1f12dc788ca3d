"""IFTTrainer against a hand-written reference of one IFT step at λ ≠ 0, γ > 0 (where IFT is not SFT).

The reference is written out plainly from the method's description (docs/design.md, ift.train.ift_trainer and ift.losses
docstrings) with Python loops, and calls no ``ift.losses`` helper:

(a) pass 1 on the true ids without gradient, greedy argmax at every position;
(b) the intuition x̃: x̃_0 = x_0; for t ≥ 1 a response token (labels[t] != -100) becomes the greedy guess of position
    t-1, every other token (prompt, padding) stays;
(c) pass 2 on ((1-λ)·E(x) + λ·E(x̃)).detach(), E the current input-embedding table;
(d) per-token log-probs of the true labels from the full logits (position t predicts label t+1);
(e) relation-propagation weights, default form (type "loss", side "left", norm "L1"): c_t = -log p_t / T,
    W_t = Σ_{j ≥ t on the response} γ^{j-t} c_j, w_t = T · W_t / Σ_s W_s (not detached); unit weights at γ = 0;
(f) per sequence (1/T) Σ_t w_t · (-log p_t), then the mean over the sequences.

Everything runs in float64, so the trainer's loss and every parameter's gradient (one plain SGD step at lr 1, read as
the parameter change) must match the reference to ~1e-10. The test also checks that the reference itself tells the
cases apart (λ = 0 or γ = 0 gives a clearly different loss and gradient), so forcing λ or γ to 0 in the trainer, or
feeding it the true ids as the intuition, fails it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ift.train.ift_trainer import IFTOptions, IFTTrainer
from tiny_lm import qa_rows, tiny_model, tiny_tokenizer

IGNORE = -100
RTOL, ATOL = 1e-9, 1e-11  # float64 throughout
# Far above the float64 tolerance: how much the reference must move when λ or γ is set to 0.
MIN_LOSS_GAP, MIN_GRAD_GAP = 1e-4, 1e-5


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _trainer(tmp_path, model, rows, tok, options):
    from datasets import Dataset
    from trl import SFTConfig

    args = SFTConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=len(rows), gradient_accumulation_steps=1,
        max_steps=1, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0,
        weight_decay=0.0, bf16=False, use_cpu=True, report_to="none", seed=0, data_seed=0, logging_steps=1,
        activation_checkpointing=False, save_strategy="no", max_length=64, disable_tqdm=True,
    )
    return IFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                      ift=options)


def _one_sgd_step_gradients(trainer) -> dict[str, torch.Tensor]:
    """Run the trainer's one optimiser step (plain SGD, lr 1, float64) and read each parameter's gradient as its
    change."""
    start = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    assert all(p.dtype == torch.float64 for p in start.values())
    trainer.train()
    return {name: start[name] - p.detach() for name, p in trainer.model.named_parameters()}


def _assert_same_loss_and_gradients(loss, grads, expected_loss, expected_grads, what: str) -> None:
    torch.testing.assert_close(loss, expected_loss, rtol=RTOL, atol=ATOL,
                               msg=lambda m: f"IFT loss differs from {what}: {m}")
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=RTOL, atol=ATOL,
                                   msg=lambda m, name=name: f"gradient of {name} differs from {what}: {m}")


def _reference_step(base, batch, lam: float, gamma: float):
    """The loss of one IFT step written out by hand, and every parameter's gradient (None-free dict)."""
    model = copy.deepcopy(base)
    model.zero_grad(set_to_none=True)
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    n_seq, length = input_ids.shape

    # (a) pass 1: greedy guess at every position, no gradient
    with torch.no_grad():
        greedy = model(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)

    # (b) the intuition: each response token -> the previous position's greedy guess; x_0, prompt, padding stay
    intuition = input_ids.clone()
    for b in range(n_seq):
        for t in range(1, length):
            if int(labels[b, t]) != IGNORE:
                intuition[b, t] = greedy[b, t - 1]

    # (c) pass 2 on the detached mix of the two sequences' input embeddings
    table = model.get_input_embeddings().weight.detach()
    mixed = ((1.0 - lam) * table[input_ids] + lam * table[intuition]).detach()
    logits = model(inputs_embeds=mixed, attention_mask=attention_mask).logits

    # (d) per-token log-prob of the true next label, from the full logits
    log_probs = torch.log_softmax(logits, dim=-1)
    per_sequence = []
    for b in range(n_seq):
        positions = [t for t in range(length - 1) if int(labels[b, t + 1]) != IGNORE]
        if not positions:
            continue
        nll = [-log_probs[b, t, labels[b, t + 1]] for t in positions]
        n_tokens = len(positions)
        # (e) relation propagation, type "loss", side "left", norm "L1"; γ = 0 is plain SFT (unit weights), as
        # documented (the formula's own γ -> 0 limit would be w_t = T·ℓ_t / Σ ℓ instead)
        if gamma == 0:
            weights = [1.0] * n_tokens
        else:
            items = [value / n_tokens for value in nll]
            future = []
            for i, t in enumerate(positions):
                total = 0.0
                for k in range(i, n_tokens):
                    total = total + gamma ** (positions[k] - t) * items[k]
                future.append(total)
            mass = sum(future)
            weights = [n_tokens * value / mass for value in future]
        # (f) per-sequence mean of the weighted token losses
        per_sequence.append(sum(w * value for w, value in zip(weights, nll)) / n_tokens)
    loss = sum(per_sequence) / len(per_sequence)
    loss.backward()
    grads = {name: (torch.zeros_like(p) if p.grad is None else p.grad.detach().clone())
             for name, p in model.named_parameters()}
    return loss.detach(), grads, intuition


def _grad_gap(a, b) -> float:
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def _per_sequence_mean_sft(base, batch):
    """Per-sequence-mean NLL of the response on the true inputs (no intuition, no weights) and its gradient, with
    the input embedding's gradient zeroed (IFT's input path has none, even at λ = 0)."""
    model = copy.deepcopy(base)
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    log_probs = torch.log_softmax(logits, dim=-1)
    labels = batch["labels"]
    means = []
    for b in range(labels.shape[0]):
        picked = [-log_probs[b, t, labels[b, t + 1]] for t in range(labels.shape[1] - 1) if labels[b, t + 1] != IGNORE]
        means.append(sum(picked) / len(picked))
    loss = sum(means) / len(means)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    grads["model.embed_tokens.weight"].zero_()
    return loss.detach(), grads


@pytest.mark.parametrize(
    "lam, gamma, memory_efficient",
    [(0.5, 0.95, True), (0.2, 0.5, False)],
    ids=["lambda0.5-gamma0.95-chunked", "lambda0.2-gamma0.5-plain"],
)
def test_one_ift_step_matches_a_hand_written_reference(tmp_path, tok, lam, gamma, memory_efficient):
    rows = qa_rows(6, seed=11)
    base = tiny_model(tok, seed=11).double()
    options = IFTOptions(max_lambda=lam, min_lambda=lam, gamma=gamma, memory_efficient=memory_efficient,
                         chunk_size=7)
    trainer = _trainer(tmp_path, copy.deepcopy(base), rows, tok, options)
    batch = next(iter(trainer.get_train_dataloader()))  # all rows in one batch: the batch of the step below
    assert trainer.current_lambda() == pytest.approx(lam)

    # the trainer's loss on the batch (step 0), then its one SGD step (lr 1: the parameter change is the gradient)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    grads = _one_sgd_step_gradients(trainer)

    expected_loss, expected_grads, intuition = _reference_step(base, batch, lam, gamma)
    response = batch["labels"] != IGNORE
    assert (intuition[response] != batch["input_ids"][response]).any(), "the intuition must differ from x somewhere"
    assert torch.equal(intuition[~response], batch["input_ids"][~response])

    _assert_same_loss_and_gradients(loss, grads, expected_loss, expected_grads, "the reference")
    assert float(expected_grads["lm_head.weight"].abs().max()) > 0
    assert float(expected_grads["model.embed_tokens.weight"].abs().max()) == 0  # the input path has no gradient

    # the reference separates IFT from its SFT-like limits far beyond the tolerance (the test can see λ and γ)
    for other_lam, other_gamma in ((0.0, gamma), (lam, 0.0), (0.0, 0.0)):
        other_loss, other_grads, _ = _reference_step(base, batch, other_lam, other_gamma)
        assert abs(float(other_loss - expected_loss)) > MIN_LOSS_GAP, (other_lam, other_gamma)
        assert _grad_gap(other_grads, expected_grads) > MIN_GRAD_GAP, (other_lam, other_gamma)


def test_lambda_zero_gamma_zero_loss_and_gradient_are_the_per_sequence_mean_sft(tmp_path, tok):
    """The SFT limit, in float64 and for the loss value too (tests/ift/train/test_ift_trainer.py checks the float32 gradient):
    at λ = 0, γ = 0 the trainer's loss and gradient are the plain per-sequence-mean NLL's on the true inputs (input
    embedding detached), as is the hand-written IFT reference's loss."""
    rows = qa_rows(6, seed=12)
    base = tiny_model(tok, seed=12).double()
    trainer = _trainer(tmp_path, copy.deepcopy(base), rows, tok, IFTOptions(max_lambda=0.0, min_lambda=0.0,
                                                                           gamma=0.0))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    grads = _one_sgd_step_gradients(trainer)

    sft_loss, sft_grads = _per_sequence_mean_sft(base, batch)
    _assert_same_loss_and_gradients(loss, grads, sft_loss, sft_grads, "per-sequence-mean SFT (λ = γ = 0)")
    # and the hand-written IFT reference reduces to it there
    reference_loss, _, _ = _reference_step(base, batch, 0.0, 0.0)
    torch.testing.assert_close(reference_loss, sft_loss, rtol=RTOL, atol=ATOL)
