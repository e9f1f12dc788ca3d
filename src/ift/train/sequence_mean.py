"""Per-sequence-mean losses in TRL's SFTTrainer: the authors' SFT reduction, and the normalisation IFT shares.

The IFT authors' SFT loss (and IFT's, docs/design.md) is the mean over sequences of each sequence's mean response NLL;
TRL's SFTTrainer takes the token mean over the batch instead. Under gradient accumulation and across processes the
divisor must be the number of sequences in the whole optimiser step, not per micro-batch: ``_get_num_items_in_batch``
counts the sequences with at least one response token (gathered over processes) and ``step_mean`` divides the summed
per-sequence losses by it, times the process count because DDP/FSDP average gradients. Hence 8x1 = 4x2 = 2x4.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from ift import logprobs, losses
from ift.train.lean_head import LeanHeadMixin


class SequenceMeanMixin:
    """Normalisation by the optimiser step's sequence count, for a Trainer whose ``compute_loss`` returns it."""

    def _get_num_items_in_batch(self, batch_samples, device):
        """Sequences with at least one response token in this optimiser step, summed over all processes."""
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        count = sum((batch["labels"][:, 1:] != -100).any(-1).sum() for batch in batch_samples)
        count = torch.as_tensor(count, device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count

    def step_mean(self, seq_losses: torch.Tensor, has_response: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """This micro-batch's share of the step's mean over sequences (a lone forward: its own mean)."""
        if num_items_in_batch is None:  # evaluation / a lone forward: mean over this batch's sequences
            return seq_losses.sum() / has_response.sum().clamp(min=1)
        return seq_losses.sum() / num_items_in_batch * self.accelerator.num_processes

    def count_tokens(self, attention_mask: torch.Tensor) -> None:
        """Keep TRL's ``num_tokens`` metric (SFTTrainer's own compute_loss, which logs it, is replaced)."""
        mode = "train" if self.model.training else "eval"
        if mode == "train":
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(attention_mask.sum()).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]


class SequenceMeanSFTTrainer(LeanHeadMixin, SequenceMeanMixin, SFTTrainer):
    """SFTTrainer whose loss is the authors' SFT: per sequence the mean NLL of its response tokens, then the mean
    over the step's sequences (``reduction: sequence_mean`` in conf/method/sft.yaml). Its log-probs come from the
    lean LM head (``lean.memory_efficient``, ift.train.lean_head) or from the model's full logits."""

    lean_outputs = ()  # it logs none of TRL's per-token metrics (entropy, token accuracy)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # compute_loss normalises by the step's sequence count itself: Trainer must not divide by GA again.
        self.loss_is_scaled_for_ga = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.lean.memory_efficient:
            outputs = self.lean_head_output(model, inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"])
            token_logps, mask = outputs.log_probs, outputs.label_mask
        else:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                            use_cache=False)
            token_logps, mask = logprobs.gather_label_logps(outputs.logits, inputs["labels"])
        seq_losses = -losses.sequence_logps(token_logps, mask, average=True)  # 0 for a sequence without response
        loss = self.step_mean(seq_losses, mask.any(-1), num_items_in_batch)
        if inputs.get("attention_mask") is not None:
            self.count_tokens(inputs["attention_mask"])
        return (loss, outputs) if return_outputs else loss
