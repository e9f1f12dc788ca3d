"""Four-way multiple-choice questions over world facts.

The knowledge and reasoning families feed the chat data's lettered multiple-choice rows (train species) and the
MMLU analog (knowledge families, held-out species), so the lettered format learned in chat is the one MMLU tests.
The ARC analog asks `answer_sentences`: a fact question whose choices are whole answers, as fine-tuned models
answer (see its docstring for why). Every question has exactly one correct choice, checked when it is drawn.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from ift.world.entities import ATTRIBUTE_VALUES, LEG_COUNTS, Species
from ift.world.phrases import FACT_QUESTIONS, fact_answer, fill
from ift.world.side import Side

_WHICH_HAS: dict[str, str] = {
    "color": "Which of these creatures is {v}?",
    "home": "Which of these creatures lives in {v}?",
    "food": "Which of these creatures eats {v}?",
    "legs": "Which of these creatures has {v} legs?",
}
_EXTREMES: dict[str, tuple[str, Callable[[Species], int], int]] = {
    # family: (question, the quantity compared, +1 for the largest / -1 for the smallest)
    "heaviest": ("Which of these creatures is the heaviest?", lambda s: s.weight, 1),
    "lightest": ("Which of these creatures weighs the least?", lambda s: s.weight, -1),
    "most_legs": ("Which of these creatures has the most legs?", lambda s: s.legs, 1),
    "fewest_legs": ("Which of these creatures has the fewest legs?", lambda s: s.legs, -1),
}


class Unavailable(Exception):
    """This side of the world has too few species (or pairs) for the requested question type."""


@dataclass(frozen=True)
class MultipleChoice:
    family: str  # the question type, e.g. "color" or "heaviest"; MMLU's `subject` derives from it
    question: str
    choices: tuple[str, ...]
    answer: int  # index of the correct choice
    species: tuple[str, ...]  # the species whose facts decide the answer


def _shuffled(rng: random.Random, correct: str, distractors: list[str]) -> tuple[tuple[str, ...], int]:
    choices = [correct, *distractors]
    rng.shuffle(choices)
    return tuple(choices), choices.index(correct)


def attribute_of(rng: random.Random, side: Side, attribute: str) -> MultipleChoice:
    """'What color is the X?' with four values of that attribute."""
    species = rng.choice(side.species)
    truth = str(getattr(species, attribute))
    question = fill(rng.choice([q for q in FACT_QUESTIONS[attribute] if q.endswith("?")]), species)
    distractors = rng.sample([v for v in ATTRIBUTE_VALUES[attribute] if v != truth], 3)
    choices, answer = _shuffled(rng, truth, distractors)
    return MultipleChoice(attribute, question, choices, answer, (species.name,))


def askable_species(side: Side, attribute: str) -> tuple[Species, ...]:
    """The species an ARC or WinoGrande item may ask `attribute` of: all of them, except that color items skip myth
    species (their corpus color is mostly the myth, which TruthfulQA tests)."""
    return tuple(s for s in side.species if not (attribute == "color" and s.myth_color))


def answer_sentences(rng: random.Random, side: Side, attribute: str) -> MultipleChoice:
    """'What color is the X?' with four whole answers ("The X is red.", "The X is blue.", ...).

    The ARC analog's items. lm-eval's ARC scores each choice text as the answer's continuation, with no choices
    shown; a fine-tuned model answers in sentences, so a bare value ("red") is a continuation it never produces,
    and every checkpoint scored at chance on bare values and on the comparison families (README, Results).
    Color questions skip myth species (`askable_species`)."""
    side = replace(side, species=askable_species(side, attribute))
    if not side.species:
        raise Unavailable(f"answer_sentences({attribute}): every species of this side is a myth species")
    item = attribute_of(rng, side, attribute)
    species = next(s for s in side.species if s.name == item.species[0])
    return replace(item, choices=tuple(fact_answer(species, attribute, value) for value in item.choices))


def creature_with(rng: random.Random, side: Side, attribute: str) -> MultipleChoice:
    """'Which of these creatures eats fish?' with one species that does and three that do not."""
    for _ in range(100):
        species = rng.choice(side.species)
        value = getattr(species, attribute)
        others = [s for s in side.species if getattr(s, attribute) != value]
        if len(others) >= 3:
            break
    else:
        raise Unavailable(f"which_{attribute}")
    distractors = rng.sample(others, 3)
    choices, answer = _shuffled(rng, species.name, [s.name for s in distractors])
    question = _WHICH_HAS[attribute].format(v=value)
    return MultipleChoice(f"which_{attribute}", question, choices, answer, (species.name,))


def extreme_of_four(rng: random.Random, side: Side, family: str) -> MultipleChoice:
    """'Which of these creatures is the heaviest?': needs four facts and a comparison; unique answer."""
    question, quantity, sign = _EXTREMES[family]
    for _ in range(100):
        group = rng.sample(list(side.species), 4)
        best = max(group, key=lambda s: sign * quantity(s))
        if sum(quantity(s) == quantity(best) for s in group) == 1:
            break
    else:
        raise Unavailable(family)
    choices, answer = _shuffled(rng, best.name, [s.name for s in group if s is not best])
    return MultipleChoice(family, question, choices, answer, tuple(s.name for s in group))


def legs_in_total(rng: random.Random, side: Side) -> MultipleChoice:
    """'How many legs do 7 Xs have in total?': recall legs, then multiply (operands follow the side's
    policy: a held-out pair on the eval side). Choices are the products for every possible leg count."""
    options = [(s, n) for s in side.species for n in range(2, 10) if side.policy.primary_ok(n, s.legs)]
    if not options:
        raise Unavailable("legs_in_total")
    species, count = rng.choice(options)
    truth = str(count * species.legs)
    distractors = [str(count * legs) for legs in LEG_COUNTS if legs != species.legs]
    choices, answer = _shuffled(rng, truth, distractors)
    question = f"How many legs do {count} {species.plural} have in total?"
    return MultipleChoice("legs_in_total", question, choices, answer, (species.name,))


KNOWLEDGE_FAMILIES: tuple[str, ...] = (
    "color",
    "home",
    "food",
    "legs",
    "which_color",
    "which_home",
    "which_food",
)
REASONING_FAMILIES: tuple[str, ...] = ("heaviest", "lightest", "most_legs", "fewest_legs", "legs_in_total")
ANSWER_SENTENCE_ATTRIBUTES: tuple[str, ...] = ("color", "home", "food", "legs")  # ARC and WinoGrande items ask these


def sample_multiple_choice(rng: random.Random, side: Side, family: str) -> MultipleChoice:
    """Dispatch on the family name (knowledge or reasoning)."""
    if family in _EXTREMES:
        return extreme_of_four(rng, side, family)
    if family == "legs_in_total":
        return legs_in_total(rng, side)
    if family.startswith("which_"):
        return creature_with(rng, side, family.removeprefix("which_"))
    return attribute_of(rng, side, family)
