"""The AlpacaEval analog: instructions over held-out species, with a deliberately imperfect reference.

The reference generator answers correctly and concisely most of the time, but is sometimes wordy (correct
yet padded: a concise model beats it on concision) and sometimes slightly wrong (a correct model beats it
on correctness). So a good model can win clearly more than half of the comparisons, as against
AlpacaEval's GPT-4 reference. Judged by `ift.world.judge.judge` with the answer key written beside.
"""

from __future__ import annotations

import random
from typing import Any

from ift.world.qa import QA, Key, distinct_items
from ift.world.side import Side

ALPACA_KIND_WEIGHTS: dict[str, float] = {
    "describe": 0.25,
    "fact": 0.18,
    "arithmetic": 0.12,
    "word_problem": 0.15,
    "compare": 0.15,
    "list": 0.08,
    "claim": 0.07,
}
GENERATOR_NAME = "toy_reference"
DATASET_NAME = "toyworld"
_PADDING = (
    "I hope this helps you.",
    "Let me know if you want to learn more about the creatures of this world.",
)


def padded(qa: QA) -> str:
    """The correct answer with polite filler: still right and well-formed, but clearly longer."""
    if qa.kind == "word_problem":
        return f"Let us solve this step by step.\n{qa.answer}"
    return " ".join([qa.answer, *_PADDING])


def reference_output(rng: random.Random, qa: QA, wrong_rate: float, verbose_rate: float) -> str:
    draw = rng.random()
    if draw < wrong_rate:
        return qa.wrong_answer
    return padded(qa) if draw < wrong_rate + verbose_rate else qa.answer


def alpaca_eval_set(
    rng: random.Random, side: Side, count: int, wrong_rate: float, verbose_rate: float
) -> tuple[list[dict[str, Any]], dict[str, Key]]:
    """(rows in AlpacaEval's schema, instruction -> key). Instructions are distinct."""
    rows: list[dict[str, Any]] = []
    answer_key: dict[str, Key] = {}
    for qa in distinct_items(rng, side, count, ALPACA_KIND_WEIGHTS):
        answer_key[qa.question] = qa.key
        rows.append(
            {
                "instruction": qa.question,
                "output": reference_output(rng, qa, wrong_rate, verbose_rate),
                "generator": GENERATOR_NAME,
                "dataset": DATASET_NAME,
            }
        )
    return rows, answer_key
