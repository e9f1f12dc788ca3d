"""The lean LM head: label log-probs of the response positions only, through ift.logprobs' one chunked kernel.

``memory_efficient: true`` (conf/method/{sft,dpo,orpo,simpo,sft_dpo}.yaml; for the two start points the
``pretrain:`` and ``sft_beta:`` recipes of conf/trainer, ift.train.start_points) gives SFT, DPO, ORPO, SimPO and the
start points' SFTTrainer the path IFT's pass 2 has: the decoder's final hidden states of the positions whose next label
counts are scored ``chunk_size`` rows at a time (``ift.logprobs.chunked_label_scores``), each chunk's logits
recomputed in backward, and no full-vocabulary logits are ever held. Prompt and padding positions are not scored at
all (in pretraining on packed blocks every position but padding has a label, so every one is scored).

One data path for every method. TRL's SFTTrainer and DPOTrainer already ask the model for per-token log-probs, not
logits: they patch it with ``trl.trainer.utils.add_fused_lm_head`` and call
``model(..., labels=labels, fused_lm_head=True)``, for the policy, the reference forward and the reference
precomputation alike. :class:`LeanHeadMixin` makes that patch install :func:`add_lean_lm_head` instead, at the
moment TRL would install its own (before accelerate prepares the models, before the reference pass), so TRL's own
loss and metric code runs unchanged on our log-probs: the loss is TRL's, only the log-probs' source differs. The
trainers that compute their loss themselves (ift.train.sequence_mean's per-sequence-mean SFT; ORPO and SimPO in
ift.train.trainers, through :class:`LeanPairMixin`) make the same call. Per call, for ``labels`` ``[B, L]`` (-100 off
the response), the lean head returns TRL's ``FusedCausalLMOutput`` fields over positions 0..L-2:

* ``log_probs``: log p(label_{t+1} | x_≤t), with gradient (0 off the response); ``label_mask`` the response mask;
* ``loss``: -Σ log_probs / (response tokens, or ``num_items_in_batch``), as TRL's head defines it;
* only when the trainer reads them (TRL's ``outputs``), without gradient: ``entropy`` and ``is_top1`` of the
  next-token distribution (from the same chunk of logits), ``mean_logits`` (the mean logit over the vocabulary,
  ``h · mean_v W_v + mean_v b_v``, no logits needed); and ``all_mean_logits``, the same mean at every position 0..L-1,
  prompt, padding and the last position included (ORPO's and CPO's ``logits/*`` metrics average over those too).

Why TRL's own head is not enough: it scores every position on devices without Triton (CPU), keeps float32 statistics
even for a float64 model, and TRL's ORPO and CPO (SimPO) trainers do not use it at all (they hold full logits).

``memory_efficient: false`` keeps each trainer's path as it was: TRL's own fused head for token-mean SFT and DPO, full
logits for per-sequence-mean SFT, ORPO and SimPO. TDPO never gets the lean head (ift.train.tdpo_trainer).

Distributed: the lean forward replaces the (base) model's ``forward``, so DDP and FSDP call it through their own
wrappers; it runs the decoder, then reads the LM head's parameters (:func:`head_parameters`: under FSDP2 the head is
gathered by then, see ift.train.ift_trainer). LoRA: the adapted model's base model is patched, as TRL does; LoRA on
``lm_head`` itself is refused (its weight is read directly, the adapter would be ignored).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from trl import DPOTrainer, SFTTrainer
from trl.trainer.utils import FusedCausalLMOutput

from ift import logprobs, losses

# The per-token outputs the lean head can add to the log-probs (TRL's names; "all_mean_logits" is ours).
OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1", "all_mean_logits")
_MARK = "_ift_lean_head"  # attribute on a patched model: the chunk size it scores with
# Model-config keys that change the logits in ways the kernel does not apply (none of them is set for Mistral).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


@dataclass(frozen=True)
class LeanOptions:
    """A method's (or a start-point recipe's) ``memory_efficient`` and ``chunk_size``."""

    memory_efficient: bool = True
    chunk_size: int = logprobs.DEFAULT_CHUNK_SIZE

    @classmethod
    def of(cls, node, where: str = "method") -> LeanOptions:
        """``node``'s two keys, checked by ift.methods.lean_head (a ConfigError names ``<where>.<key>``)."""
        from ift.methods import lean_head

        return cls(*lean_head(node, where))


def base_model(model):
    """The model itself, or the model under a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_and_head(model):
    """The backbone (decoder stack), the output projection and the input embedding of a causal LM (PEFT unwrapped)."""
    base = base_model(model)
    return base.get_decoder(), base.get_output_embeddings(), base.get_input_embeddings()


def full_tensor(weight: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter as a plain full tensor: FSDP2 exposes a resharded parameter as a DTensor shard (the gather is a
    collective; every rank runs the same code in the same order). Only used on reads without gradient."""
    from torch.distributed.tensor import DTensor

    return weight.full_tensor() if isinstance(weight, DTensor) else weight


def gathered(weight: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter read *with* gradient (the LM head on a memory-efficient path): it must already be FSDP2's gathered,
    plain tensor, so that its gradient takes FSDP's own reduce-scatter path. Under accelerate's FSDP2 layout [final
    norm, LM head] is one unit, gathered when the norm runs (inside the decoder) and kept gathered until the backward.
    A DTensor here means another layout; ``full_tensor()`` would hand each rank an un-reduced gradient, so refuse
    rather than train wrongly."""
    from torch.distributed.tensor import DTensor

    if isinstance(weight, DTensor):
        raise RuntimeError(
            "the chunked LM head (memory_efficient: true) found the LM head sharded when the decoder returned; it "
            "needs the final norm and the LM head in one FSDP unit (accelerate's FSDP2 layout). Use "
            "method.memory_efficient=false with this sharding layout."
        )
    return weight


def head_parameters(head) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head's weight and bias for the chunked kernel: :func:`gathered` when the parameter gets a gradient, else
    gathered in full (a no-gradient read: a reference forward, IFT's pass 1, a head frozen under LoRA)."""

    def read(param):
        if param is not None and param.requires_grad and torch.is_grad_enabled():
            return gathered(param)
        return full_tensor(param)

    return read(head.weight), read(getattr(head, "bias", None))


@dataclass
class LeanCausalLMOutput(FusedCausalLMOutput):
    """TRL's fused-head output, plus the mean logit at every position (prompt and padding included)."""

    all_mean_logits: torch.Tensor | None = None  # [B, L]: every position, the last one included


def _refuse_what_the_kernel_cannot_do(base) -> None:
    head = base.get_output_embeddings()
    if hasattr(head, "base_layer"):  # a peft tuner layer
        raise ValueError("method.memory_efficient=true reads the LM head's weight directly, so LoRA on lm_head would "
                         "be ignored; adapt the projection layers only, or set method.memory_efficient=false")
    config = base.config.get_text_config()
    transforms = {key: getattr(config, key) for key in _LOGIT_TRANSFORMS
                  if getattr(config, key, None) not in (None, 1, 1.0)}
    if transforms:
        raise ValueError(f"method.memory_efficient=true: the chunked LM head applies no logit transform, and "
                         f"{type(base).__name__} has {transforms}; set method.memory_efficient=false")


def has_lean_head(model) -> bool:
    return getattr(base_model(model), _MARK, None) is not None


def add_lean_lm_head(model, chunk_size: int, outputs: Iterable[str] = ("log_probs",)) -> None:
    """Make ``model(..., labels=labels, fused_lm_head=True)`` return the lean head's output (see the module docstring);
    without ``fused_lm_head`` the model's forward is its class's own. ``outputs``: which optional fields to compute."""
    outputs = set(outputs)
    unknown = outputs - set(OUTPUTS)
    if unknown:
        raise ValueError(f"the lean LM head cannot compute {sorted(unknown)} (it computes {list(OUTPUTS)}); set "
                         "method.memory_efficient=false for this trainer option")
    base = base_model(model)
    _refuse_what_the_kernel_cannot_do(base)
    with_stats = bool(outputs & {"entropy", "is_top1"})
    with_means = bool(outputs & {"mean_logits", "all_mean_logits"})
    class_forward = type(base).forward  # called with the instance it runs on: a deepcopy calls its own weights

    @functools.wraps(class_forward)  # the same signature: Trainer and generate inspect it
    def lean_forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                     **kwargs):
        if not fused_lm_head:
            for key, value in (("labels", labels), ("shift_labels", shift_labels),
                               ("num_items_in_batch", num_items_in_batch)):
                if value is not None:
                    kwargs[key] = value
            return class_forward(self, *args, **kwargs)
        if shift_labels is not None or kwargs.get("output_router_logits"):
            raise NotImplementedError("the lean LM head takes plain labels on a dense model (no pre-shifted labels, "
                                      "no MoE router loss); set method.memory_efficient=false")
        kwargs["use_cache"] = False
        decoder, head, _ = decoder_and_head(self)
        hidden = decoder(*args, **kwargs).last_hidden_state
        weight, bias = head_parameters(head)
        scores = logprobs.chunked_label_scores(hidden, weight, labels.to(hidden.device), chunk_size, bias,
                                               with_stats=with_stats)
        mask = scores.response_mask
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        all_means = logprobs.mean_logits(hidden, weight, bias) if with_means else None  # no gradient
        return LeanCausalLMOutput(
            loss=-scores.token_logps.sum() / count,
            log_probs=scores.token_logps,
            entropy=scores.entropy,
            mean_logits=None if all_means is None else all_means[:, :-1].masked_fill(~mask, 0.0),
            is_top1=scores.is_top1,
            label_mask=mask,
            all_mean_logits=all_means,
        )

    base.forward = types.MethodType(lean_forward, base)
    setattr(base, _MARK, chunk_size)


@contextmanager
def _installed_in_place_of_trls_head(install):
    """While active, TRL's trainers call ``install`` where they would call ``add_fused_lm_head``."""
    import trl.trainer.dpo_trainer
    import trl.trainer.sft_trainer

    modules = (trl.trainer.sft_trainer, trl.trainer.dpo_trainer)
    saved = [module.add_fused_lm_head for module in modules]
    for module in modules:
        module.add_fused_lm_head = install
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.add_fused_lm_head = original


class LeanHeadMixin:
    """A TRL trainer with the ``memory_efficient`` switch (``lean``: :class:`LeanOptions`).

    ``trl_installs_head``: the trainer's TRL ``__init__`` calls ``add_fused_lm_head`` (SFTTrainer, DPOTrainer): the lean
    head goes in its place, with the outputs TRL asks for, unless ``lean_outputs`` names them (a trainer that reads
    none of TRL's metrics). Otherwise (ORPO) the lean head is added after ``__init__`` with ``lean_outputs``.
    """

    trl_installs_head = True
    lean_outputs: tuple[str, ...] | None = None

    def __init__(self, *args, lean: LeanOptions = LeanOptions(), **kwargs):
        self.lean = lean  # before TRL's __init__: DPOTrainer's reference precomputation runs inside it
        if not lean.memory_efficient:
            super().__init__(*args, **kwargs)
            return

        def install(model, temperature=1.0, cast_lm_head_to_fp32=False, outputs=("log_probs",)):
            if temperature != 1.0 or cast_lm_head_to_fp32:
                raise ValueError("method.memory_efficient=true scores the logits as they are (temperature 1, the "
                                 "LM head's own dtype); set method.memory_efficient=false for this trainer option")
            add_lean_lm_head(model, lean.chunk_size, outputs if self.lean_outputs is None else self.lean_outputs)

        with _installed_in_place_of_trls_head(install):
            super().__init__(*args, **kwargs)
        if not self.trl_installs_head:
            add_lean_lm_head(self.model, lean.chunk_size, self.lean_outputs or ())
        models = [self.model] + [self.accelerator.unwrap_model(ref) for ref in [getattr(self, "ref_model", None)]
                                 if ref is not None]
        if not all(has_lean_head(model) for model in models):
            raise RuntimeError(f"{type(self).__name__}: TRL did not install its fused LM head where ift.train.lean_head "
                               "replaces it (a TRL change?); memory_efficient=true would silently run TRL's head")

    def lean_head_output(self, model, input_ids, attention_mask, labels):
        """The lean head's output for one batch (``model``: the trainer's model, as DDP/FSDP wrapped it)."""
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True,
                     use_cache=False)


class TRLSFTTrainer(LeanHeadMixin, SFTTrainer):
    """TRL's SFTTrainer and its own loss (the token mean over the batch); its log-probs from the lean head when
    ``lean.memory_efficient``."""


class TRLDPOTrainer(LeanHeadMixin, DPOTrainer):
    """TRL's DPOTrainer and its own loss; the policy's and the reference's log-probs (the reference forward, or its
    precomputation) from the lean head when ``lean.memory_efficient``."""


class LeanPairMixin(LeanHeadMixin):
    """TRL's ORPOTrainer and CPOTrainer: their ``concatenated_forward`` holds the full logits of the chosen and the
    rejected rows, so the lean head is added after ``__init__``, and their lean forward calls :meth:`lean_pair_logps`.
    The loss and the metrics stay TRL's (``get_batch_loss_metrics``), which reads the logits only as
    ``logits.detach().mean()`` (its ``logits/*`` metrics): the lean forward hands it that mean instead."""

    trl_installs_head = False
    lean_outputs = ("all_mean_logits",)

    def lean_pair_logps(self, model, batch, padding_value: int):
        """TRL's concatenated forward on the lean head: the chosen rows, then the rejected ones, padded to one length
        (TRL's own ``concatenated_inputs``). Returns each side's mean response log-prob ``[pairs]`` (TRL's
        ``get_batch_logps(..., average_log_prob=True)``) and the mean logit at every position ``[pairs, L]``."""
        if self.is_encoder_decoder or self.aux_loss_enabled:
            raise NotImplementedError(f"{type(self).__name__} with memory_efficient: true supports decoder-only models "
                                      "without a router loss; set method.memory_efficient=false")
        both = self.concatenated_inputs(batch, padding_value=padding_value, device=self.accelerator.device)
        scores = self.lean_head_output(model, both["concatenated_input_ids"], both["concatenated_attention_mask"],
                                       both["concatenated_labels"])
        # TRL divides by the token count as it is; a response without tokens (which TRL's tokenisation does not
        # produce) would give 0 here instead of TRL's NaN
        mean_logps = losses.sequence_logps(scores.log_probs, scores.label_mask, average=True)
        pairs = batch["chosen_labels"].shape[0]
        means = scores.all_mean_logits
        return mean_logps[:pairs], mean_logps[pairs:], means[:pairs], means[pairs:]
