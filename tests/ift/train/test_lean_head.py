"""The lean LM head (ift.train.lean_head, ``memory_efficient: true``) against TRL's own trainers and a plain reference.

For each of SFT (TRL's token mean; our per-sequence mean), DPO (with a reference model, and with precomputed
reference log-probs), ORPO (ours, TRL's with the response-only NLL term) and SimPO (TRL's CPOTrainer, loss_type simpo),
the lean trainer and the same trainer
with ``memory_efficient: false`` (TRL's fused LM head, or the full logits) are built by the real builder
(ift.train.trainers.build_trainer) from the same float64 weights:

* one batch: loss, every parameter's gradient and every logged metric agree to 1e-6 (TRL's fused head keeps float32
  statistics even for a float64 model, so the two differ by ~1e-7), and the lean loss and gradients agree to 1e-10
  with a reference written here from the full float64 logits (log_softmax, gather, the method's formula);
* one optimiser step under gradient accumulation (2 micro-batches of 2) equals TRL's step on the batch of 4;
* the lean path never holds a tensor with a vocabulary dimension for more rows than one chunk, and with a chunk larger
  than the batch it scores exactly the response positions (TRL's fused head on CPU, and the full logits, score every
  position: the measurement sees them).

The two start points' trainer (ift.train.start_points.start_point_trainer: TRL's SFTTrainer, with base's wrapped
packing or sft_beta's answer-only loss) gets the same three checks against TRL's fused head.

The DPO policy is perturbed away from its reference, so the loss is not log 2. 2-process DDP:
tests/distributed/test_distributed.py. TDPO never gets the lean head (its KL needs full logits): tested last.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tiny_lm import pref_rows, qa_rows, tiny_model, tiny_tokenizer

TRL_TOL = dict(rtol=1e-6, atol=1e-6, check_dtype=False)  # TRL's fused head: float32 statistics and log-probs
EXACT_TOL = dict(rtol=1e-10, atol=1e-10)  # float64 throughout
# method: (its conf/method node, the data it trains on)
METHODS = {
    "sft_token_mean": ({"name": "sft", "reduction": "token_mean"}, "answers"),
    "sft_sequence_mean": ({"name": "sft", "reduction": "sequence_mean"}, "answers"),
    "dpo": ({"name": "dpo", "beta": 0.1}, "pairs"),
    "dpo_precomputed": ({"name": "dpo", "beta": 0.1, "precompute_ref_log_probs": True}, "pairs"),
    "orpo": ({"name": "orpo", "beta": 0.25}, "pairs"),
    "simpo": ({"name": "simpo", "beta": 2.0, "gamma_beta_ratio": 0.8}, "pairs"),
}
PAIR_METHODS = ("orpo", "simpo")  # TRL's concatenated chosen/rejected batches (ift.train.lean_head.LeanPairMixin)
# TRL's logged values, per trainer (all of them: a lean trainer must log what TRL's logs, with the same values)
LOGGED = {
    "sft_token_mean": {"entropy", "mean_token_accuracy", "num_tokens"},
    "sft_sequence_mean": {"num_tokens"},
    "dpo": {"entropy", "num_tokens", "logits/chosen", "logits/rejected", "mean_token_accuracy", "rewards/chosen",
            "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"},
    "orpo": {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/rejected",
             "logps/chosen", "logits/rejected", "logits/chosen", "nll_loss", "log_odds_ratio", "log_odds_chosen"},
    "simpo": {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/rejected",
              "logps/chosen", "logits/rejected", "logits/chosen", "nll_loss"},
}
LOGGED["dpo_precomputed"] = LOGGED["dpo"]
BIG_VOCAB = 512  # the memory test's model: full logits then dwarf every other activation


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _save(directory, tok, vocab=None):
    model = tiny_model(tok, seed=21).double()
    if vocab is not None:
        model.resize_token_embeddings(vocab)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tok):
    """The float64 start model on disk (DPO's reference is loaded from the policy's own checkpoint)."""
    return _save(tmp_path_factory.mktemp("lean_head_model"), tok)


def _perturb(model, seed=0, scale=0.5):
    """Move the policy away from the start model (and so from DPO's reference), the same way for every trainer."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale * p.std().clamp(min=1e-3))


def _rows(method, n=8):
    return qa_rows(n, seed=5) if METHODS[method][1] == "answers" else pref_rows(n, seed=5)


def _load(directory):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float64)


def _build(directory, tok, output_dir, node, rows, *, batch=4, accumulation=1):
    """The node's real trainer (build_trainer) on fresh float64 weights: one SGD step of lr 1, no clipping."""
    from datasets import Dataset

    from ift.train.trainers import build_trainer

    common = dict(output_dir=str(output_dir), per_device_train_batch_size=batch,
                  gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1.0, optim="sgd",
                  lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, bf16=False, use_cpu=True,
                  report_to="none", seed=0, data_seed=0, logging_steps=1, activation_checkpointing=False,
                  save_strategy="no", disable_tqdm=True)
    return build_trainer(node, model=_load(directory), tokenizer=tok, dataset=Dataset.from_list(rows),
                         common_args=common, max_length=64)


def _trainer(directory, tok, tmp_path, method, *, memory_efficient, batch=4, accumulation=1, chunk_size=5):
    """The method's real trainer on fresh float64 weights, its policy perturbed."""
    node = {**METHODS[method][0], "memory_efficient": memory_efficient, "chunk_size": chunk_size}
    trainer = _build(directory, tok, tmp_path / f"{method}-{memory_efficient}-{batch}x{accumulation}", node,
                     _rows(method), batch=batch, accumulation=accumulation)
    _perturb(trainer.model)
    return trainer


def _logged(trainer) -> dict[str, list[float]]:
    metrics = trainer._stored_metrics if hasattr(trainer, "_stored_metrics") else trainer._metrics  # ORPO, CPO | TRL's
    return metrics["train"]


def _one_batch(trainer, batch):
    """The trainer's loss on ``batch``, every parameter's gradient and what it logged."""
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    _logged(trainer).clear()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, {key: list(values) for key, values in _logged(trainer).items()}


def _naive_logps(model, input_ids, attention_mask, labels):
    """Per-token log-probs of the next labels from the model's full logits: log_softmax and gather, float64."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    targets = labels[:, 1:]
    mask = targets != -100
    picked = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return picked * mask, mask


def _naive_loss(method, policy, reference, batch):
    """The method's loss written out from the full-logits log-probs (the formulas of docs/design.md)."""
    if method.startswith("sft"):
        logps, mask = _naive_logps(policy, batch["input_ids"], batch["attention_mask"], batch["labels"])
        if method == "sft_token_mean":
            return -logps.sum() / mask.sum()
        return -(logps.sum(-1) / mask.sum(-1)).mean()
    if method.startswith("dpo"):
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        policy_sums = _naive_logps(policy, batch["input_ids"], batch["attention_mask"], labels)[0].sum(-1)
        with torch.no_grad():
            ref_sums = _naive_logps(reference, batch["input_ids"], batch["attention_mask"], labels)[0].sum(-1)
        if method == "dpo_precomputed":  # TRL's collator reads the precomputed values back with torch.tensor: float32
            ref_sums = ref_sums.float().to(ref_sums.dtype)
        n = policy_sums.shape[0] // 2  # chosen rows first, then the rejected ones
        margin = (policy_sums[:n] - ref_sums[:n]) - (policy_sums[n:] - ref_sums[n:])
        return -F.logsigmoid(0.1 * margin).mean()
    chosen, rejected = _naive_pair_means(policy, batch)
    if method == "simpo":  # β 2, γ = 0.8 β
        return -F.logsigmoid(2.0 * (chosen - rejected) - 1.6).mean()
    log_odds = (chosen - rejected) - (torch.log1p(-chosen.exp()) - torch.log1p(-rejected.exp()))
    return (-chosen - 0.25 * F.logsigmoid(log_odds)).mean()


def _naive_pair_means(policy, batch):
    """Each side's mean response log-prob, from the chosen and the rejected rows run on their own."""
    means = []
    for side in ("chosen", "rejected"):
        logps, mask = _naive_logps(policy, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"],
                                   batch[f"{side}_labels"])
        means.append(logps.sum(-1) / mask.sum(-1))
    return means


def _assert_same_grads(got, want, tol, what):
    assert got.keys() == want.keys(), what
    for name in want:
        torch.testing.assert_close(got[name], want[name], **tol, msg=lambda m, name=name: f"{what}: {name}: {m}")


@pytest.mark.parametrize("method", list(METHODS))
def test_lean_head_equals_trl_loss_gradients_and_metrics_float64(saved, tok, tmp_path, method):
    lean = _trainer(saved, tok, tmp_path, method, memory_efficient=True)
    trl = _trainer(saved, tok, tmp_path, method, memory_efficient=False)
    batch, trl_batch = next(iter(lean.get_train_dataloader())), next(iter(trl.get_train_dataloader()))
    assert batch.keys() == trl_batch.keys()
    for key, value in trl_batch.items():  # the same batch; precomputed reference log-probs each from its own head
        if key.startswith("ref_"):
            torch.testing.assert_close(batch[key], value, **TRL_TOL)
        else:
            assert torch.equal(value, batch[key]) if isinstance(value, torch.Tensor) else value == batch[key], key
    lean_loss, lean_grads, lean_logged = _one_batch(lean, batch)
    trl_loss, trl_grads, trl_logged = _one_batch(trl, trl_batch)

    assert lean_loss.dtype == torch.float64 and len(lean_grads) == len(list(lean.model.parameters()))
    torch.testing.assert_close(lean_loss, trl_loss, **TRL_TOL)
    _assert_same_grads(lean_grads, trl_grads, TRL_TOL, f"{method} lean vs TRL")
    assert set(lean_logged) == set(trl_logged) == LOGGED[method]
    for key in LOGGED[method]:
        torch.testing.assert_close(torch.tensor(lean_logged[key]), torch.tensor(trl_logged[key]), **TRL_TOL,
                                   msg=lambda m, key=key: f"{method}: logged {key}: {m}")

    # an independent float64 reference, much tighter than TRL's float32 statistics allow (ORPO: TRL's odds-ratio
    # term, which both paths share, casts the mean log-probs to float32; its log-probs are checked exactly instead)
    policy, reference = _load(saved), _load(saved)
    _perturb(policy)
    expected = _naive_loss(method, policy, reference, batch)
    expected.backward()
    tol = dict(rtol=1e-7, atol=1e-7) if method == "orpo" else EXACT_TOL
    torch.testing.assert_close(lean_loss, expected.detach(), **tol)
    _assert_same_grads(lean_grads, {name: p.grad for name, p in policy.named_parameters()}, tol,
                       f"{method} lean vs the full-logits reference")
    if method.startswith("dpo"):
        assert abs(float(expected) - float(torch.log(torch.tensor(2.0)))) > 1e-3  # the reference term matters
    if method in PAIR_METHODS:
        with torch.no_grad():
            chosen, rejected, _, _, nll = lean.concatenated_forward(lean.model, batch)
            means = _naive_pair_means(policy, batch)
        for got, want in zip((chosen, rejected), means):
            torch.testing.assert_close(got, want, **EXACT_TOL)
        torch.testing.assert_close(nll, -chosen.mean() if method == "orpo" else torch.zeros(()), rtol=0, atol=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_lean_head_under_gradient_accumulation_equals_trl_on_the_whole_batch(saved, tok, tmp_path, method):
    """One SGD step (lr 1: the parameter change is the gradient): lean with 2 micro-batches of 2 = TRL with 4 in one."""
    _assert_lean_accumulation_equals_trl_whole_batch(
        lambda **kwargs: _trainer(saved, tok, tmp_path, method, **kwargs), method)


def _assert_lean_accumulation_equals_trl_whole_batch(make_trainer, label: str) -> None:
    """One optimiser step through Trainer's own loop: ``make_trainer(memory_efficient=, batch=, accumulation=)``
    with the lean head and 2 micro-batches of 2 gives TRL's head's loss and parameter change on 4 in one."""
    steps = {}
    for memory_efficient, batch, accumulation in ((True, 2, 2), (False, 4, 1)):
        trainer = make_trainer(memory_efficient=memory_efficient, batch=batch, accumulation=accumulation)
        start = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        trainer.train()
        deltas = {name: start[name] - p.detach() for name, p in trainer.model.named_parameters()}
        steps[memory_efficient] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry], deltas
    (lean_losses, lean_deltas), (trl_losses, trl_deltas) = steps[True], steps[False]
    assert len(lean_losses) == len(trl_losses) == 1
    torch.testing.assert_close(torch.tensor(lean_losses), torch.tensor(trl_losses), **TRL_TOL)
    assert any(float(delta.abs().max()) > 1e-3 for delta in trl_deltas.values())
    _assert_same_grads(lean_deltas, trl_deltas, TRL_TOL, f"{label}: GA 2x2 lean vs 4x1 TRL")


class _VocabRows(TorchDispatchMode):
    """The most rows any op output (forward or backward) has along a vocabulary-sized last dimension, the LM head's
    own [V, H] weight (its transpose, its gradient) aside."""

    def __init__(self, vocab, hidden):
        super().__init__()
        self.vocab, self.hidden, self.rows = vocab, hidden, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in torch.utils._pytree.tree_leaves(out):
            if (isinstance(leaf, torch.Tensor) and leaf.dim() >= 2 and leaf.shape[-1] == self.vocab
                    and leaf.numel() != self.vocab * self.hidden):
                self.rows = max(self.rows, leaf.numel() // self.vocab)
        return out


def _response_positions(method, batch) -> int:
    if method.startswith("sft"):
        return int((batch["labels"][:, 1:] != -100).sum())
    if method.startswith("dpo"):
        return int(batch["completion_mask"][:, 1:].sum())
    return sum(int((batch[f"{side}_labels"][:, 1:] != -100).sum()) for side in ("chosen", "rejected"))


def _all_positions(method, batch) -> int:
    if method in PAIR_METHODS:  # both sides padded to one length, as TRL concatenates them
        return 2 * batch["chosen_input_ids"].shape[0] * (max(batch["chosen_input_ids"].shape[1],
                                                              batch["rejected_input_ids"].shape[1]) - 1)
    return batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1)


@pytest.mark.parametrize("method", list(METHODS))
def test_lean_head_scores_only_the_response_positions_one_chunk_at_a_time(tok, tmp_path, method):
    directory = _save(tmp_path / "big_vocab", tok, vocab=BIG_VOCAB)
    measured = {}
    for memory_efficient, chunk_size in ((True, 4), (True, 10_000), (False, 4)):
        trainer = _trainer(directory, tok, tmp_path, method, memory_efficient=memory_efficient, chunk_size=chunk_size)
        batch = next(iter(trainer.get_train_dataloader()))
        with _VocabRows(BIG_VOCAB, trainer.model.config.hidden_size) as mode:
            _one_batch(trainer, batch)
        measured[memory_efficient, chunk_size] = mode.rows
    assert measured[True, 4] == 4  # never more than one chunk of logits, forward or backward
    assert measured[True, 10_000] == _response_positions(method, batch)  # the response positions, nothing else
    assert measured[False, 4] >= _all_positions(method, batch) > _response_positions(method, batch)


@pytest.mark.parametrize("num_items_in_batch", [None, 7])
def test_lean_head_output_fields_equal_the_full_logits(tok, num_items_in_batch):
    """Every field TRL reads, from a model patched with add_lean_lm_head, against the model's own float64 logits:
    log-probs, mask, entropy, top-1, mean logits (0 / False off the response), the mean at every position (the last
    one too), and TRL's
    ``loss`` (normalised by the response tokens, or by ``num_items_in_batch``)."""
    from ift.train.lean_head import OUTPUTS, add_lean_lm_head

    model = tiny_model(tok, seed=4).double()
    _perturb(model, scale=3.0)  # peaked distributions: some labels are the argmax, some not
    ids = torch.randint(3, len(tok), (3, 9), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, 7:] = -100
    with torch.no_grad():
        every_position = model(input_ids=ids).logits
    logits = every_position[:, :-1]  # the positions that have a next label
    add_lean_lm_head(model, 2, OUTPUTS)
    out = model(input_ids=ids, labels=labels, fused_lm_head=True, num_items_in_batch=num_items_in_batch)
    mask = labels[:, 1:] != -100
    log_probs = torch.log_softmax(logits, -1)
    expected = log_probs.gather(-1, labels[:, 1:].clamp(min=0)[..., None]).squeeze(-1).masked_fill(~mask, 0)
    assert torch.equal(out.label_mask, mask)
    torch.testing.assert_close(out.log_probs, expected, **EXACT_TOL)
    torch.testing.assert_close(out.entropy, -(log_probs.exp() * log_probs).sum(-1).masked_fill(~mask, 0), **EXACT_TOL)
    top1 = (logits.argmax(-1) == labels[:, 1:]) & mask
    assert torch.equal(out.is_top1, top1) and top1.any() and (mask & ~top1).any()
    torch.testing.assert_close(out.mean_logits, logits.mean(-1).masked_fill(~mask, 0), **EXACT_TOL)
    torch.testing.assert_close(out.all_mean_logits, every_position.mean(-1), **EXACT_TOL)
    count = mask.sum() if num_items_in_batch is None else num_items_in_batch
    torch.testing.assert_close(out.loss, -expected.sum() / count, **EXACT_TOL)


def test_the_lean_forward_leaves_the_models_own_forward_alone(saved, tok, tmp_path):
    """Without ``fused_lm_head`` a patched model computes its class's forward (generation, evaluation), on its own
    weights even after a deepcopy; and TRL's own head is back in place for every other trainer."""
    import copy

    import trl.trainer.dpo_trainer
    import trl.trainer.sft_trainer
    from trl.trainer.utils import add_fused_lm_head

    trainer = _trainer(saved, tok, tmp_path, "dpo", memory_efficient=True)
    assert trl.trainer.dpo_trainer.add_fused_lm_head is trl.trainer.sft_trainer.add_fused_lm_head is add_fused_lm_head
    ids = torch.tensor([[1, 8, 9, 10, 2]])
    with torch.no_grad():
        logits = trainer.model(input_ids=ids).logits
        plain = type(trainer.model).forward(trainer.model, input_ids=ids).logits
        twin = copy.deepcopy(trainer.model)
        twin.lm_head.weight.zero_()
        assert torch.equal(logits, plain)
        assert torch.count_nonzero(twin(input_ids=ids).logits) == 0
        assert torch.equal(trainer.model(input_ids=ids).logits, logits)


def test_trainer_options_the_lean_head_cannot_compute_are_refused(saved, tok, tmp_path):
    """DPO's WPO weighting needs log Σ p² per token, which the lean head does not compute: refused, naming the key."""
    from datasets import Dataset
    from trl import DPOConfig

    from ift.train.lean_head import LeanOptions, TRLDPOTrainer

    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=64,
                     use_weighting=True)
    with pytest.raises(ValueError, match="memory_efficient"):
        TRLDPOTrainer(model=_load(saved), args=args, train_dataset=Dataset.from_list(pref_rows(4)),
                      processing_class=tok, lean=LeanOptions(True, 8))


def test_lora_on_the_lm_head_is_refused_by_the_lean_head(tok):
    from ift.train import lora
    from ift.train.lean_head import add_lean_lm_head

    settings = {"name": "sft", "memory_efficient": False, "peft": {"r": 4, "target_modules": ["q_proj", "lm_head"]}}
    model = lora.wrap(tiny_model(tok), settings)
    with pytest.raises(ValueError, match="LoRA on lm_head"):
        add_lean_lm_head(model, 8)


def test_tdpo_never_gets_the_lean_head_and_runs_on_full_logits(saved, tok, tmp_path):
    """TDPO's sequential KL needs the policy's and the reference's whole next-token distributions, which the lean head
    does not keep: its trainer (TRL's DPOTrainer underneath, as DPO's) gets no lean head on either model, even when
    built right after a lean DPO trainer, and its loss reads full logits ([rows, positions, vocabulary])."""
    from ift.train.lean_head import has_lean_head

    lean_dpo = _trainer(saved, tok, tmp_path, "dpo", memory_efficient=True)
    assert has_lean_head(lean_dpo.model) and has_lean_head(lean_dpo.ref_model)  # what a DPOTrainer subclass can get
    tdpo = _build(saved, tok, tmp_path / "tdpo", {"name": "tdpo", "beta": 0.1, "variant": "tdpo2", "alpha": 0.5},
                  pref_rows(8, seed=5))
    assert tdpo.ref_model is not None
    assert not has_lean_head(tdpo.model) and not has_lean_head(tdpo.ref_model)
    batch = next(iter(tdpo.get_train_dataloader()))
    loss, outputs = tdpo.compute_loss(tdpo.model, batch, return_outputs=True)
    assert loss.isfinite() and outputs.logits.shape == (*batch["input_ids"].shape, tdpo.model.config.vocab_size)


def test_simpo_lean_head_refuses_the_cpo_losses_it_does_not_compute(saved, tok, tmp_path):
    """The lean CPOTrainer computes SimPO's mean log-probs and no NLL term: another loss_type (summed log-probs) or
    cpo_alpha > 0 (CPO's NLL) is refused, naming the switch; with memory_efficient false both are TRL's own."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig

    from ift.train.lean_head import LeanOptions
    from ift.train.trainers import simpo_trainer_class

    for options in ({"loss_type": "sigmoid", "cpo_alpha": 0.0}, {"loss_type": "simpo", "cpo_alpha": 1.0}):
        args = CPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=64,
                         **options)
        build = dict(model=_load(saved), args=args, train_dataset=Dataset.from_list(pref_rows(4)), processing_class=tok)
        with pytest.raises(ValueError, match="memory_efficient"):
            simpo_trainer_class()(**build, lean=LeanOptions(True, 8))
        assert simpo_trainer_class()(**build, lean=LeanOptions(False, 8)).loss_type == options["loss_type"]


# ---- the start points' SFTTrainer (ift.train.start_points): base's pretraining on packed blocks, sft_beta's SFT ----

def _corpus_rows(n=12, seed=5) -> list[dict]:
    """Plain-text documents of ragged length, as the world's corpus (base packs them into blocks)."""
    import random

    from tiny_lm import WORDS

    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + " ."} for _ in range(n)]


def _start_point_trainer(directory, tok, root, stage, *, memory_efficient, batch=4, accumulation=1, chunk_size=5):
    """The stage's real trainer (start_points.start_point_trainer, the stage's own SFT settings) on fresh float64
    weights, its recipe (conf/trainer/smoke.yaml) overridden to one SGD step of lr 1 without clipping."""
    from datasets import Dataset

    from conftest import compose
    from ift.train.base import PRETRAIN_SFT_KWARGS
    from ift.train.sft_beta import SFT_BETA_SFT_KWARGS
    from ift.train.start_points import RECIPES, start_point_trainer

    key = RECIPES[stage]
    recipe = dict(per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, learning_rate=1.0,
                  optim="sgd", lr_scheduler_type="constant", warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=0.0,
                  max_length=16 if stage == "base" else 64, memory_efficient=memory_efficient, chunk_size=chunk_size)
    root = root / f"{stage}-{memory_efficient}-{batch}x{accumulation}-{chunk_size}"
    cfg = compose(["profile=smoke", "logger=none", "trainer.logging_steps=1", f"+trainer.{key}.max_steps=1",
                   *(f"trainer.{key}.{name}={value}" for name, value in recipe.items())], root=root)
    rows = _corpus_rows() if stage == "base" else qa_rows(8, seed=5)
    trainer = start_point_trainer(cfg, stage=stage, model=_load(directory), tokenizer=tok,
                                  dataset=Dataset.from_list(rows),
                                  sft_kwargs=PRETRAIN_SFT_KWARGS if stage == "base" else SFT_BETA_SFT_KWARGS)
    trainer.args.disable_tqdm = True
    _perturb(trainer.model)
    return trainer


@pytest.mark.parametrize("stage", ["base", "sft_beta"])
def test_start_point_lean_head_equals_trl_loss_gradients_and_metrics_float64(saved, tok, tmp_path, stage):
    """base: wrapped packing (blocks of max_length, every position a label, attention mask of ones, no padding-free
    position ids); sft_beta: prompt/completion rows, the loss on the answers only. Lean = TRL's fused head to 1e-6,
    and = the full float64 logits' token mean to 1e-10."""
    from ift.train.lean_head import has_lean_head

    lean = _start_point_trainer(saved, tok, tmp_path, stage, memory_efficient=True)
    trl = _start_point_trainer(saved, tok, tmp_path, stage, memory_efficient=False)
    assert has_lean_head(lean.model) and not has_lean_head(trl.model)
    batch, trl_batch = next(iter(lean.get_train_dataloader())), next(iter(trl.get_train_dataloader()))
    assert batch.keys() == trl_batch.keys() and all(torch.equal(batch[key], trl_batch[key]) for key in batch)
    labelled, attended = batch["labels"][:, 1:] != -100, batch["attention_mask"].bool()
    if stage == "base":  # the setup base.py trains on: blocks of max_length, labels = input ids, the last block padded
        assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["input_ids"].shape == (4, 16)
        assert torch.equal(batch["labels"], batch["input_ids"].masked_fill(~attended, -100))
        assert attended.all(-1).sum() == 3 and torch.equal(labelled, attended[:, 1:])  # the short last block is here
    else:  # the answers only: every row has prompt positions that are not scored
        assert labelled.any() and not (labelled & ~attended[:, 1:]).any()
        assert bool((labelled.sum(-1) < attended[:, 1:].sum(-1)).all())
    lean_loss, lean_grads, lean_logged = _one_batch(lean, batch)
    trl_loss, trl_grads, trl_logged = _one_batch(trl, trl_batch)

    assert lean_loss.dtype == torch.float64 and len(lean_grads) == len(list(lean.model.parameters()))
    torch.testing.assert_close(lean_loss, trl_loss, **TRL_TOL)
    _assert_same_grads(lean_grads, trl_grads, TRL_TOL, f"{stage} lean vs TRL")
    assert set(lean_logged) == set(trl_logged) == LOGGED["sft_token_mean"]
    for key in LOGGED["sft_token_mean"]:
        torch.testing.assert_close(torch.tensor(lean_logged[key]), torch.tensor(trl_logged[key]), **TRL_TOL,
                                   msg=lambda m, key=key: f"{stage}: logged {key}: {m}")

    policy = _load(saved)
    _perturb(policy)
    expected = _naive_loss("sft_token_mean", policy, None, batch)
    expected.backward()
    torch.testing.assert_close(lean_loss, expected.detach(), **EXACT_TOL)
    _assert_same_grads(lean_grads, {name: p.grad for name, p in policy.named_parameters()}, EXACT_TOL,
                       f"{stage} lean vs the full-logits reference")


@pytest.mark.parametrize("stage", ["base", "sft_beta"])
def test_start_point_lean_head_under_gradient_accumulation_equals_trl_on_the_whole_batch(saved, tok, tmp_path, stage):
    """One SGD step of lr 1 through Trainer's own loop: lean with 2 micro-batches of 2 = TRL with 4 in one."""
    _assert_lean_accumulation_equals_trl_whole_batch(
        lambda **kwargs: _start_point_trainer(saved, tok, tmp_path, stage, **kwargs), stage)


@pytest.mark.parametrize("stage", ["base", "sft_beta"])
def test_start_point_lean_head_holds_one_chunk_of_logits(tok, tmp_path, stage):
    """The lean head never holds more than one chunk of vocabulary-wide rows, forward or backward; with a chunk larger
    than the batch, exactly the labelled positions (base: every position of every block but padding)."""
    directory = _save(tmp_path / "big_vocab", tok, vocab=BIG_VOCAB)
    measured = {}
    for chunk_size in (4, 10_000):
        trainer = _start_point_trainer(directory, tok, tmp_path, stage, memory_efficient=True, chunk_size=chunk_size)
        batch = next(iter(trainer.get_train_dataloader()))
        with _VocabRows(BIG_VOCAB, trainer.model.config.hidden_size) as mode:
            _one_batch(trainer, batch)
        measured[chunk_size] = mode.rows
    assert measured[4] == 4
    assert measured[10_000] == _response_positions("sft_token_mean", batch)
    if stage == "base":
        assert measured[10_000] == int(batch["attention_mask"][:, 1:].sum())
