"""Loading and saving start points and trained cells as plain ``save_pretrained`` directories.

A checkpoint here is a directory with the model (config.json + safetensors weights), the tokenizer and its chat
template. Anything else — a missing dir, an empty one, truncated weights, a tokenizer without a chat template —
fails at once with a message naming the path and what to run, before any training starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from ift.io import atomic_directory

SUPPORTED_MODEL_TYPES = ("mistral", "llama", "qwen2")


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or unusable."""


def is_hub_id(ref: str) -> bool:
    """True for ``owner/name`` references that are not existing local paths (paper profile start points)."""
    return not Path(ref).exists() and ref.count("/") == 1 and not ref.startswith((".", "/"))


def check_checkpoint_dir(path: str | Path, *, what: str = "checkpoint", hint: str = "") -> Path:
    """Validate a local checkpoint dir and return it; raise CheckpointError naming the problem otherwise."""
    path = Path(path)
    suffix = f" ({hint})" if hint else ""
    if not path.is_dir():
        raise CheckpointError(f"{what} not found: {path} does not exist or is not a directory{suffix}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{what} at {path} is incomplete: no config.json{suffix}")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{what} at {path}: config.json is not valid JSON ({err}){suffix}") from err
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{what} at {path} has model_type={model_type!r}; expected a causal LM of type "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.safetensors.index.json"))
    if not weights:
        raise CheckpointError(f"{what} at {path} has no *.safetensors weights{suffix}")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise CheckpointError(f"{what} at {path} has no tokenizer (tokenizer.json){suffix}")
    return path


# Pretrained LMs that ship no chat template, and the template they are fine-tuned and evaluated with. The paper's
# `base` start, Mistral-7B-v0.1, gets the Zephyr template: the format of its `sft_beta` start
# (HuggingFaceH4/mistral-7b-sft-beta, whose tokenizer carries it) and of the alignment-handbook recipes the IFT
# authors' code builds on, so both start points, every method and every evaluation format chats alike. The
# miniature world's tokenizer ships the same template (ift.world.tokenizer.CHAT_TEMPLATE, with generation markers).
BASE_MODEL_TEMPLATES = {"mistralai/Mistral-7B-v0.1": "zephyr"}


def ensure_chat_template(tokenizer, ref: str, *, what: str = "checkpoint") -> None:
    """A tokenizer without a chat template gets the one listed for ``ref`` in BASE_MODEL_TEMPLATES, said aloud;
    any other checkpoint without one is an error naming it (no silent fallback: a chat model formatted with another
    model's template trains and evaluates on a format it never saw)."""
    if tokenizer.chat_template:
        return
    name = BASE_MODEL_TEMPLATES.get(str(ref))
    if name is None:
        raise CheckpointError(
            f"{what} at {ref} has no chat template, and {ref} is not a base model with a known template "
            f"({', '.join(f'{k}: {v}' for k, v in BASE_MODEL_TEMPLATES.items())}); save the tokenizer with the "
            "template it is to be trained with (tokenizer.chat_template = ...; tokenizer.save_pretrained(dir))")
    from ift.world.tokenizer import CHAT_TEMPLATE

    print(f"[checkpoint] {what} at {ref} has no chat template: using the {name} template (BASE_MODEL_TEMPLATES)")
    tokenizer.chat_template = CHAT_TEMPLATE


def load_causal_lm(ref: str | Path, *, what: str = "checkpoint", hint: str = "", dtype=None):
    """Load (model, tokenizer) from a local checkpoint dir or, in the paper profile, a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = str(ref)
    if not is_hub_id(ref):
        check_checkpoint_dir(ref, what=what, hint=hint)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype or torch.float32)
    except Exception as err:  # truncated safetensors raise their own error type; all mean "unusable checkpoint"
        raise CheckpointError(f"could not load {what} from {ref}: {err}{f' ({hint})' if hint else ''}") from err
    ensure_chat_template(tokenizer, ref, what=what)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def widen_tokenizer_window(model_config, tokenizer) -> None:
    """Raise the tokenizer's ``model_max_length`` to the model's ``max_position_embeddings`` where it is lower: the
    world tokenizer says 256 (the training length), the model reads 512."""
    window = getattr(model_config, "max_position_embeddings", None)
    if window and (tokenizer.model_max_length or 0) < window:
        tokenizer.model_max_length = window


def write_checkpoint(model, tokenizer, directory: str | Path, state_dict: dict | None = None) -> None:
    """Write model (safetensors) + tokenizer (with its chat template) into an existing directory.

    The saved tokenizer's ``model_max_length`` is the model's window (:func:`widen_tokenizer_window`), which is what
    the evaluation reads with, so that ``lm_eval`` run on the directory by hand sees the same window. The tokenizer
    object itself keeps its value (a run may go on using it).

    ``state_dict``: the full weights to write instead of the model's own (a sharded FSDP/ZeRO-3 model's gathered
    full state dict; see ift.train.loop.save_run).
    """
    model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    kept = tokenizer.model_max_length
    widen_tokenizer_window(model.config, tokenizer)
    try:
        tokenizer.save_pretrained(directory)
    finally:
        tokenizer.model_max_length = kept


def save_checkpoint(model, tokenizer, out_dir: str | Path) -> Path:
    """Save model + tokenizer atomically: the dir appears only once complete."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        write_checkpoint(model, tokenizer, tmp)
    return out_dir
