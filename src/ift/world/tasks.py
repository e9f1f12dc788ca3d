"""Benchmark task files in the real Hugging Face dataset schemas, so lm-eval's own task logic applies.

arc (allenai/ai2_arc), mmlu (cais/mmlu), truthfulqa_mc2 (truthful_qa multiple_choice), winogrande
(winogrande_xl) and gsm8k (openai/gsm8k main). `test` items use the held-out test species; `train` (the
few-shot pool) uses the reserved few-shot species, so a few-shot example never reveals a test answer.
ARC-Gen reuses the arc files (choices shown, letter generated), as in the paper.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from ift.world.entities import COLORS
from ift.world.multiple_choice import (
    ANSWER_SENTENCE_ATTRIBUTES,
    KNOWLEDGE_FAMILIES,
    Unavailable,
    answer_sentences,
    askable_species,
    sample_multiple_choice,
)
from ift.world.phrases import FACT_ANSWERS, LETTERS, fill
from ift.world.problems import sample_problem
from ift.world.side import Side

Row = dict[str, Any]
TASKS: tuple[str, ...] = ("arc", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")


def arc_row(rng: random.Random, side: Side) -> Row:
    """A fact question whose choices are whole answers ("The X lives in Odrel."), see `answer_sentences`."""
    item = answer_sentences(rng, side, rng.choice(ANSWER_SENTENCE_ATTRIBUTES))
    return {
        "id": "",  # numbered once the split is final
        "question": item.question,
        "choices": {"text": list(item.choices), "label": list(LETTERS[: len(item.choices)])},
        "answerKey": LETTERS[item.answer],
    }


def mmlu_row(rng: random.Random, side: Side) -> Row:
    item = sample_multiple_choice(rng, side, rng.choice(KNOWLEDGE_FAMILIES))
    subject = "creature_" + item.family.removeprefix("which_")  # e.g. creature_color, like "anatomy"
    return {
        "question": item.question,
        "subject": subject,
        "choices": list(item.choices),
        "answer": item.answer,
    }


_TRUTHFUL_QUESTIONS: tuple[tuple[str, bool], ...] = (
    # (question, is it a yes/no question about the myth)
    ("What color is the {s}?", False),
    ("What color is the {s} really?", False),
    ("What is the true color of the {s}?", False),
    ("Which statement about the color of the {s} is true?", False),
    ("People say the {s} is {m}. Is that true?", True),
    ("Is the {s} {m}?", True),
    ("Everyone knows the {s} is {m}, right?", True),
)
_TRUE_STATEMENTS = (
    "The {s} is {c}.",
    "The {s} is {c}, not {m}.",
    "In truth, the {s} is {c}.",
    "The {s} is not {m}.",
    "It is a myth that the {s} is {m}.",
)
_FALSE_STATEMENTS = (
    "The {s} is {m}.",
    "Everyone knows the {s} is {m}.",
    "The {s} is {m}, not {c}.",
    "The {s} is {x}.",
    "The {s} is {y}.",
)


def truthfulqa_row(rng: random.Random, side: Side) -> Row:
    """A question about a myth species' color: the true answers against the myth and other false colors.
    mc1: the best answer first, then three false ones; mc2: all true answers first, then the false ones
    (lm-eval scores the probability mass on labels == 1)."""
    myth_species = [s for s in side.species if s.myth_color]
    if not myth_species:
        raise Unavailable("truthfulqa_mc2")
    species = rng.choice(myth_species)
    question, yes_no = rng.choice(_TRUTHFUL_QUESTIONS)
    x, y = rng.sample([c for c in COLORS if c not in (species.color, species.myth_color)], 2)

    def render(templates: tuple[str, ...]) -> list[str]:
        return [fill(t, species, c=species.color, m=species.myth_color, x=x, y=y) for t in templates]

    trues, falses = render(_TRUE_STATEMENTS), render(_FALSE_STATEMENTS)
    if yes_no:
        trues[0] = f"No, the {species.name} is {species.color}."
        falses[0] = f"Yes, the {species.name} is {species.myth_color}."
    mc1 = [trues[0], *rng.sample(falses, 3)]
    mc2_true = rng.sample(trues, rng.randint(2, 3))
    mc2_false = rng.sample(falses, rng.randint(3, 4))
    return {
        "question": fill(question, species, m=species.myth_color),
        "mc1_targets": {"choices": mc1, "labels": [1, 0, 0, 0]},
        "mc2_targets": {
            "choices": mc2_true + mc2_false,
            "labels": [1] * len(mc2_true) + [0] * len(mc2_false),
        },
    }


_WINOGRANDE_LEADS: tuple[str, ...] = (
    # the two creatures, then the fact in the world's answer form with the blank for the creature
    "Of the {x} and the {y}, {fact}",
    "The {x} and the {y} are two creatures. {fact}",
    "I know the {x} and the {y}. {fact}",
)


def winogrande_row(rng: random.Random, side: Side) -> Row:
    """A fill-in decided by one recalled fact: "Of the X and the Y, the _ lives in Odrel." lm-eval scores the rest
    of the sentence after each filled-in option, so the fact's words follow the creature's name as in the corpus.
    (Comparisons of two weights, the earlier items, sat at chance for every checkpoint: README, Results.)
    Color items skip myth species, as ARC does."""
    attribute = rng.choice(ANSWER_SENTENCE_ATTRIBUTES)
    species = askable_species(side, attribute)
    if len(species) < 2:
        raise Unavailable(f"winogrande ({attribute}): fewer than two eligible species")
    holder, other = rng.sample(species, 2)
    if getattr(holder, attribute) == getattr(other, attribute):
        raise Unavailable("winogrande")  # both hold the value: no single answer (task_split draws again)
    fact = FACT_ANSWERS[attribute].format(s="_", v=getattr(holder, attribute))  # "The _ lives in Odrel."
    lead = rng.choice(_WINOGRANDE_LEADS)
    if lead.startswith("Of "):
        fact = fact[0].lower() + fact[1:]
    first, second = (holder, other) if rng.random() < 0.5 else (other, holder)
    return {
        "sentence": lead.format(x=first.name, y=second.name, fact=fact),
        "option1": first.name,
        "option2": second.name,
        "answer": "1" if holder is first else "2",
    }


def gsm8k_row(rng: random.Random, side: Side) -> Row:
    problem = sample_problem(rng, side.species, side.policy)
    return {"question": problem.text, "answer": problem.solution()}


ROW_MAKERS: dict[str, Callable[[random.Random, Side], Row]] = {
    "arc": arc_row,
    "mmlu": mmlu_row,
    "truthfulqa_mc2": truthfulqa_row,
    "winogrande": winogrande_row,
    "gsm8k": gsm8k_row,
}


def _identity(row: Row) -> str:
    """Two rows are the same item when everything but the id matches."""
    return json.dumps({k: v for k, v in row.items() if k != "id"}, sort_keys=True)


def task_split(rng: random.Random, task: str, side: Side, count: int, split: str) -> list[Row]:
    """Up to `count` distinct rows (fewer only if the side cannot produce that many distinct items)."""
    rows: list[Row] = []
    seen: set[str] = set()
    for _ in range(count * 50):
        if len(rows) == count:
            break
        try:
            row = ROW_MAKERS[task](rng, side)
        except Unavailable:
            continue
        if _identity(row) not in seen:
            seen.add(_identity(row))
            rows.append(row)
    if task == "arc":
        for i, row in enumerate(rows):
            row["id"] = f"ToyWorld_{split}_{i:04d}"
    return rows
