"""The TRL trainer of each method; the methods share everything but the trainer (ift.methods says which is whose).

sft  -> TRL's SFTTrainer (completion-only NLL, token mean) or, with reduction: sequence_mean, SequenceMeanSFTTrainer
ift  -> IFTTrainer (SFTTrainer + IFT's compute_loss)
dpo  -> TRL's DPOTrainer (reference = the initial model)
tdpo -> TDPOTrainer (DPOTrainer + token-level DPO's loss; reference = the initial model)
orpo -> ResponseNLLORPOTrainer (TRL's ORPOTrainer, NLL fixed)
simpo -> SimPOTrainer (TRL's CPOTrainer, trl.experimental.cpo, with loss_type simpo and no NLL term)

Every method trains on the conversation exactly as the chat template renders it: ORPO and SimPO tokenise rows as SFT
and DPO do (TemplatePairTokens), not as TRL's ORPOTrainer and CPOTrainer would (a BOS and a second end-of-turn token).

SFT, DPO, ORPO and SimPO take ``memory_efficient`` and ``chunk_size`` from the method node: their log-probs come from
the lean LM head (ift.train.lean_head) or, with ``memory_efficient: false``, from each trainer's own path as before.
TDPO takes neither: its KL needs full logits (ift.train.tdpo_trainer).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping


def build_trainer(method: Mapping, *, model, tokenizer, dataset, common_args: dict, max_length: int, callbacks=()):
    """The TRL trainer for ``method`` (a conf/method/*.yaml node) over ``dataset`` (TRL conversational format).

    The one dispatch on the method's name: ift.methods declares which function below builds its trainer."""
    from ift.methods import get
    from ift.train.guards import FiniteLossGuard

    return get(method["name"]).build_trainer(method, model=model, tokenizer=tokenizer, dataset=dataset,
                                             common_args=common_args, max_length=max_length,
                                             callbacks=[FiniteLossGuard(), *callbacks])


def lean_options(method: Mapping):
    """The method node's ``memory_efficient`` and ``chunk_size`` (ConfigError naming a bad one)."""
    from ift.train.lean_head import LeanOptions

    return LeanOptions.of(method)


def sft_trainer(method: Mapping, *, model, tokenizer, dataset, common_args: dict, max_length: int, callbacks):
    """TRL's SFTTrainer (token mean) or, with ``reduction: sequence_mean``, SequenceMeanSFTTrainer."""
    from ift.methods import sft_reduction
    from ift.train.lean_head import TRLSFTTrainer
    from ift.train.sequence_mean import SequenceMeanSFTTrainer

    trainer_class = SequenceMeanSFTTrainer if sft_reduction(method) == "sequence_mean" else TRLSFTTrainer
    return trainer_class(model=model, args=sft_config(common_args, max_length), train_dataset=dataset,
                         processing_class=tokenizer, callbacks=callbacks, lean=lean_options(method))


def ift_trainer(method: Mapping, *, model, tokenizer, dataset, common_args: dict, max_length: int, callbacks):
    """IFTTrainer: SFTTrainer with IFT's compute_loss, configured by the method node (ift.losses.IFTOptions)."""
    from ift.losses import ift_options
    from ift.train.ift_trainer import IFTTrainer

    return IFTTrainer(model=model, args=sft_config(common_args, max_length), train_dataset=dataset,
                      processing_class=tokenizer, callbacks=callbacks, ift=ift_options(method))


def dpo_trainer(method: Mapping, *, model, tokenizer, dataset, common_args: dict, max_length: int, callbacks):
    """TRL's DPOTrainer; the reference model is the initial weights."""
    from trl import DPOConfig

    from ift.train.lean_head import TRLDPOTrainer

    lean = lean_options(method)
    args = DPOConfig(**common_args, max_length=max_length, beta=float(method["beta"]),
                     precompute_ref_log_probs=bool(method.get("precompute_ref_log_probs", False)))
    # ref_model=None: TRL loads the reference from the policy's own checkpoint (= the initial weights).
    return TRLDPOTrainer(model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=callbacks, lean=lean)


def tdpo_trainer(method: Mapping, *, model, tokenizer, dataset, common_args: dict, max_length: int, callbacks):
    """TDPOTrainer (ift.train.tdpo_trainer); the reference model is the initial weights, as DPO's."""
    from trl import DPOConfig

    from ift.train.tdpo_trainer import TDPOTrainer

    args = DPOConfig(**common_args, max_length=max_length, beta=float(method["beta"]))
    return TDPOTrainer(model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer,
                       callbacks=callbacks, alpha=float(method["alpha"]), variant=str(method["variant"]))


def orpo_trainer(method: Mapping, *, model, tokenizer, dataset, common_args: dict, max_length: int, callbacks):
    """TRL's ORPOTrainer with the formula's response-only NLL term (response_nll_orpo_trainer_class)."""
    from trl.experimental.orpo import ORPOConfig

    _quiet_untrackable_token_count()
    lean = lean_options(method)
    args = ORPOConfig(**common_args, max_length=max_length, beta=float(method["beta"]))
    return response_nll_orpo_trainer_class()(model=model, args=args, train_dataset=dataset,
                                             processing_class=tokenizer, callbacks=callbacks, lean=lean)


def simpo_trainer(method: Mapping, *, model, tokenizer, dataset, common_args: dict, max_length: int, callbacks):
    """TRL's CPOTrainer (simpo_trainer_class) computing SimPO's loss (ift.losses.simpo_loss): length-normalised
    log-probs, target margin γ = gamma_beta_ratio · β, and ``cpo_alpha=0`` (CPO's NLL term off: SimPO has none). The
    label smoothing and the AlphaPO reward shape are set to their identity values rather than left to TRL's defaults."""
    from trl.experimental.cpo import CPOConfig

    _quiet_untrackable_token_count()
    lean = lean_options(method)
    beta = float(method["beta"])
    args = CPOConfig(**common_args, max_length=max_length, loss_type="simpo", beta=beta,
                     simpo_gamma=float(method["gamma_beta_ratio"]) * beta, cpo_alpha=0.0, label_smoothing=0.0,
                     alpha=0.0)
    return simpo_trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 callbacks=callbacks, lean=lean)


def sft_config(common_args: dict, max_length: int):
    """SFT and IFT: the loss on the completion only, one example per row (no packing)."""
    from trl import SFTConfig

    return SFTConfig(**common_args, max_length=max_length, completion_only_loss=True, packing=False)


class _UntrackableTokenCount(logging.Filter):
    MESSAGE = "Tried to track the number of tokens seen"

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.MESSAGE)


def _quiet_untrackable_token_count() -> None:
    """Drop transformers' per-step "Tried to track the number of tokens seen, however the current model is not
    configured properly..." warning, which ORPO and SimPO runs print at every step, and only that message.

    Why it fires: the recipe asks every trainer to count input tokens (include_num_input_tokens_seen, ift.train.arguments)
    and transformers' Trainer counts ``batch[model.main_input_name]`` (``input_ids``); the batches of TRL's ORPOTrainer
    and CPOTrainer hold ``prompt_/chosen_/rejected_input_ids`` instead, so nothing is counted and their
    train_metrics.json records tokens_seen 0. Either fix (counting their tokens ourselves, or not asking them to
    count) would change the num_input_tokens_seen / train_tokens_per_second entries in ORPO's log_history, which
    train_metrics.json (a DVC output) holds; so the warning, which cannot be acted on and repeats at every step, is
    filtered instead.
    """
    trainer_logger = logging.getLogger("transformers.trainer")
    if not any(isinstance(existing, _UntrackableTokenCount) for existing in trainer_logger.filters):
        trainer_logger.addFilter(_UntrackableTokenCount())


class TemplatePairTokens:
    """ORPOTrainer's and CPOTrainer's ``tokenize_row``, giving the sequences and labels SFT and DPO train on.

    TRL's (``trl.experimental``, TRL 1.16) tokenises the rendered prompt and answers, then prepends the BOS to a prompt
    not starting with it and appends the EOS to an answer not ending with it. A chat template ends an answer's turn
    with the EOS and a newline (the world's ``</s>\\n``, ChatML's ``<|im_end|>\\n``), so every answer got a second EOS
    to train on, and with the world's template every sequence a ``<s>`` that SFT, DPO and generation never show the
    model. Here the row is ``prompt + answer`` exactly as rendered, split where DPO splits it
    (ift.data.fit.rendered_pair_ids, which also predicts the rows that do not fit); the rest is TRL's: an answer is cut
    to ``max_length`` minus the prompt, the prompt never, labels -100 on the prompt, the same keys.
    tests/ift/train/test_trainers.py compares the trained tokens with SFT's and DPO's.
    """

    def tokenize_row(self, feature, model=None):
        if self.is_encoder_decoder:  # encoder input and labels apart, no split to make (no such model here)
            return super().tokenize_row(feature, model)
        from ift.data.fit import rendered_pair_ids

        start, *sides = rendered_pair_ids(self.processing_class, feature["prompt"], feature["chosen"],
                                          feature["rejected"])
        row = {"prompt_input_ids": sides[0][:start], "prompt_attention_mask": [1] * start}
        for side, ids in zip(("chosen", "rejected"), sides):
            ids = ids[:max(self.max_length, start)]  # TRL's cut (a prompt that fills max_length: ift.data.fit)
            row |= {f"{side}_input_ids": ids, f"{side}_attention_mask": [1] * len(ids),
                    f"{side}_labels": [-100] * start + ids[start:]}
        return row


def response_nll_orpo_trainer_class():
    """TRL's ORPOTrainer with the ORPO formula's NLL term (docs/design.md), defined lazily (trl.experimental import).

    TRL computes the NLL term as the token-mean cross-entropy over the whole chosen sequence, prompt included.
    The ORPO paper and the IFT authors' code use -mean log p(y_w | x): the chosen *response's* length-normalised
    log-prob, averaged over the pairs. Only that term changes; the odds-ratio term is TRL's (already the formula).
    tests/ift/train/test_trainers.py checks the result against ift.losses.orpo_loss.

    With ``lean.memory_efficient`` the forward scores the response positions only (ift.train.lean_head.LeanPairMixin);
    TRL's ``logits/*`` metrics average over every position but the last (its ``logits[:, :-1]``).
    """
    from trl.experimental.orpo import ORPOTrainer

    from ift.train.lean_head import LeanPairMixin

    class ResponseNLLORPOTrainer(TemplatePairTokens, LeanPairMixin, ORPOTrainer):
        def concatenated_forward(self, model, batch):
            if not self.lean.memory_efficient:
                outputs = list(super().concatenated_forward(model, batch))
                outputs[4] = -outputs[0].mean()  # the formula's NLL: response only, per-sequence mean
                return tuple(outputs)
            chosen, rejected, chosen_means, rejected_means = self.lean_pair_logps(model, batch, self.padding_value)
            return chosen, rejected, chosen_means[:, :-1].mean(), rejected_means[:, :-1].mean(), -chosen.mean()

    return ResponseNLLORPOTrainer


def simpo_trainer_class():
    """TRL's CPOTrainer as SimPO, with the ``memory_efficient`` switch (defined lazily: trl.experimental import).

    SimPO's loss needs each answer's mean response log-prob only, as ORPO's does, from the same concatenated batch
    (CPOTrainer tokenises and concatenates as ORPOTrainer does): with ``lean.memory_efficient`` they come from the lean
    head (ift.train.lean_head.LeanPairMixin) and TRL's ``cpo_loss`` and metrics run on them unchanged. TRL's
    ``logits/*`` metrics average over every position, the last included (CPO keeps it); its ``nll_loss`` is 0
    (``cpo_alpha=0``). The lean path covers SimPO only: another ``loss_type`` sums the log-probs and ``cpo_alpha`` adds
    an NLL term, neither of which it computes, so they are refused rather than trained wrongly.
    tests/ift/train/test_lean_head.py checks it against TRL's own CPOTrainer (float64: loss, gradients, metrics).
    """
    import torch
    from trl.experimental.cpo import CPOTrainer

    from ift.train.lean_head import LeanPairMixin

    class SimPOTrainer(TemplatePairTokens, LeanPairMixin, CPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.lean.memory_efficient and (self.loss_type != "simpo" or self.cpo_alpha != 0):
                raise ValueError(f"method.memory_efficient=true covers CPOTrainer as SimPO only (loss_type simpo, "
                                 f"cpo_alpha 0), got loss_type={self.loss_type!r}, cpo_alpha={self.cpo_alpha}; set "
                                 "method.memory_efficient=false")

        def concatenated_forward(self, model, batch):
            if not self.lean.memory_efficient:
                return super().concatenated_forward(model, batch)
            chosen, rejected, chosen_means, rejected_means = self.lean_pair_logps(model, batch, self.pad_token_id)
            no_nll = torch.zeros((), device=self.accelerator.device)  # TRL's own value at cpo_alpha 0
            return chosen, rejected, chosen_means.mean(), rejected_means.mean(), no_nll

    return SimPOTrainer
