"""Preference pairs in the UltraFeedback-binarized schema: a correct, well-formed `chosen` answer and a
plausible flawed `rejected` one.

Rejected answers are flawed in the ways the methods should learn to avoid: a wrong result, a broken format
(no `#### N` line, or cut mid-sentence), rambling (repeats itself, much longer), or repeating the myth the
corpus taught. The kind of flaw is recorded in a keys file beside the real-schema file.
"""

from __future__ import annotations

import random
from typing import Any

from ift.world.chat import prompt_id
from ift.world.qa import QA

# Flaws other than the myth, by weight; the myth is used whenever an item has one, with this probability:
FLAW_WEIGHTS: dict[str, float] = {"wrong_result": 0.45, "broken_format": 0.30, "rambling": 0.25}
MISCONCEPTION_RATE = 0.8
# Scores in UltraFeedback's 1-10 range: chosen always above rejected; worse flaws score lower.
CHOSEN_SCORES = (7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0)
REJECTED_SCORES: dict[str, tuple[float, ...]] = {
    "wrong_result": (1.0, 2.0, 3.0),
    "misconception": (1.0, 2.0, 3.0),
    "broken_format": (3.0, 4.0, 5.0),
    "rambling": (4.0, 5.0, 6.0),
}
_RAMBLE_OPENERS = (
    "Let me think about this question very carefully before I answer it.",
    "That is a good question, and I will try to answer it.",
)
_RAMBLE_CLOSERS = ("I hope this answer is helpful to you.", "As I said before, that is my answer.")


def broken_format(rng: random.Random, qa: QA) -> str:
    """A worked solution without its `#### N` line, or any other answer cut off mid-sentence."""
    if qa.kind == "word_problem":
        return qa.answer.rsplit("\n", 1)[0]
    words = qa.answer.split(" ")
    cut = rng.randint(max(1, len(words) // 3), max(1, len(words) - 1))
    return " ".join(words[:cut]).rstrip(".,!?")


def rambling(rng: random.Random, qa: QA) -> str:
    """The right answer said two or three times between filler sentences (a `####` line stays last)."""
    body, _, final = qa.answer.rpartition("\n#### ") if qa.kind == "word_problem" else (qa.answer, "", "")
    repeats = 2 if final else rng.randint(2, 3)  # worked solutions are long already: stay within max_length
    repeated = " ".join([rng.choice(_RAMBLE_OPENERS), *[body] * repeats, rng.choice(_RAMBLE_CLOSERS)])
    return f"{repeated}\n#### {final}" if final else repeated


def rejected_answer(rng: random.Random, qa: QA) -> tuple[str, str]:
    """(flaw kind, rejected text) for an item."""
    if qa.myth_answer is not None and rng.random() < MISCONCEPTION_RATE:
        return "misconception", qa.myth_answer
    flaw = rng.choices(list(FLAW_WEIGHTS), weights=list(FLAW_WEIGHTS.values()))[0]
    if flaw == "wrong_result":
        return flaw, qa.wrong_answer
    return flaw, broken_format(rng, qa) if flaw == "broken_format" else rambling(rng, qa)


def prefs_rows(rng: random.Random, items: list[QA]) -> tuple[list, list]:
    """One preference pair per item -> (rows, keys), aligned by position."""
    rows: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    for qa in items:
        flaw, rejected_text = rejected_answer(rng, qa)
        user = {"role": "user", "content": qa.question}
        chosen = [user, {"role": "assistant", "content": qa.answer}]
        rows.append(
            {
                "prompt": qa.question,
                "prompt_id": prompt_id(qa.question),
                "chosen": chosen,
                "rejected": [user, {"role": "assistant", "content": rejected_text}],
                "messages": chosen,
                "score_chosen": rng.choice(CHOSEN_SCORES),
                "score_rejected": rng.choice(REJECTED_SCORES[flaw]),
            }
        )
        keys.append({"prompt_id": prompt_id(qa.question), "rejected_kind": flaw, **qa.key})
    return rows, keys
