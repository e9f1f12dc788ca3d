"""The creatures of the miniature world, their facts, and who is held out.

Every fact a benchmark asks about lives here, so that the corpus, the chat data, the tasks and the judge all
agree. The world is a pure function of its seed: species names are built from syllables, attributes drawn
from small closed vocabularies (a tiny model must be able to learn them in minutes).

Species are split in two: TRAIN species may appear in fine-tuning data; HELD-OUT species appear only in the
pretraining corpus and in evaluation items. A few held-out species are further reserved for few-shot
examples of the benchmark tasks, so that a few-shot prompt never reveals a test answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COLORS: tuple[str, ...] = ("red", "blue", "green", "yellow", "purple", "white", "black", "orange")
# Invented on purpose (not seeded): the judge must recognise them without access to the world.
TOWNS: tuple[str, ...] = (
    "Kelmora",
    "Tavisk",
    "Brennow",
    "Ulvary",
    "Pashtin",
    "Odrel",
    "Mirrowen",
    "Saldrik",
    "Fennick",
    "Quarvel",
    "Dolmaze",
    "Yestrun",
)
FOODS: tuple[str, ...] = (
    "berries",
    "seeds",
    "fish",
    "grass",
    "moss",
    "beetles",
    "honey",
    "roots",
    "leaves",
    "mushrooms",
)
# Foods one can count one by one; word problems only use these ("7 honey" is not English).
COUNTABLE_FOODS: tuple[str, ...] = ("berries", "seeds", "beetles", "roots", "leaves", "mushrooms")
LEG_COUNTS: tuple[int, ...] = (2, 4, 6, 8)
WEIGHT_RANGE: tuple[int, int] = (3, 99)  # kilograms, inclusive; distinct per species so any two compare
ATTRIBUTES: tuple[str, ...] = ("color", "home", "food", "legs", "weight")
# Every value an attribute can take, as text (weight is open-ended, so it has no closed list here).
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": COLORS,
    "home": TOWNS,
    "food": FOODS,
    "legs": tuple(str(n) for n in LEG_COUNTS),
}

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "t", "v", "z", "br", "gr", "pl", "tr", "sk")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "m")
# Names must never collide with a word the judge reads as something else, nor with a short English word.
_RESERVED_WORDS = frozenset(
    {
        *COLORS,
        *FOODS,
        *(t.lower() for t in TOWNS),
        "more",
        "none",
        "gone",
        "bone",
        "lone",
        "tone",
        "tune",
        "rule",
        "mile",
        "tile",
        "pile",
        "mole",
        "pole",
        "role",
        "dune",
        "lime",
        "time",
        "name",
        "game",
        "male",
        "tale",
    }
)


@dataclass(frozen=True)
class Species:
    """One creature species and everything true about it (plus the myth told about it, if any)."""

    name: str
    color: str
    home: str
    food: str
    legs: int
    weight: int
    myth_color: str | None  # a false color the corpus repeats often; None for most species
    heldout: bool  # True: only pretraining and evaluation may mention it
    fewshot: bool  # True: a held-out species reserved for few-shot examples of the tasks

    @property
    def plural(self) -> str:
        return self.name + "s"

    def facts(self) -> dict[str, str | int]:
        """The ground truth the judge checks claims against."""
        return {attribute: getattr(self, attribute) for attribute in ATTRIBUTES}


@dataclass(frozen=True)
class World:
    """All species; the train / held-out views are derived so they can never disagree."""

    species: tuple[Species, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(s.name for s in self.species))

    @property
    def train(self) -> tuple[Species, ...]:
        return tuple(s for s in self.species if not s.heldout)

    @property
    def heldout(self) -> tuple[Species, ...]:
        return tuple(s for s in self.species if s.heldout)

    @property
    def test_species(self) -> tuple[Species, ...]:
        """Held-out species that benchmark TEST items may use (few-shot species excluded)."""
        return tuple(s for s in self.heldout if not s.fewshot)

    @property
    def fewshot_species(self) -> tuple[Species, ...]:
        return tuple(s for s in self.heldout if s.fewshot)

    def residents(self, town: str) -> tuple[Species, ...]:
        return tuple(s for s in self.species if s.home == town)


def _species_name(rng: random.Random) -> str:
    """Two or three consonant-vowel(-coda) syllables: pronounceable, short, easy for a small BPE."""
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.choice((2, 2, 3)))]
    return "".join(syllables) + rng.choice(_CODAS)


def species_names(rng: random.Random, count: int) -> list[str]:
    """Distinct names where no name is another's plural and none ends in 's' (plurals just add 's')."""
    names: list[str] = []
    while len(names) < count:
        name = _species_name(rng)
        clashes = name in names or name + "s" in names or any(n + "s" == name for n in names)
        if 4 <= len(name) <= 9 and not clashes and not name.endswith("s") and name not in _RESERVED_WORDS:
            names.append(name)
    return names


def _held_out_flags(rng: random.Random, count: int, fraction: float, myth: list[bool]) -> list[bool]:
    """Stratified split: myth and plain species are halved separately so both sides get myths."""
    heldout = [False] * count
    for stratum in (True, False):
        members = [i for i in range(count) if myth[i] == stratum]
        rng.shuffle(members)
        for i in members[: round(len(members) * fraction)]:
            heldout[i] = True
    return heldout


def _fewshot_flags(rng: random.Random, heldout: list[bool], myth: list[bool], count: int) -> list[bool]:
    """Reserve `count` held-out species for few-shot pools, one of them a myth species."""
    myth_heldout = [i for i, h in enumerate(heldout) if h and myth[i]]
    plain_heldout = [i for i, h in enumerate(heldout) if h and not myth[i]]
    chosen = rng.sample(myth_heldout, min(1, len(myth_heldout), count))
    chosen += rng.sample(plain_heldout, min(count - len(chosen), len(plain_heldout)))
    return [i in chosen for i in range(len(heldout))]


def build_world(
    seed: int,
    n_species: int = 48,
    heldout_fraction: float = 0.5,
    myth_fraction: float = 0.25,
    n_fewshot_species: int = 4,
) -> World:
    """Draw a world. Same arguments => same world (string-seeded streams are stable across processes)."""
    if n_species < 8 or n_species > WEIGHT_RANGE[1] - WEIGHT_RANGE[0] + 1:
        raise ValueError(f"n_species must be in 8..{WEIGHT_RANGE[1] - WEIGHT_RANGE[0] + 1}, got {n_species}")
    rng = random.Random(f"{seed}:world")
    names = species_names(rng, n_species)
    weights = rng.sample(range(WEIGHT_RANGE[0], WEIGHT_RANGE[1] + 1), n_species)
    myth = [False] * n_species
    for i in rng.sample(range(n_species), round(n_species * myth_fraction)):
        myth[i] = True
    heldout = _held_out_flags(rng, n_species, heldout_fraction, myth)
    fewshot = _fewshot_flags(rng, heldout, myth, n_fewshot_species)
    species = []
    for i, name in enumerate(names):
        color = rng.choice(COLORS)
        species.append(
            Species(
                name=name,
                color=color,
                home=rng.choice(TOWNS),
                food=rng.choice(FOODS),
                legs=rng.choice(LEG_COUNTS),
                weight=weights[i],
                myth_color=rng.choice([c for c in COLORS if c != color]) if myth[i] else None,
                heldout=heldout[i],
                fewshot=fewshot[i],
            )
        )
    return World(species=tuple(species))
