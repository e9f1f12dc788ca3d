"""LoRA for every method, through peft: ``method.peft: null | {r, alpha, dropout, target_modules}``.

    python -m ift.train profile=real method=ift +method.peft='{r: 8, alpha: 16, dropout: 0.0}'
    python -m ift.train profile=real method=sft_dpo +lora@method.peft=default      # conf/lora/default.yaml

``method.peft`` is absent (= null) in every conf/method file, so configs without it are unchanged. With it, the
loaded model is wrapped with ``peft.get_peft_model`` before the trainer is built, so every trainer receives the
PEFT model: DPO's reference is then the model with its adapters disabled (= the initial model, as without LoRA);
IFT's hooks read the base model's embedding and head (``lean_head.decoder_and_head`` unwraps PEFT), which is why
LoRA on ``embed_tokens`` / ``lm_head`` is refused for IFT; the lean LM head of SFT, DPO, ORPO and SimPO
(``memory_efficient: true``, ift.train.lean_head) reads ``lm_head``'s weight too, so LoRA on it is refused there (not
for TDPO, which has no lean head). For ``sft_dpo`` the cell's ``method.peft`` applies to
both halves; each half saves a merged checkpoint, so the DPO half starts (and takes its reference) from the SFT
half's merged weights.

Saving writes a plain merged HF checkpoint, W + (alpha / r) · B·A per adapted layer, computed from the full state
dict (gathered from every process under FSDP / ZeRO-3), so the evaluation loads it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KEYS = ("r", "alpha", "dropout", "target_modules")
# Llama / Mistral / Qwen2 projection layers: attention and MLP, not the embeddings or the head.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDING_MODULES = ("embed_tokens", "lm_head")
ADAPTER = "default"  # peft's adapter name


class LoraConfigError(ValueError):
    """A bad ``method.peft`` value; the message names the key."""


def lora_settings(method: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``method.peft`` checked and completed, or None when LoRA is off (the key absent or null)."""
    if method is None:
        return None
    peft = method.get("peft")
    if peft is None:
        return None
    if not isinstance(peft, Mapping):
        raise LoraConfigError(f"method.peft must be null or a mapping with keys {list(KEYS)}, got {peft!r}")
    unknown = sorted(set(peft) - set(KEYS))
    if unknown:
        raise LoraConfigError(f"unknown key(s) method.peft.{', method.peft.'.join(unknown)}; allowed: {list(KEYS)}")
    r = peft.get("r", 8)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise LoraConfigError(f"method.peft.r must be a whole number >= 1, got {r!r}")
    alpha = peft.get("alpha", 2 * r)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
        raise LoraConfigError(f"method.peft.alpha must be a number > 0, got {alpha!r}")
    dropout = peft.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise LoraConfigError(f"method.peft.dropout must be in [0, 1), got {dropout!r}")
    targets = peft.get("target_modules")
    targets = list(DEFAULT_TARGET_MODULES) if targets is None else targets
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise LoraConfigError(f"method.peft.target_modules must be a non-empty list of module names, got {targets!r}")
    name = method.get("name")
    if name == "ift" and set(targets) & set(EMBEDDING_MODULES):
        raise LoraConfigError(
            f"method.peft.target_modules={list(targets)}: IFT reads the embedding table and the LM head directly "
            f"(its intuition and its chunked LM head), so LoRA on {sorted(set(targets) & set(EMBEDDING_MODULES))} "
            "would be ignored there; adapt the projection layers only")
    if "lm_head" in targets and _lean_head_on(method):
        raise LoraConfigError(
            f"method.peft.target_modules={list(targets)}: with memory_efficient: true the chunked LM head reads "
            "lm_head's weight directly, so LoRA on lm_head would be ignored; adapt the projection layers only, or "
            "set memory_efficient: false")
    return {"r": int(r), "alpha": float(alpha), "dropout": float(dropout), "target_modules": list(targets)}


def _lean_head_on(method: Mapping[str, Any]) -> bool:
    """Whether a method node (or a half of sft_dpo) runs the lean LM head (memory_efficient, default true)."""
    if method.get("name") == "sft_dpo":
        return any(_lean_head_on(method.get(half) or {}) for half in ("sft", "dpo"))
    if method.get("name") == "tdpo":  # always full logits (ift.train.tdpo_trainer); ift.methods refuses the switch
        return False
    return method.get("memory_efficient", True) is not False


def wrap(model, method: Mapping[str, Any] | None):
    """The model the trainer receives: ``model`` itself, or a peft model with fresh LoRA adapters (B = 0, so it
    computes exactly what ``model`` does until the first update). A target module that the model does not have is an
    error naming it."""
    settings = lora_settings(method)
    if settings is None:
        return model
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in settings["target_modules"] if t not in names]
    if missing:
        raise LoraConfigError(f"method.peft.target_modules: {missing} not found in {type(model).__name__} "
                              f"(its modules include {sorted(n for n in names if n.endswith('_proj'))})")
    config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                        target_modules=settings["target_modules"], bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency; without it nothing can be a peft model
        return False
    return isinstance(model, PeftModel)


def merged_state_dict(state_dict: Mapping[str, Any], scaling: float) -> dict[str, Any]:
    """A peft model's full state dict as the plain model's: each adapted layer's weight W + scaling · B·A, the
    peft prefixes removed, the adapter tensors dropped."""
    prefix = "base_model.model."
    plain: dict[str, Any] = {}
    for key, value in state_dict.items():
        if ".lora_" in key:
            continue
        name = key[len(prefix):] if key.startswith(prefix) else key
        if ".base_layer." in name:
            layer = key.split(".base_layer.")[0]
            name = name.replace(".base_layer.", ".")
            if name.endswith(".weight"):
                a = state_dict[f"{layer}.lora_A.{ADAPTER}.weight"]
                b = state_dict[f"{layer}.lora_B.{ADAPTER}.weight"]
                value = (value + scaling * (b.to(value.dtype) @ a.to(value.dtype))).to(value.dtype)
        plain[name] = value
    return plain


def checkpoint_parts(model, state_dict: Mapping[str, Any] | None):
    """(model, state_dict) to hand ``save_pretrained`` so that it writes a plain checkpoint: unchanged for a plain
    model; for a peft model, its base model without the LoRA layers and the merged full state dict (``state_dict``:
    the gathered one under FSDP / ZeRO-3; None: the model's own)."""
    if not is_peft(model):
        return model, state_dict
    config = model.peft_config[ADAPTER]
    if getattr(config, "use_rslora", False):
        raise LoraConfigError("rsLoRA adapters are not supported by the merge (method.peft has no such key)")
    full = dict(state_dict) if state_dict is not None else model.state_dict()
    merged = merged_state_dict(full, config.lora_alpha / config.r)
    return model.unload(), merged
