"""Which entities and operand pairs a piece of data may use.

Every generator takes a `Side` instead of the whole world, so that leaking held-out species or number
pairs into training data is impossible by construction rather than filtered afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from ift.world.arithmetic import OperandPolicy
from ift.world.entities import Species, World


@dataclass(frozen=True)
class Side:
    """A view of the world: the species a text may mention and the arithmetic it may contain."""

    world: World
    species: tuple[Species, ...]
    policy: OperandPolicy


def make_sides(
    world: World, heldout_pairs: frozenset[tuple[int, int]], max_operand: int, max_factor: int
) -> dict[str, Side]:
    """The five sides: `corpus` (pretraining: every species; its word problems use no held-out pair, while
    its plain arithmetic statements cover the whole table, see `ift.world.arithmetic`), `train` (fine-tuning
    data), `eval` (chat/prefs test, AlpacaEval), `task_test` and `task_fewshot` (benchmark test items and
    their few-shot pools, on disjoint held-out species)."""

    def policy(evaluation: bool) -> OperandPolicy:
        return OperandPolicy(heldout_pairs, evaluation, max_operand, max_factor)

    return {
        "corpus": Side(world, world.species, policy(False)),
        "train": Side(world, world.train, policy(False)),
        "eval": Side(world, world.heldout, policy(True)),
        "task_test": Side(world, world.test_species, policy(True)),
        "task_fewshot": Side(world, world.fewshot_species, policy(True)),
    }
