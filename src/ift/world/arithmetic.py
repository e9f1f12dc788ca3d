"""Arithmetic of the world: which operand pairs are held out, and one worked step ("7 plus 5 is 12").

Generalisation is measured on operand pairs the model has never seen combined: a seeded fraction of the
UNORDERED pairs {a, b} with a, b in 0..max_operand is held out. Training text may use every other pair;
evaluation items put a held-out pair in their (first) operation. Pairs with an operand above max_operand
are outside the held-out universe and free everywhere (they arise as intermediate results).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

# Every operation in every text is written "a op b" with these words, so a regex can find all operands.
OPERATORS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def pair_key(a: int, b: int) -> tuple[int, int]:
    return (min(a, b), max(a, b))


def heldout_pairs(seed: int, max_operand: int, fraction: float) -> frozenset[tuple[int, int]]:
    """The seeded held-out set of unordered pairs (a <= b), about `fraction` of all of them."""
    universe = [(a, b) for a in range(max_operand + 1) for b in range(a, max_operand + 1)]
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


@dataclass(frozen=True)
class OperandPolicy:
    """Which pairs a text may combine. Train side: never a held-out pair. Eval side: the primary (first)
    operation must use a held-out pair, later steps are free."""

    heldout: frozenset[tuple[int, int]]
    evaluation: bool
    max_operand: int
    max_factor: int  # "times" keeps one factor this small, so products stay learnable

    def is_heldout(self, a: int, b: int) -> bool:
        return pair_key(a, b) in self.heldout

    def primary_ok(self, a: int, b: int) -> bool:
        return self.is_heldout(a, b) if self.evaluation else not self.is_heldout(a, b)

    def secondary_ok(self, a: int, b: int) -> bool:
        return self.evaluation or not self.is_heldout(a, b)

    def steps_ok(self, steps: list[Step]) -> bool:
        return self.primary_ok(steps[0].a, steps[0].b) and all(self.secondary_ok(s.a, s.b) for s in steps[1:])

    def sample_step(self, rng: random.Random, op: str) -> Step:
        """A single operation whose operands the policy allows as primary (non-negative results)."""
        a, b = rng.choice(_primary_candidates(self, op))
        return Step(a, op, b)


@lru_cache(maxsize=64)
def _primary_candidates(policy: OperandPolicy, op: str) -> tuple[tuple[int, int], ...]:
    """Ordered (a, b) pairs usable as a primary `op`; cached because corpus generation draws thousands."""
    limit = policy.max_factor if op == "times" else policy.max_operand
    candidates = tuple(
        (a, b)
        for a in range(limit + 1)
        for b in range(limit + 1)
        if policy.primary_ok(a, b) and (op != "minus" or a >= b)
    )
    if not candidates:
        raise ValueError(f"no operand pair allowed for {op!r} under this policy")
    return candidates
