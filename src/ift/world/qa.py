"""Question / answer items of every kind, with ground-truth keys, shared by chat, preferences and AlpacaEval.

Each generator returns a `QA`: the user question, the canonical correct answer, a plausible wrong answer
(for rejected preference answers and the imperfect AlpacaEval reference), optionally the answer a believer
in a myth would give, and the key the judge (`ift.world.judge`) checks any answer against.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ift.world.entities import COLORS, FOODS, LEG_COUNTS, TOWNS, Species
from ift.world.multiple_choice import (
    KNOWLEDGE_FAMILIES,
    REASONING_FAMILIES,
    Unavailable,
    sample_multiple_choice,
)
from ift.world.phrases import (
    ARITHMETIC_QUESTIONS,
    CLAIM_QUESTIONS,
    COMPARE_QUESTIONS,
    COMPARE_YESNO_QUESTIONS,
    DESCRIBE_QUESTIONS,
    FACT_QUESTIONS,
    LETTERS,
    LIST_QUESTIONS,
    description,
    fact_answer,
    fill,
    multiple_choice_prompt,
)
from ift.world.problems import sample_problem
from ift.world.side import Side

Key = dict[str, Any]


@dataclass(frozen=True)
class QA:
    """One question with a right and a wrong answer; `key` is all the judge needs to grade any answer."""

    kind: str
    question: str
    answer: str
    wrong_answer: str
    key: Key
    myth_answer: str | None = None  # what the corpus's myth would make a model say; None if no myth applies
    subject: Species | None = None  # the species a follow-up question ("And what does it eat?") refers to


def entity_key(kind: str, side: Side, about: list[Species], **truth: Any) -> Key:
    """Key of an answer about species: their full fact sheets (to catch any contradicting claim) and all
    species names (so the judge can tell which creature each claim is about)."""
    return {
        "kind": kind,
        **truth,
        "facts": {s.name: s.facts() for s in about},
        "names": list(side.world.names),
    }


def _other(rng: random.Random, values: tuple[Any, ...], truth: Any) -> Any:
    return rng.choice([v for v in values if v != truth])


def _wrong_value(rng: random.Random, species: Species, attribute: str) -> Any:
    """A plausible wrong value: another color/town/food/leg count, or a nearby weight."""
    if attribute == "weight":
        delta = rng.choice((3, 7, 11))
        return (
            species.weight - delta
            if species.weight > delta and rng.random() < 0.5
            else species.weight + delta
        )
    vocabulary = {"color": COLORS, "home": TOWNS, "food": FOODS, "legs": LEG_COUNTS}[attribute]
    return _other(rng, vocabulary, getattr(species, attribute))


def fact_qa(rng: random.Random, side: Side) -> QA:
    species = rng.choice(side.species)
    attribute = rng.choice(tuple(FACT_QUESTIONS))
    myth = (
        fact_answer(species, "color", species.myth_color)
        if attribute == "color" and species.myth_color
        else None
    )
    return QA(
        kind="fact",
        question=fill(rng.choice(FACT_QUESTIONS[attribute]), species),
        answer=fact_answer(species, attribute),
        wrong_answer=fact_answer(species, attribute, _wrong_value(rng, species, attribute)),
        key=entity_key(
            "fact",
            side,
            [species],
            species=species.name,
            attribute=attribute,
            truth=getattr(species, attribute),
        ),
        myth_answer=myth,
        subject=species,
    )


def claim_qa(rng: random.Random, side: Side) -> QA:
    """'Is the X red?' / 'People say the X is red. Is that true?'. Myth species are mostly asked about their
    myth, so the chat data teaches correcting it; others about a true or a random false color."""
    species = rng.choice(side.species)
    if species.myth_color and rng.random() < 0.7:
        claimed = species.myth_color
    else:
        claimed = species.color if rng.random() < 0.5 else _other(rng, COLORS, species.color)
    true_claim = claimed == species.color
    if true_claim:
        answer = f"Yes. The {species.name} is {species.color}."
        wrong = f"No. The {species.name} is {_other(rng, COLORS, species.color)}, not {species.color}."
    else:
        answer = f"No. The {species.name} is {species.color}, not {claimed}."
        wrong = f"Yes. The {species.name} is {claimed}."
    believer = f"Yes. The {species.name} is {species.myth_color}." if claimed == species.myth_color else None
    return QA(
        kind="claim",
        question=fill(rng.choice(CLAIM_QUESTIONS), species, x=claimed),
        answer=answer,
        wrong_answer=wrong,
        key=entity_key(
            "claim",
            side,
            [species],
            species=species.name,
            attribute="color",
            truth=species.color,
            claimed=claimed,
            expected="yes" if true_claim else "no",
        ),
        myth_answer=believer,
        subject=species,
    )


def compare_qa(rng: random.Random, side: Side) -> QA:
    """Which of two species is heavier/lighter: two recalled weights, then a comparison (worked first)."""
    first, second = rng.sample(list(side.species), 2)
    relation = rng.choice(("heavier", "lighter"))
    heavier, lighter = (first, second) if first.weight > second.weight else (second, first)
    winner, loser = (heavier, lighter) if relation == "heavier" else (lighter, heavier)
    reasoning = (
        f"The {first.name} weighs {first.weight} kilograms and the {second.name} weighs "
        f"{second.weight} kilograms, so the {{w}} is {relation}."
    )
    yesno = rng.random() < 0.3
    expected = None
    if yesno:
        question = COMPARE_YESNO_QUESTIONS[relation].format(a=first.name, b=second.name)
        expected = "yes" if first is winner else "no"
        flipped = "no" if expected == "yes" else "yes"
        answer = f"{expected.capitalize()}. " + reasoning.format(w=winner.name)
        wrong = f"{flipped.capitalize()}. " + reasoning.format(w=loser.name)
    else:
        question = rng.choice(COMPARE_QUESTIONS[relation]).format(a=first.name, b=second.name)
        answer, wrong = reasoning.format(w=winner.name), reasoning.format(w=loser.name)
    return QA(
        kind="compare",
        question=question,
        answer=answer,
        wrong_answer=wrong,
        key=entity_key(
            "compare",
            side,
            [first, second],
            relation=relation,
            truth=winner.name,
            heavier=heavier.name,
            lighter=lighter.name,
            expected=expected,
        ),
    )  # no follow-up subject: "it" would be ambiguous after two creatures


def arithmetic_qa(rng: random.Random, side: Side) -> QA:
    ops = [op for op in ("plus", "plus", "minus", "minus", "times") if side.policy.can_sample(op)]
    if not ops:
        raise Unavailable("arithmetic")
    step = side.policy.sample_step(rng, rng.choice(ops))
    wrong = max(0, step.result + rng.choice((-2, -1, 1, 2, 10)))
    wrong = wrong if wrong != step.result else step.result + 1
    expression = f"{step.a} {step.op} {step.b}"
    return QA(
        kind="arithmetic",
        question=rng.choice(ARITHMETIC_QUESTIONS).format(e=expression),
        answer=f"{step.text()}.",
        wrong_answer=f"{step.text(wrong)}.",
        key={"kind": "arithmetic", "a": step.a, "op": step.op, "b": step.b, "truth": step.result},
    )


def word_problem_qa(rng: random.Random, side: Side) -> QA:
    problem = sample_problem(rng, side.species, side.policy)
    wrong = problem.answer + rng.choice((-3, -2, -1, 1, 2, 5))
    return QA(
        kind="word_problem",
        question=problem.text,
        answer=problem.solution(),
        wrong_answer=problem.solution(final_result=wrong),
        key={"kind": "word_problem", "truth": problem.answer},
    )


def describe_qa(rng: random.Random, side: Side) -> QA:
    species = rng.choice(side.species)
    return QA(
        kind="describe",
        question=fill(rng.choice(DESCRIBE_QUESTIONS), species),
        answer=description(species),
        wrong_answer=description(species, home=_other(rng, TOWNS, species.home)),
        key=entity_key("describe", side, [species], species=species.name),
        myth_answer=description(species, color=species.myth_color) if species.myth_color else None,
        subject=species,
    )


def list_qa(rng: random.Random, side: Side) -> QA:
    """'Name two creatures that live in T': any two true residents are right (the key lists them all)."""
    towns = sorted({s.home for s in side.species if sum(o.home == s.home for o in side.species) >= 2})
    if not towns:
        raise Unavailable("list")
    town = rng.choice(towns)
    first, second = rng.sample([s for s in side.species if s.home == town], 2)
    outsider = rng.choice([s for s in side.species if s.home != town])
    residents = [s.name for s in side.world.residents(town)]
    return QA(
        kind="list",
        question=rng.choice(LIST_QUESTIONS[side.policy.evaluation]).format(t=town),
        answer=f"The {first.name} and the {second.name} live in {town}.",
        wrong_answer=f"The {first.name} and the {outsider.name} live in {town}.",
        key={"kind": "list", "town": town, "truth": residents, "count": 2, "names": list(side.world.names)},
    )


def multiple_choice_qa(rng: random.Random, side: Side) -> QA:
    """A benchmark-style question answered 'B. green': teaches the answer format the ARC-Gen analog uses."""
    item = sample_multiple_choice(rng, side, rng.choice(KNOWLEDGE_FAMILIES + REASONING_FAMILIES))
    wrong_index = rng.choice([i for i in range(len(item.choices)) if i != item.answer])
    return QA(
        kind="multiple_choice",
        question=multiple_choice_prompt(item.question, list(item.choices)),
        answer=f"{LETTERS[item.answer]}. {item.choices[item.answer]}",
        wrong_answer=f"{LETTERS[wrong_index]}. {item.choices[wrong_index]}",
        key={"kind": "multiple_choice", "truth": LETTERS[item.answer], "text": item.choices[item.answer]},
    )


GENERATORS: dict[str, Callable[[random.Random, Side], QA]] = {
    "fact": fact_qa,
    "claim": claim_qa,
    "compare": compare_qa,
    "arithmetic": arithmetic_qa,
    "word_problem": word_problem_qa,
    "describe": describe_qa,
    "list": list_qa,
    "multiple_choice": multiple_choice_qa,
}


# The mix of kinds drawn for chat and preference data. Kinds with few distinct prompts (facts, descriptions,
# lists: a handful per species) saturate, so the realised mix leans towards the open-ended kinds. Arithmetic
# and word problems are kept few (about 3% and 10% of rows): enough to teach the answer format, while
# fine-tuning on many train-pair facts overwrote the held-out facts the base model had learned.
ITEM_KIND_WEIGHTS: dict[str, float] = {
    "fact": 0.24,
    "claim": 0.16,
    "compare": 0.14,
    "arithmetic": 0.02,
    "word_problem": 0.05,
    "describe": 0.12,
    "list": 0.05,
    "multiple_choice": 0.22,
}


def sample_qa(rng: random.Random, side: Side, weights: dict[str, float]) -> QA:
    """Draw a kind by weight, then an item of that kind (kinds the side cannot support are redrawn)."""
    kinds = sorted(weights)
    for _ in range(100):
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        try:
            return GENERATORS[kind](rng, side)
        except Unavailable:
            continue
    raise RuntimeError(f"no kind in {kinds} can be generated on this side")


def distinct_items(rng: random.Random, side: Side, count: int, weights: dict[str, float]) -> list[QA]:
    """`count` items with pairwise distinct questions (a prompt appears once, as in the real datasets)."""
    items: dict[str, QA] = {}
    for _ in range(count * 50):
        if len(items) == count:
            break
        qa = sample_qa(rng, side, weights)
        items.setdefault(qa.question, qa)
    if len(items) == count:
        return list(items.values())
    raise RuntimeError(f"only {len(items)} distinct questions of {count} requested on this side")
