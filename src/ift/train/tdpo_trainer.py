"""TDPOTrainer: TRL's DPOTrainer with Token-level DPO's loss (Zeng et al. 2024; ift.losses.tdpo_loss).

Only the loss changes; data, tokenisation, collation, the reference model (a frozen copy of the initial weights, or
with LoRA the policy running TRL's frozen copy of the initial adapters), optimiser, logging and checkpointing are
DPOTrainer's. Per step, on
DPOTrainer's batch (the chosen rows, then the rejected rows, each prompt + answer with a completion mask):

1. the policy and, without gradient, the reference run with full logits. TDPO needs the reference's whole next-token
   distribution at every answer position, which DPOTrainer's fused LM head (label log-probs only) does not keep, and
   which ``precompute_ref_log_probs`` cannot store, so the reference stays in memory;
2. per answer token: the label's log-prob under both and KL(π_ref ‖ π) over the vocabulary
   (``ift.logprobs.label_logps_and_reference_kl``; only the answer positions' logits go through the log-softmax);
   per answer: their sums, the log-ratio and the sequential KL (``ift.losses.sequence_logps``);
3. ``ift.losses.tdpo_loss`` per pair, mean over the batch's pairs (as DPOTrainer's own sigmoid loss).

Memory: the full ``[2B, L, V]`` logits of the policy and of the reference exist at once (at the paper profile, per
device batch 4, 1024 tokens and Mistral's 32k vocabulary, about 1 GiB each in float32).

So TDPO has no ``memory_efficient`` path (ift.methods refuses the key for it): this class is TRL's DPOTrainer, not
ift.train.lean_head's, and its models never get the lean head. DPOTrainer's ``__init__`` still installs TRL's own fused
head, but this loss never asks for it (no ``fused_lm_head=True``): every forward here is the model's own, full logits.
"""

from __future__ import annotations

import torch
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from ift import logprobs, losses

_NOT_MODEL_INPUTS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}  # DPOTrainer's batch keys


class TDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is TDPO's; ``alpha`` and ``variant`` as in ift.losses.tdpo_loss (β is ``args.beta``)."""

    def __init__(self, *args, alpha: float, variant: str, **kwargs):
        if variant not in losses.TDPO_VARIANTS:
            raise ValueError(f"unknown TDPO variant={variant!r}; allowed values: {list(losses.TDPO_VARIANTS)}")
        super().__init__(*args, **kwargs)
        if self.precompute_ref_logps:
            raise ValueError("TDPO needs the reference model's next-token distributions at every step; "
                             "precompute_ref_log_probs (label log-probs only) cannot provide them")
        self.tdpo_alpha, self.tdpo_variant = alpha, variant

    def reference_logits(self, model_inputs: dict) -> torch.Tensor:
        """The reference model's logits, without gradient: the frozen copy, or (LoRA) the policy with TRL's "ref"
        adapter (the initial adapters) active, or with none where TRL made no such copy (as DPOTrainer does)."""
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    return self.model(**model_inputs).logits
            return self.ref_model(**model_inputs).logits

    def _compute_loss(self, model, inputs, return_outputs):
        model_inputs = {key: value for key, value in inputs.items() if key not in _NOT_MODEL_INPUTS}
        model_inputs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        outputs = model(**model_inputs)  # without fused_lm_head: TRL's patched forward is the model's own
        token_logps, ref_token_logps, token_kl, mask = logprobs.label_logps_and_reference_kl(
            outputs.logits, self.reference_logits(model_inputs), labels)
        chosen_logratios, rejected_logratios = losses.sequence_logps(token_logps - ref_token_logps, mask).chunk(2)
        chosen_kl, rejected_kl = losses.sequence_logps(token_kl, mask).chunk(2)
        per_pair, chosen_rewards, rejected_rewards = losses.tdpo_loss(
            chosen_logratios, rejected_logratios, chosen_kl, rejected_kl, beta=self.beta, alpha=self.tdpo_alpha,
            variant=self.tdpo_variant)
        self._record(inputs, chosen_rewards, rejected_rewards, chosen_kl.detach(), rejected_kl.detach())
        loss = per_pair.mean()
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _record(self, inputs, chosen_rewards, rejected_rewards, chosen_kl, rejected_kl) -> None:
        """DPOTrainer's reward metrics (TDPO's rewards: β (log-ratio + SeqKL)), each answer's SeqKL, the token count."""
        mode = "train" if self.model.training else "eval"

        def mean(values: torch.Tensor) -> float:
            return self.accelerator.gather(values).float().mean().item()

        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(mean(chosen_rewards))
        metrics["rewards/rejected"].append(mean(rejected_rewards))
        metrics["rewards/accuracies"].append(mean((chosen_rewards > rejected_rewards).float()))
        metrics["rewards/margins"].append(mean(chosen_rewards - rejected_rewards))
        metrics["tdpo/seq_kl_chosen"].append(mean(chosen_kl))
        metrics["tdpo/seq_kl_rejected"].append(mean(rejected_kl))
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
