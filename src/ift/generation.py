"""Batched greedy generation with the chat template, shared by every evaluation that reads model outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    text: str            # decoded answer, special tokens removed
    ended_with_eos: bool  # the model stopped by itself (not cut by max_new_tokens)
    n_tokens: int        # generated tokens, eos included


def generate_chat(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    progress: bool = False,
) -> list[Generation]:
    """Greedy-decode an assistant answer for each conversation (a list of messages ending in a user turn).

    ``progress`` shows a progress bar over the batches (long evaluations)."""
    import torch
    from tqdm.auto import tqdm

    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    prompts = [
        tokenizer.apply_chat_template(list(conv), add_generation_prompt=True, tokenize=False) for conv in conversations
    ]
    results: list[Generation] = []
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only batched generation needs left padding
    try:
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="Generating answers", unit="batch", disable=not progress):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=eos_id,
                    pad_token_id=pad_id,
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            for row in new_tokens.tolist():
                ended = eos_id in row
                kept = row[: row.index(eos_id) + 1] if ended else row
                text = tokenizer.decode(kept, skip_special_tokens=True)
                results.append(Generation(text=text.strip(), ended_with_eos=ended, n_tokens=len(kept)))
    finally:
        tokenizer.padding_side = old_side
    return results
