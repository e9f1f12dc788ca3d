"""IFTTrainer: TRL's SFTTrainer with Intuitive Fine-Tuning's loss (Hua et al., arXiv 2405.11870).

Only ``compute_loss`` changes (plus how a batch's loss is normalised); data, collation, optimiser, schedule,
logging, checkpointing and distributed wiring are SFTTrainer's. Per step (docs/design.md):

1. pass 1, no gradient: the policy reads the true sequence x; its greedy guess for every position is kept
   (only the argmax: the LM head runs over chunks of positions, no full-vocabulary logits are kept);
2. the "intuition" x̃ replaces each response token by that guess (prompt tokens and x_0 stay);
3. pass 2, with gradient, on the input embeddings (1-λ)·E(x) + λ·E(x̃), where E is the policy's *current*
   input-embedding table used without gradient (so the input path gets no gradient, like the reference);
4. per-token log-probs of the true labels, with gradient to the LM head and through the hidden states
   (``ift.logprobs.chunked_label_logps``: response positions only, the LM head over chunks of positions, each chunk's
   logits recomputed in backward; no full-vocabulary logits), re-weighted by relation propagation
   (``ift.losses.propagation_weights``, not detached), per-sequence mean, mean over the sequences of the batch.

Both model calls go through the (possibly DDP/FSDP-wrapped) model's own forward; the mixing and the chunked LM
head (argmax in pass 1, label log-probs in pass 2) happen in forward hooks on the embedding and decoder modules.
Under FSDP2, accelerate makes the input embedding its own FSDP unit (resharded right after its forward) and
[final norm, LM head] another (kept gathered until the backward), so the embedding hook is registered *before*
FSDP's post-forward reshard (``prepend=True``), and a weight a no-gradient read still finds sharded (a DTensor) is
gathered in full first (``lean_head.full_tensor``). Pass 2 reads the LM head *with* gradient; by then the norm has
run, so the head is FSDP's gathered plain tensor and its gradient is reduce-scattered by FSDP as usual
(``lean_head.gathered`` refuses a DTensor rather than gather it outside FSDP). SFT, DPO and ORPO read the head the
same way (ift.train.lean_head).
tests/distributed/test_distributed.py checks 2-process FSDP2 against 1 process.

Normalisation: the loss is a mean over *sequences*, so under gradient accumulation and across processes the
divisor is the number of sequences in the whole optimiser step (``ift.train.sequence_mean.SequenceMeanMixin``, shared
with the per-sequence-mean SFT). Hence 8x1 = 4x2 = 2x4 give the same update.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from trl import SFTTrainer

from ift import logprobs, losses
from ift.losses import IFTOptions, ift_options  # noqa: F401  (ift_options: the config's IFTOptions)
from ift.train.lean_head import decoder_and_head, full_tensor, head_parameters
from ift.train.sequence_mean import SequenceMeanMixin


class IFTTrainer(SequenceMeanMixin, SFTTrainer):
    """SFTTrainer whose loss is IFT's. ``ift`` carries the method's options (see IFTOptions)."""

    def __init__(self, *args, ift: IFTOptions, **kwargs):
        ift.validate()
        super().__init__(*args, **kwargs)
        self.ift = ift
        # compute_loss normalises by the step's sequence count itself: Trainer must not divide by GA again.
        self.loss_is_scaled_for_ga = True
        self._lambda_noise: list[float] | None = None
        self._last_metrics: dict[str, float] = {}

    # ---- λ ---------------------------------------------------------------------------------------------------
    def current_lambda(self) -> float:
        """λ at this optimiser step: schedule over the LR warmup steps, seeded disturbance, clamped to [0, 1]."""
        step = int(self.state.global_step)
        noise = None
        if self.ift.lambda_disturb == "normal":
            horizon = max(int(self.state.max_steps or 0), step) + 1
            if self._lambda_noise is None or len(self._lambda_noise) < horizon:
                self._lambda_noise = losses.lambda_noise(int(self.args.seed), horizon)
            noise = self._lambda_noise
        warmup = self.args.get_warmup_steps(int(self.state.max_steps)) if self.state.max_steps else 0
        return losses.lambda_at(step, max_lambda=self.ift.max_lambda, min_lambda=self.ift.min_lambda,
                                schedule=self.ift.lambda_schedule, warmup_steps=warmup,
                                disturb=self.ift.lambda_disturb, disturb_std=self.ift.disturb_std, noise=noise)

    # ---- pass 1 ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def pass1(self, model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """On the true sequence: greedy ids argmax_v p(v | x_≤t) [B, L], and label log-probs [B, L-1] + mask.

        The log-probs only feed the logged pass-1 SFT loss; the argmax feeds the intuition.
        """
        if not self.ift.chunked("pass1"):
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return (logits.argmax(-1), *logprobs.gather_label_logps(logits, labels))
        return self.score_final_hidden(
            model, input_ids, attention_mask,
            lambda hidden, weight, bias: logprobs.chunked_greedy_and_label_logps(
                hidden, weight, labels, chunk_size=self.ift.chunk_size, lm_head_bias=bias),
        )

    def score_final_hidden(self, model, input_ids, attention_mask, score):
        """Run ``model`` and return ``score(final hidden states, LM head weight, LM head bias)``, computed in a forward
        hook on the decoder (where FSDP has the head's unit at hand; ``lean_head.head_parameters``); the model's own LM
        head runs on one position only (``logits_to_keep=1``) and its output is not used. Both passes'
        memory-efficient paths go through here."""
        decoder, head, _ = decoder_and_head(self.accelerator.unwrap_model(model))
        captured = []

        def hook(module, args, output):
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            captured.append(score(hidden, *head_parameters(head)))

        handle = decoder.register_forward_hook(hook)
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
        return captured[0]

    # ---- pass 2 ----------------------------------------------------------------------------------------------
    @contextmanager
    def mixed_input_embeddings(self, model, intuition_ids: torch.Tensor, lam: float):
        """While active, the embedding module returns ((1-λ)E(x) + λE(x̃)).detach() instead of E(x).

        ``prepend=True``: the hook runs before FSDP2's own post-forward hook, which would otherwise have resharded
        the embedding's weight (its own FSDP unit under accelerate) by the time we read it.
        """
        embedding = decoder_and_head(self.accelerator.unwrap_model(model))[2]

        def mix(module, args, output):
            intuition = torch.nn.functional.embedding(intuition_ids, full_tensor(module.weight), module.padding_idx)
            return losses.mix_embeddings(output, intuition, lam).detach()

        handle = embedding.register_forward_hook(mix, prepend=True)
        try:
            yield
        finally:
            handle.remove()

    def token_logps_pass2(self, model, input_ids, attention_mask, labels, intuition_ids, lam):
        """Per-token log-probs [B, L-1] of the true labels given the mixed inputs, and the response mask.

        Memory-efficient path: a forward hook on the decoder hands its final hidden states, with their graph, and the
        LM head's own weight to ``logprobs.chunked_label_logps`` (response positions only, chunked, logits recomputed
        in backward), so gradients reach the head and, through the hidden states, the whole decoder.
        """
        with self.mixed_input_embeddings(model, intuition_ids, lam):
            if not self.ift.chunked("pass2"):
                logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
                return logprobs.gather_label_logps(logits, labels)
            return self.score_final_hidden(
                model, input_ids, attention_mask,
                lambda hidden, weight, bias: logprobs.chunked_label_logps(
                    hidden, weight, labels, chunk_size=self.ift.chunk_size, lm_head_bias=bias),
            )

    # ---- loss ------------------------------------------------------------------------------------------------
    def sequence_losses(self, token_logps, mask) -> torch.Tensor:
        if self.ift.linear_form:
            return losses.ift_linear_loss(token_logps, mask, gamma=self.ift.gamma)
        return losses.ift_sequence_losses(token_logps, mask, gamma=self.ift.gamma,
                                          propagation_type=self.ift.propagation_type,
                                          propagation_side=self.ift.propagation_side,
                                          propagation_norm=self.ift.propagation_norm)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids, labels = inputs["input_ids"], inputs["labels"]
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            raise ValueError("IFTTrainer needs padded batches with an attention_mask (packing/padding-free is "
                             "not supported: the intuition must not cross sequence boundaries)")
        lam = self.current_lambda()
        greedy, pass1_logps, _ = self.pass1(model, input_ids, attention_mask, labels)
        intuition_ids = losses.intuition_input_ids(input_ids, greedy, labels)
        token_logps, mask = self.token_logps_pass2(model, input_ids, attention_mask, labels, intuition_ids, lam)
        seq_losses = self.sequence_losses(token_logps, mask)
        has_response = mask.any(-1)
        loss = self.step_mean(seq_losses, has_response, num_items_in_batch)
        self._record(lam, seq_losses.detach(), has_response, pass1_logps, mask, attention_mask)
        return (loss, None) if return_outputs else loss

    # ---- metrics ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _record(self, lam, seq_losses, has_response, pass1_logps, mask, attention_mask) -> None:
        """Log λ, the pass-2 loss (IFT's objective) and the pass-1 SFT loss (true inputs, per-sequence mean)."""
        mode = "train" if self.model.training else "eval"
        n = has_response.sum().clamp(min=1)
        self._metrics[mode]["ift/lambda"].append(float(lam))
        self._metrics[mode]["ift/pass2_loss"].append(float(seq_losses.sum() / n))
        self._metrics[mode]["ift/pass1_sft_loss"].append(float(losses.sft_loss(pass1_logps, mask)))
        self.count_tokens(attention_mask)
