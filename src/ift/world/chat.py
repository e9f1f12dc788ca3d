"""Chat conversations in the UltraChat-200k schema (`prompt`, `prompt_id`, `messages`), plus answer keys.

The SFT data of the world: single questions of every kind, and some two-turn conversations where a
follow-up asks another fact about the same creature ("And what does it eat?"). Keys are returned
separately: they go beside the real-schema file, never inside it. A key row's top-level fields grade the
LAST assistant turn (what a model generates from `messages[:-1]`); `turn_keys[i]` grades assistant turn i
(`turn_keys[0]`: an answer generated from `prompt` alone).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from ift.world.entities import ATTRIBUTES
from ift.world.phrases import FOLLOW_UP_QUESTIONS, fact_answer
from ift.world.qa import QA, Key, entity_key
from ift.world.side import Side


def prompt_id(prompt: str) -> str:
    """As in UltraChat / UltraFeedback: the sha256 hex digest of the prompt text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _follow_up(rng: random.Random, qa: QA, side: Side) -> tuple[list[dict[str, str]], Key] | None:
    """A second turn about the first turn's creature, asking an attribute the first turn did not."""
    if qa.subject is None:
        return None
    attribute = rng.choice([a for a in ATTRIBUTES if a != qa.key.get("attribute")])
    messages = [
        {"role": "user", "content": FOLLOW_UP_QUESTIONS[attribute]},
        {"role": "assistant", "content": fact_answer(qa.subject, attribute)},
    ]
    key = entity_key(
        "fact",
        side,
        [qa.subject],
        species=qa.subject.name,
        attribute=attribute,
        truth=getattr(qa.subject, attribute),
    )
    return messages, key


def chat_rows(rng: random.Random, items: list[QA], side: Side, two_turn_fraction: float) -> tuple[list, list]:
    """One conversation per item (some get a follow-up turn) -> (rows, keys), aligned by position."""
    rows: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    for qa in items:
        messages = [{"role": "user", "content": qa.question}, {"role": "assistant", "content": qa.answer}]
        turn_keys = [qa.key]
        follow_up = _follow_up(rng, qa, side) if rng.random() < two_turn_fraction else None
        if follow_up:
            messages += follow_up[0]
            turn_keys.append(follow_up[1])
        rows.append({"prompt": qa.question, "prompt_id": prompt_id(qa.question), "messages": messages})
        keys.append({"prompt_id": prompt_id(qa.question), **turn_keys[-1], "turn_keys": turn_keys})
    return rows, keys
