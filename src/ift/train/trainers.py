"""One function that builds the TRL trainer for a method; the methods share everything but the trainer class.

sft  -> trl.SFTTrainer (completion-only NLL)          ift  -> IFTTrainer (SFTTrainer + IFT's compute_loss)
dpo  -> trl.DPOTrainer (reference = the initial model) orpo -> trl.experimental.orpo.ORPOTrainer
"""

from __future__ import annotations

from collections.abc import Mapping


def build_trainer(method: Mapping, *, model, tokenizer, dataset, common_args: dict, max_length: int, callbacks=()):
    """The TRL trainer for ``method`` (a conf/method/*.yaml node) over ``dataset`` (TRL conversational format)."""
    name = method["name"]
    callbacks = list(callbacks)
    if name in ("sft", "ift"):
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common_args, max_length=max_length, completion_only_loss=True, packing=False)
        if name == "sft":
            return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                              callbacks=callbacks)
        from ift.train.ift_trainer import IFTTrainer
        from ift.train.validate import ift_options

        return IFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=callbacks, ift=ift_options(method))
    if name == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common_args, max_length=max_length, beta=float(method["beta"]),
                         precompute_ref_log_probs=bool(method.get("precompute_ref_log_probs", False)))
        # ref_model=None: TRL loads the reference from the policy's own checkpoint (= the initial weights).
        return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=callbacks)
    if name == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**common_args, max_length=max_length, beta=float(method["beta"]))
        return ORPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                           callbacks=callbacks)
    raise ValueError(f"unknown method {name!r}")
