"""IFTTrainer: the loss it optimises, its normalisation under gradient accumulation, and its two code paths.

References are independent of the trainer: the per-sequence-mean SFT loss computed by hand from the model's logits,
and the plain (full-logits) path against the memory-efficient one.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ift import logprobs, losses
from ift.train.ift_trainer import IFTOptions, IFTTrainer
from ift.train.sequence_mean import SequenceMeanSFTTrainer
from tiny_lm import qa_rows, tiny_model, tiny_tokenizer


def _one_step(tmp_path, model, rows, *, batch, accumulation, options, tok, lr=1.0):
    """Run exactly one optimiser step of plain SGD and return (trainer, parameter deltas / lr).

    ``options``: IFTOptions for an IFTTrainer, or None for the per-sequence-mean SFT trainer."""
    from datasets import Dataset
    from trl import SFTConfig

    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = SFTConfig(
        output_dir=str(tmp_path / f"b{batch}x{accumulation}"), per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=lr, optim="sgd",
        lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, bf16=False, use_cpu=True,
        report_to="none", seed=0, data_seed=0, logging_steps=1, activation_checkpointing=False, save_strategy="no",
        max_length=64, disable_tqdm=True,
    )
    extra = {} if options is None else {"ift": options}
    trainer_class = SequenceMeanSFTTrainer if options is None else IFTTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                            **extra)
    trainer.train()
    grads = {name: (start[name] - p.detach()) / lr for name, p in trainer.model.named_parameters()}
    return trainer, grads


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _assert_same_grads(a, b, atol=2e-6):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=atol, msg=f"gradient of {name} differs")


@pytest.mark.parametrize("accumulation_pair", [(4, 2), (2, 4)])
def test_gradient_accumulation_invariance(tmp_path, tok, accumulation_pair):
    """8 sequences in one step: 8x1, 4x2 and 2x4 give the same update (ragged answer lengths)."""
    rows = qa_rows(8, seed=3)
    base = tiny_model(tok, seed=1)
    options = IFTOptions()
    _, full = _one_step(tmp_path, copy.deepcopy(base), rows, batch=8, accumulation=1, options=options, tok=tok)
    batch, accumulation = accumulation_pair
    _, split = _one_step(tmp_path, copy.deepcopy(base), rows, batch=batch, accumulation=accumulation,
                         options=options, tok=tok)
    assert any(g.abs().sum() > 0 for g in full.values())
    _assert_same_grads(full, split)


@pytest.mark.parametrize("tie, memory_efficient", [(False, True), (True, True), (False, "pass1"), (False, "pass2")])
def test_memory_efficient_path_equals_plain_path(tmp_path, tok, tie, memory_efficient):
    """One optimiser step (GA 2) of the chunked passes (chunk size 7, not dividing the positions) equals the plain
    full-logits passes: every parameter's gradient, with untied and tied input/output embeddings, and with only one
    pass chunked (the benchmark's ablations)."""
    rows = qa_rows(8, seed=4)
    base = tiny_model(tok, seed=2, tie=tie)
    _, fast = _one_step(tmp_path, copy.deepcopy(base), rows, batch=4, accumulation=2,
                        options=IFTOptions(memory_efficient=memory_efficient, chunk_size=7), tok=tok)
    _, plain = _one_step(tmp_path, copy.deepcopy(base), rows, batch=4, accumulation=2,
                         options=IFTOptions(memory_efficient=False), tok=tok)
    _assert_same_grads(fast, plain)


@pytest.mark.parametrize("memory_efficient, chunked", [(True, {"pass1", "pass2"}), (False, set()),
                                                      ("pass1", {"pass1"}), ("pass2", {"pass2"})])
def test_memory_efficient_option_picks_each_pass_path(tmp_path, tok, monkeypatch, memory_efficient, chunked):
    """``memory_efficient`` decides, pass by pass, whether the LM head runs over chunks (the kernels are called)."""
    calls = []
    for name, ift_pass in (("chunked_greedy_and_label_logps", "pass1"), ("chunked_label_logps", "pass2")):
        kernel = getattr(logprobs, name)
        monkeypatch.setattr(logprobs, name, lambda *a, _k=kernel, _p=ift_pass, **kw: calls.append(_p) or _k(*a, **kw))
    _one_step(tmp_path, tiny_model(tok, seed=2), qa_rows(4, seed=4), batch=4, accumulation=1,
              options=IFTOptions(memory_efficient=memory_efficient), tok=tok)
    assert set(calls) == chunked


def test_untied_input_embedding_gets_no_gradient(tmp_path, tok):
    model = tiny_model(tok, seed=5, tie=False)
    _, grads = _one_step(tmp_path, model, qa_rows(8), batch=8, accumulation=1, options=IFTOptions(), tok=tok)
    assert torch.count_nonzero(grads["model.embed_tokens.weight"]) == 0
    assert torch.count_nonzero(grads["lm_head.weight"]) > 0


def _per_sequence_mean_nll_grads(base, batch):
    """Independent reference: gradient of the mean over sequences of each sequence's mean -log p (response only)."""
    reference = copy.deepcopy(base)
    logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # independent reference: per-sequence mean of -log p over response tokens, then mean over sequences
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    targets = batch["labels"][:, 1:]
    per_seq = []
    for b in range(targets.shape[0]):
        picked = [-logp[b, t, targets[b, t]] for t in range(targets.shape[1]) if targets[b, t] != -100]
        per_seq.append(torch.stack(picked).mean())
    torch.stack(per_seq).mean().backward()
    return {name: p.grad for name, p in reference.named_parameters()}


def test_lambda_zero_gamma_zero_is_per_sequence_mean_sft(tmp_path, tok):
    """With λ = 0 and γ = 0 the update equals the gradient of the per-sequence-mean NLL, computed by hand."""
    rows = qa_rows(8, seed=6)
    base = tiny_model(tok, seed=6)
    trainer, grads = _one_step(tmp_path, copy.deepcopy(base), rows, batch=8, accumulation=1,
                               options=IFTOptions(max_lambda=0.0, min_lambda=0.0, gamma=0.0), tok=tok)
    expected = _per_sequence_mean_nll_grads(base, next(iter(trainer.get_train_dataloader())))
    # with λ = 0 the input embedding is still detached (IFT's input path has no gradient), unlike SFT
    expected["model.embed_tokens.weight"] = torch.zeros_like(expected["model.embed_tokens.weight"])
    _assert_same_grads(grads, expected)


@pytest.mark.parametrize("batch, accumulation", [(8, 1), (4, 2), (2, 4)])
def test_sequence_mean_sft_is_the_per_sequence_mean_nll_at_any_accumulation(tmp_path, tok, batch, accumulation):
    """The authors' SFT (method.reduction=sequence_mean): every split of the 8 sequences of one step gives the
    gradient of the per-sequence-mean NLL computed by hand, input embedding included; TRL's token mean does not."""
    rows = qa_rows(8, seed=6)
    base = tiny_model(tok, seed=6)
    trainer, grads = _one_step(tmp_path, copy.deepcopy(base), rows, batch=batch, accumulation=accumulation,
                               options=None, tok=tok)
    full_batch = next(iter(_one_step(tmp_path, copy.deepcopy(base), rows, batch=8, accumulation=1, options=None,
                                     tok=tok)[0].get_train_dataloader()))
    expected = _per_sequence_mean_nll_grads(base, full_batch)
    assert expected["model.embed_tokens.weight"].abs().sum() > 0
    _assert_same_grads(grads, expected)
    assert trainer.state.log_history[0]["num_tokens"] > 0  # TRL's token count is still logged
    if (batch, accumulation) == (8, 1):  # the token mean weighs long answers more: a different loss
        with torch.no_grad():
            logits = copy.deepcopy(base)(input_ids=full_batch["input_ids"],
                                         attention_mask=full_batch["attention_mask"]).logits
            token_mean = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1),
                                                           full_batch["labels"][:, 1:].flatten(), ignore_index=-100)
            token_logps, mask = logprobs.gather_label_logps(logits, full_batch["labels"])
            per_sequence = -losses.sequence_logps(token_logps, mask, average=True).mean()
        assert abs(float(token_mean) - float(per_sequence)) > 1e-4


def test_lambda_is_logged_and_pass_losses_recorded(tmp_path, tok):
    trainer, _ = _one_step(tmp_path, tiny_model(tok, seed=7), qa_rows(8), batch=4, accumulation=2,
                           options=IFTOptions(max_lambda=0.3, min_lambda=0.3), tok=tok)
    logged = [entry for entry in trainer.state.log_history if "ift/lambda" in entry]
    assert logged and logged[0]["ift/lambda"] == pytest.approx(0.3)
    assert logged[0]["ift/pass1_sft_loss"] > 0 and logged[0]["ift/pass2_loss"] > 0


@pytest.mark.parametrize(
    "bad, key",
    [(dict(max_lambda=1.5), "max_lambda"), (dict(gamma=-0.1), "gamma"), (dict(propagation_norm="L3"), "norm"),
     (dict(propagation_side="middle"), "side"), (dict(lambda_schedule="cosine"), "schedule"),
     (dict(lambda_disturb="uniform"), "disturb"), (dict(memory_efficient="both"), "memory_efficient")],
)
def test_bad_options_fail_naming_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        IFTOptions(**bad).validate()


def test_pass1_greedy_tokens_match_full_logits(tok):
    """The hook-based pass 1 (chunked LM head) returns exactly the argmax of the model's own logits."""
    from datasets import Dataset
    from trl import SFTConfig

    model = tiny_model(tok, seed=8)
    args = SFTConfig(output_dir="/tmp/unused-ift-pass1", use_cpu=True, bf16=False, report_to="none",
                     activation_checkpointing=False, max_length=64)
    trainer = IFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(qa_rows(4)), processing_class=tok,
                         ift=IFTOptions(chunk_size=5))
    batch = next(iter(trainer.get_train_dataloader()))
    greedy, logps, mask = trainer.pass1(trainer.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(greedy, logits.argmax(-1))
    ref_logps, ref_mask = logprobs.gather_label_logps(logits, batch["labels"])
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(logps, ref_logps, rtol=1e-5, atol=1e-5)


def test_pass2_memory_efficient_equals_plain_with_gradients_to_head_and_decoder(tmp_path, tok):
    """Pass 2 on its own: the hook-based chunked path (LM head over 5 positions at a time, the model's own head on one
    position) gives the plain path's log-probs and the gradients of every parameter, the LM head and the decoder
    included (unlike pass 1, pass 2 has a gradient); the input embedding stays without one."""
    from datasets import Dataset
    from trl import SFTConfig

    model = tiny_model(tok, seed=9)
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                     activation_checkpointing=False, max_length=64)
    trainer = IFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(qa_rows(4, seed=9)),
                         processing_class=tok, ift=IFTOptions(chunk_size=5))
    batch = next(iter(trainer.get_train_dataloader()))
    inputs = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    greedy, _, _ = trainer.pass1(trainer.model, *inputs)
    intuition = losses.intuition_input_ids(batch["input_ids"], greedy, batch["labels"])
    head_inputs = []
    head = trainer.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, output: head_inputs.append(args[0].shape))
    results = {}
    for memory_efficient in (True, False):
        trainer.ift = IFTOptions(chunk_size=5, memory_efficient=memory_efficient)
        trainer.model.zero_grad(set_to_none=True)
        token_logps, mask = trainer.token_logps_pass2(trainer.model, *inputs, intuition, 0.2)
        (token_logps * torch.linspace(0.5, 1.5, token_logps.shape[1])).sum().backward()
        grads = {name: p.grad for name, p in trainer.model.named_parameters()}
        results[memory_efficient] = token_logps.detach(), mask, grads
    handle.remove()
    assert head_inputs[0][1] == 1 and head_inputs[1][1] == batch["input_ids"].shape[1]
    (fast, fast_mask, fast_grads), (plain, plain_mask, plain_grads) = results[True], results[False]
    assert torch.equal(fast_mask, plain_mask) and fast_mask.any()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert fast_grads["model.embed_tokens.weight"] is None and plain_grads["model.embed_tokens.weight"] is None
    for name in ("lm_head.weight", "model.norm.weight", "model.layers.0.self_attn.q_proj.weight"):
        assert fast_grads[name] is not None and torch.count_nonzero(fast_grads[name]) > 0, name
    _assert_same_grads({k: v for k, v in fast_grads.items() if v is not None},
                       {k: v for k, v in plain_grads.items() if v is not None})
