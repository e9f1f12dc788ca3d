"""Arithmetic of the world: its table of facts, which operand pairs are held out, and one worked step.

The world's arithmetic is a small closed TABLE of facts, small enough for a tiny model to memorise:
  plus:  a plus b       for a, b in 0..max_operand
  minus: (a + b) minus b for a, b in 0..max_operand (the inverse of every sum: results stay in 0..max_operand)
  times: a times b      for a, b in 0..max_factor
Every step of every text is one of these facts, written the single way "a op b is r".

Generalisation is measured on operand pairs never combined in FINE-TUNING data: a seeded fraction of the
UNORDERED pairs {a, b} with a, b in 2..max_operand is held out (0 and 1 only make identities). The rule (train and eval splits share
no number pair; the splits are fine-tuning train vs evaluation):
* fine-tuning data (chat / preference train) never uses a held-out pair in any step;
* evaluation items put a held-out pair in their first (primary) operation;
* the PRETRAINING corpus states the whole table as plain arithmetic statements, held-out pairs included
  (pretraining knowledge, like the facts of held-out species: a real model learned 7 times 8 before any
  instruction tuning), but its worked word problems never use a held-out pair, so no corpus word problem
  is an evaluation item.
Pairs with an operand above max_operand (a minuend such as 17 in "17 minus 9") are outside the held-out
universe and free everywhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

# Every operation in every text is written "a op b" with these words, so a regex can find all operands.
OPERATORS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def pair_key(a: int, b: int) -> tuple[int, int]:
    return (min(a, b), max(a, b))


MIN_HELDOUT_OPERAND = 2  # x plus 0, x times 1: identities, not facts worth holding out


def heldout_pairs(seed: int, max_operand: int, fraction: float) -> frozenset[tuple[int, int]]:
    """The seeded held-out set of unordered pairs (a <= b, both in 2..max_operand), about `fraction` of them."""
    low = MIN_HELDOUT_OPERAND
    universe = [(a, b) for a in range(low, max_operand + 1) for b in range(a, max_operand + 1)]
    rng = random.Random(f"{seed}:heldout-pairs")
    return frozenset(rng.sample(universe, round(len(universe) * fraction)))


@dataclass(frozen=True)
class Step:
    """One operation with its result, rendered the single way the whole world writes arithmetic."""

    a: int
    op: str
    b: int

    @property
    def result(self) -> int:
        return OPERATORS[self.op](self.a, self.b)

    def text(self, result: int | None = None) -> str:
        """`result` overrides the true value, to write a deliberately wrong step."""
        return f"{self.a} {self.op} {self.b} is {self.result if result is None else result}"


@lru_cache(maxsize=16)
def fact_table(max_operand: int, max_factor: int) -> dict[str, tuple[tuple[int, int], ...]]:
    """op -> every ordered (a, b) of the world's arithmetic table (see the module docstring)."""
    sums = tuple((a, b) for a in range(max_operand + 1) for b in range(max_operand + 1))
    return {
        "plus": sums,
        "minus": tuple((a + b, b) for a, b in sums),
        "times": tuple((a, b) for a in range(max_factor + 1) for b in range(max_factor + 1)),
    }


def in_table(step: Step, max_operand: int, max_factor: int) -> bool:
    """Is this step a fact of the table (so a model can know it from pretraining)?"""
    if step.op == "plus":
        return 0 <= step.a <= max_operand and 0 <= step.b <= max_operand
    if step.op == "minus":
        return 0 <= step.b <= max_operand and 0 <= step.result <= max_operand
    return 0 <= step.a <= max_factor and 0 <= step.b <= max_factor


@dataclass(frozen=True)
class OperandPolicy:
    """Which pairs a text may combine. Train side: never a held-out pair. Eval side: the primary (first)
    operation must use a held-out pair, later steps are free. Every step must be a fact of the table."""

    heldout: frozenset[tuple[int, int]]
    evaluation: bool
    max_operand: int
    max_factor: int  # "times" uses operands up to this, so products stay learnable

    def is_heldout(self, a: int, b: int) -> bool:
        return pair_key(a, b) in self.heldout

    def primary_ok(self, a: int, b: int) -> bool:
        return self.is_heldout(a, b) if self.evaluation else not self.is_heldout(a, b)

    def secondary_ok(self, a: int, b: int) -> bool:
        return self.evaluation or not self.is_heldout(a, b)

    def steps_ok(self, steps: list[Step]) -> bool:
        return (
            all(in_table(s, self.max_operand, self.max_factor) for s in steps)
            and self.primary_ok(steps[0].a, steps[0].b)
            and all(self.secondary_ok(s.a, s.b) for s in steps[1:])
        )

    def can_sample(self, op: str) -> bool:
        return bool(_primary_candidates(self, op))

    def sample_step(self, rng: random.Random, op: str) -> Step:
        """A single fact of the table whose operands the policy allows as primary."""
        candidates = _primary_candidates(self, op)
        if not candidates:
            raise ValueError(f"no operand pair allowed for {op!r} under this policy")
        a, b = rng.choice(candidates)
        return Step(a, op, b)


@lru_cache(maxsize=64)
def _primary_candidates(policy: OperandPolicy, op: str) -> tuple[tuple[int, int], ...]:
    """Ordered (a, b) pairs usable as a primary `op`; cached because corpus generation draws thousands."""
    return tuple(
        (a, b) for a, b in fact_table(policy.max_operand, policy.max_factor)[op] if policy.primary_ok(a, b)
    )


def table_statement(rng: random.Random, max_operand: int, max_factor: int) -> Step:
    """A uniformly drawn fact of the whole table, held-out pairs included (pretraining corpus only)."""
    table = fact_table(max_operand, max_factor)
    index = rng.randrange(sum(len(pairs) for pairs in table.values()))
    for op, pairs in table.items():
        if index < len(pairs):
            a, b = pairs[index]
            return Step(a, op, b)
        index -= len(pairs)
    raise AssertionError("unreachable")
