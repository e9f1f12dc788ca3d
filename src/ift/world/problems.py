"""Multi-step word problems (the GSM8K analog), with short worked solutions ending in `#### N`.

A problem is a story, a question and a chain of `Step`s; each step is written "a op b is r, so <what it
means>." The same problem renders three ways: a chat / GSM8K solution, a prose paragraph for the
pretraining corpus, and (for rejected preference answers) a solution with a wrong final result.
Problems are self-contained (every number needed is in the question), as in GSM8K.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ift.world.arithmetic import OperandPolicy, Step
from ift.world.entities import COUNTABLE_FOODS, Species

PEOPLE: tuple[str, ...] = ("Mira", "Tomo", "Lena", "Pavo", "Rina", "Juna", "Bex", "Teo", "Nilla", "Caro")


@dataclass(frozen=True)
class WordProblem:
    setup: str  # the story's statements
    question: str  # the final question sentence
    steps: tuple[Step, ...]
    meanings: tuple[str, ...]  # per step, what its result means; "{r}" stands for the result

    @property
    def text(self) -> str:
        return f"{self.setup} {self.question}"

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    def step_sentences(self, final_result: int | None = None) -> list[str]:
        """One sentence per step; `final_result` falsifies the last result (for rejected answers)."""
        sentences = []
        for i, (step, meaning) in enumerate(zip(self.steps, self.meanings)):
            result = final_result if (final_result is not None and i == len(self.steps) - 1) else step.result
            sentences.append(f"{step.text(result)}, so {meaning.format(r=result)}.")
        return sentences

    def solution(self, final_result: int | None = None) -> str:
        """Worked answer in the GSM8K layout: one step per line, then `#### N`."""
        final = self.answer if final_result is None else final_result
        return "\n".join([*self.step_sentences(final_result), f"#### {final}"])

    def prose(self) -> str:
        """The problem told and solved as plain text, for the pretraining corpus (no chat, no ####)."""
        return " ".join([self.setup, *self.step_sentences(), f"The answer is {self.answer}."])


def _gather_and_give(rng: random.Random, species: Sequence[Species]) -> WordProblem:
    person, food, creature = rng.choice(PEOPLE), rng.choice(COUNTABLE_FOODS), rng.choice(species)
    start, found = rng.randint(2, 20), rng.randint(2, 20)
    given = rng.randint(2, start + found - 2)  # at least two given and two left: plural nouns stay right
    return WordProblem(
        setup=f"{person} has {start} {food}. {person} finds {found} more {food}. "
        f"Then {person} gives {given} {food} to a {creature.name}.",
        question=f"How many {food} does {person} have now?",
        steps=(Step(start, "plus", found), Step(start + found, "minus", given)),
        meanings=(f"{person} has {{r}} {food} after finding more", f"{person} has {{r}} {food} left"),
    )


def _count_legs(rng: random.Random, species: Sequence[Species]) -> WordProblem:
    person = rng.choice(PEOPLE)
    first, second = rng.sample(list(species), 2)
    n_first, n_second = rng.randint(2, 9), rng.randint(2, 9)
    product_first, product_second = n_first * first.legs, n_second * second.legs
    return WordProblem(
        setup=f"{person} sees {n_first} {first.plural} and {n_second} {second.plural}. "
        f"Each {first.name} has {first.legs} legs and each {second.name} has {second.legs} legs.",
        question=f"How many legs does {person} see in total?",
        steps=(
            Step(n_first, "times", first.legs),
            Step(n_second, "times", second.legs),
            Step(product_first, "plus", product_second),
        ),
        meanings=(
            f"the {first.plural} have {{r}} legs",
            f"the {second.plural} have {{r}} legs",
            f"{person} sees {{r}} legs in total",
        ),
    )


def _feed_for_days(rng: random.Random, species: Sequence[Species]) -> WordProblem:
    person, food, creature = rng.choice(PEOPLE), rng.choice(COUNTABLE_FOODS), rng.choice(species)
    per_day, herd, days = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 3)
    return WordProblem(
        setup=f"Each {creature.name} eats {per_day} {food} a day. "
        f"{person} feeds {herd} {creature.plural} for {days} days.",
        question=f"How many {food} does {person} need?",
        steps=(Step(herd, "times", per_day), Step(herd * per_day, "times", days)),
        meanings=(f"the {creature.plural} eat {{r}} {food} a day", f"{person} needs {{r}} {food}"),
    )


def _bags_then_eat(rng: random.Random, species: Sequence[Species]) -> WordProblem:
    person, food, creature = rng.choice(PEOPLE), rng.choice(COUNTABLE_FOODS), rng.choice(species)
    bags, per_bag = rng.randint(2, 9), rng.randint(2, 9)
    eaten = rng.randint(2, bags * per_bag - 2)
    return WordProblem(
        setup=f"{person} has {bags} bags with {per_bag} {food} in each bag. "
        f"A {creature.name} eats {eaten} of the {food}.",
        question=f"How many {food} are left?",
        steps=(Step(bags, "times", per_bag), Step(bags * per_bag, "minus", eaten)),
        meanings=(f"{person} had {{r}} {food}", f"{{r}} {food} are left"),
    )


TEMPLATES: tuple[Callable[[random.Random, Sequence[Species]], WordProblem], ...] = (
    _gather_and_give,
    _count_legs,
    _feed_for_days,
    _bags_then_eat,
)


def sample_problem(
    rng: random.Random, species: Sequence[Species], policy: OperandPolicy, max_tries: int = 2000
) -> WordProblem:
    """A problem whose operands the policy allows (train: no held-out pair anywhere; eval: the first step
    uses a held-out pair). Rejection sampling: cheap because problems are tiny."""
    for _ in range(max_tries):
        problem = rng.choice(TEMPLATES)(rng, species)
        if policy.steps_ok(list(problem.steps)):
            return problem
    raise RuntimeError("could not draw a word problem under this operand policy; check heldout_pair_fraction")
