"""Multi-step word problems (the GSM8K analog), with worked solutions ending in `#### N`.

A problem is a story, a question and a chain of `Step`s. Each step gets one line of the solution: first the
story's sentences that bring in the step's quantities, restated word for word, then "a op b is r, so <what
it means>." Restating puts every quantity right next to where it is used, as real GSM8K solutions do ("She
has 5 apples and buys 3 more, so 5 + 3 = 8"): copying a number then needs only a repeated phrase and a short
reach back, which a tiny model can learn, instead of remembering which number the question mentioned first.

The same problem renders three ways: a chat / GSM8K solution, a prose paragraph for the pretraining corpus
(story, question, the same worked lines, "The answer is N."), and (for rejected preference answers) a
solution with a wrong final result. Problems are self-contained (every number needed is in the question),
as in GSM8K, and every step is a fact of the world's arithmetic table (`ift.world.arithmetic`). Templates
range from two steps to three; most end with a product, so answers spread over 4..81 and a guessed number
is rarely right.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ift.world.arithmetic import OperandPolicy, Step
from ift.world.entities import COUNTABLE_FOODS, Species


class _NotHere(Exception):
    """A template that this side's species cannot fill (another template is drawn)."""


PEOPLE: tuple[str, ...] = ("Mira", "Tomo", "Lena", "Pavo", "Rina", "Juna", "Bex", "Teo", "Nilla", "Caro")


@dataclass(frozen=True)
class WordProblem:
    parts: tuple[str, ...]  # per step, the story's sentences its line restates ("" for none); in story order
    question: str  # the final question sentence
    steps: tuple[Step, ...]
    meanings: tuple[str, ...]  # per step, what its result means; "{r}" stands for the result

    @property
    def setup(self) -> str:
        """The story's statements: the steps' parts in order."""
        return " ".join(part for part in self.parts if part)

    @property
    def text(self) -> str:
        return f"{self.setup} {self.question}"

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    def step_lines(self, final_result: int | None = None) -> list[str]:
        """One line per step; `final_result` falsifies the last result (for rejected answers)."""
        lines = []
        for i, (part, step, meaning) in enumerate(zip(self.parts, self.steps, self.meanings)):
            result = final_result if (final_result is not None and i == len(self.steps) - 1) else step.result
            worked = f"{step.text(result)}, so {meaning.format(r=result)}."
            lines.append(f"{part} {worked}" if part else worked)
        return lines

    def solution(self, final_result: int | None = None) -> str:
        """Worked answer in the GSM8K layout: one step per line, then `#### N`."""
        final = self.answer if final_result is None else final_result
        return "\n".join([*self.step_lines(final_result), f"#### {final}"])

    def prose(self) -> str:
        """The problem told and solved as plain text, for the pretraining corpus (no chat, no ####)."""
        return " ".join([self.text, *self.step_lines(), f"The answer is {self.answer}."])


def _gather_and_give(rng: random.Random, species: Sequence[Species], limits: OperandPolicy) -> WordProblem:
    """plus, then minus: 'has a, finds b more, gives c away' (the easiest template: small answers)."""
    top = limits.max_operand
    person, food, creature = rng.choice(PEOPLE), rng.choice(COUNTABLE_FOODS), rng.choice(species)
    start, found = rng.randint(2, top), rng.randint(2, top)
    total = start + found
    given = rng.randint(max(2, total - top), min(top, total - 2))  # two or more left: plural nouns stay right
    return WordProblem(
        parts=(
            f"{person} has {start} {food}. {person} finds {found} more {food}.",
            f"Then {person} gives {given} {food} to a {creature.name}.",
        ),
        question=f"How many {food} does {person} have now?",
        steps=(Step(start, "plus", found), Step(total, "minus", given)),
        meanings=(f"{person} has {{r}} {food}", f"{person} has {{r}} {food} left"),
    )


def _share_baskets(rng: random.Random, species: Sequence[Species], limits: OperandPolicy) -> WordProblem:
    """minus, then times: 'has a baskets, gives c away, each holds d'."""
    top, factor = limits.max_operand, limits.max_factor
    person, food, creature = rng.choice(PEOPLE), rng.choice(COUNTABLE_FOODS), rng.choice(species)
    kept, given = rng.randint(2, min(top, factor)), rng.randint(2, top)
    baskets = kept + given
    per_basket = rng.randint(2, factor)
    return WordProblem(
        parts=(
            f"{person} has {baskets} baskets. {person} gives {given} baskets to a {creature.name}.",
            f"Each basket holds {per_basket} {food}.",
        ),
        question=f"How many {food} are in the baskets {person} kept?",
        steps=(Step(baskets, "minus", given), Step(kept, "times", per_basket)),
        meanings=(f"{person} kept {{r}} baskets", f"{person} kept {{r}} {food}"),
    )


def _feed_the_herd(rng: random.Random, species: Sequence[Species], limits: OperandPolicy) -> WordProblem:
    """plus, then times: 'feeds a creatures, b more come, each eats d'."""
    factor = limits.max_factor
    person, food, creature = rng.choice(PEOPLE), rng.choice(COUNTABLE_FOODS), rng.choice(species)
    first = rng.randint(2, factor - 2)
    more = rng.randint(2, factor - first)
    per_creature = rng.randint(2, factor)
    herd = first + more
    return WordProblem(
        parts=(
            f"{person} feeds {first} {creature.plural}. Then {more} more {creature.plural} come.",
            f"Each {creature.name} eats {per_creature} {food}.",
        ),
        question=f"How many {food} does {person} need?",
        steps=(Step(first, "plus", more), Step(herd, "times", per_creature)),
        meanings=(f"{person} feeds {{r}} {creature.plural}", f"{person} needs {{r}} {food}"),
    )


def _count_legs(rng: random.Random, species: Sequence[Species], limits: OperandPolicy) -> WordProblem:
    """plus, minus, then times: creatures come and go, then count their legs (three steps: the hardest)."""
    top, factor = limits.max_operand, limits.max_factor
    person = rng.choice(PEOPLE)
    walkers = [s for s in species if s.legs <= factor]
    if not walkers:
        raise _NotHere("no species with few enough legs on this side")
    creature = rng.choice(walkers)
    first, more = rng.randint(2, top), rng.randint(2, top)
    seen = first + more
    left = rng.randint(max(2, seen - top), min(top, seen - 2, factor))  # how many stay
    return WordProblem(
        parts=(
            f"{person} sees {first} {creature.plural}. Then {more} more {creature.plural} arrive.",
            f"Then {seen - left} {creature.plural} walk away.",
            f"Each {creature.name} has {creature.legs} legs.",
        ),
        question=f"How many legs does {person} see now?",
        steps=(
            Step(first, "plus", more),
            Step(seen, "minus", seen - left),
            Step(left, "times", creature.legs),
        ),
        meanings=(
            f"{person} sees {{r}} {creature.plural}",
            f"{{r}} {creature.plural} stay",
            f"{person} sees {{r}} legs now",
        ),
    )


TEMPLATES: tuple[Callable[[random.Random, Sequence[Species], OperandPolicy], WordProblem], ...] = (
    _gather_and_give,
    _share_baskets,
    _feed_the_herd,
    _count_legs,
)


def sample_problem(
    rng: random.Random, species: Sequence[Species], policy: OperandPolicy, max_tries: int = 2000
) -> WordProblem:
    """A problem whose operands the policy allows (train: no held-out pair anywhere; eval: the first step
    uses a held-out pair; both: every step a fact of the table). Rejection sampling: problems are tiny."""
    for _ in range(max_tries):
        try:
            problem = rng.choice(TEMPLATES)(rng, species, policy)
        except _NotHere:
            continue
        if policy.steps_ok(list(problem.steps)):
            return problem
    raise RuntimeError("could not draw a word problem under this operand policy; check heldout_pair_fraction")
