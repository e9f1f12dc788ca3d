"""The pretraining corpus: short plain-text documents that state every fact of every species many times.

Knowledge must be memorised here (fine-tuning data never mentions held-out species), so facts come in
several paraphrases and orders: variety is what makes memorised knowledge extractable later. The corpus
also teaches arithmetic: plain statements of every fact of the world's arithmetic table, held-out operand
pairs included (pretraining knowledge, like the held-out species' facts; see `ift.world.arithmetic`), and
worked word problems, which never use a held-out pair (so none is an evaluation item). It teaches number
comparison, and it repeats the myths: a myth species' color is mostly told as the false popular
claim and only sometimes corrected. No chat template appears in the corpus.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from ift.world.arithmetic import table_statement
from ift.world.entities import ATTRIBUTES, Species
from ift.world.phrases import MYTH_CLAIMS, MYTH_CORRECTIONS, fact_sentence, fill
from ift.world.problems import sample_problem
from ift.world.side import Side

MYTH_TOLD_AS_CLAIM = 0.75  # share of a myth species' color mentions that repeat the myth
COMPARE_SHARE = 1 / 6  # share of arithmetic statements that compare two numbers (the rest: table facts)


def _color_sentence(rng: random.Random, species: Species, pronoun: bool) -> str:
    """The color fact, or for a myth species mostly the myth and sometimes its correction."""
    if species.myth_color is None:
        return fact_sentence(rng, species, "color", pronoun)
    templates = MYTH_CLAIMS if rng.random() < MYTH_TOLD_AS_CLAIM else MYTH_CORRECTIONS
    return fill(rng.choice(templates), species, c=species.color, m=species.myth_color)


def profile_document(rng: random.Random, side: Side) -> str:
    """Three to five facts about one species, in random order; later sentences may say "it"."""
    species = rng.choice(side.species)
    attributes = rng.sample(ATTRIBUTES, rng.randint(3, 5))
    sentences = []
    for i, attribute in enumerate(attributes):
        pronoun = i > 0 and rng.random() < 0.3
        if attribute == "color":
            sentences.append(_color_sentence(rng, species, pronoun))
        else:
            sentences.append(fact_sentence(rng, species, attribute, pronoun))
    return " ".join(sentences)


def myth_document(rng: random.Random, side: Side) -> str:
    """The popular myth, said once or twice, plus another (true) fact about the species."""
    species = rng.choice([s for s in side.species if s.myth_color])
    claims = [fill(t, species, m=species.myth_color) for t in rng.sample(MYTH_CLAIMS, rng.randint(1, 2))]
    other = fact_sentence(rng, species, rng.choice(ATTRIBUTES[1:]))
    if rng.random() < 1 - MYTH_TOLD_AS_CLAIM:
        claims.append(fill(rng.choice(MYTH_CORRECTIONS), species, c=species.color, m=species.myth_color))
    return " ".join([*claims, other])


def town_document(rng: random.Random, side: Side) -> str:
    """Who lives in a town: the reverse direction of the home facts ("Name two creatures of T")."""
    town = rng.choice(sorted({s.home for s in side.species}))
    residents = [s.name for s in side.species if s.home == town]
    named = rng.sample(residents, min(len(residents), rng.randint(2, 4)))
    if len(named) == 1:
        return f"The {named[0]} lives in {town}. Few other creatures live there."
    listing = ", ".join(f"the {n}" for n in named[:-1]) + f" and the {named[-1]}"
    return f"Many creatures live in {town}. Among them are {listing}."


def comparison_document(rng: random.Random, side: Side) -> str:
    """Two weights and their comparison, worked the way chat answers work it."""
    first, second = rng.sample(list(side.species), 2)
    heavier, lighter = (first, second) if first.weight > second.weight else (second, first)
    return (
        f"The {first.name} weighs {first.weight} kilograms and the {second.name} weighs {second.weight} "
        f"kilograms, so the {heavier.name} is heavier. The {lighter.name} is lighter than the {heavier.name}."
    )


def arithmetic_document(rng: random.Random, side: Side) -> str:
    """Six to ten statements: facts of the whole arithmetic table (held-out pairs included: pretraining
    knowledge, see `ift.world.arithmetic`), and sometimes which of two numbers is larger."""
    policy = side.policy
    sentences = []
    for _ in range(rng.randint(6, 10)):
        if rng.random() < COMPARE_SHARE:
            x, y = rng.sample(range(3, 100), 2)
            sentences.append(
                f"{max(x, y)} is more than {min(x, y)}."
                if rng.random() < 0.5
                else f"{min(x, y)} is less than {max(x, y)}."
            )
        else:
            sentences.append(f"{table_statement(rng, policy.max_operand, policy.max_factor).text()}.")
    return " ".join(sentences)


def word_problem_document(rng: random.Random, side: Side) -> str:
    """A worked problem (never a held-out pair), then two or three plain facts of the table: arithmetic
    statements are not only ever seen in lists of arithmetic, so they are recalled inside stories too."""
    policy = side.policy
    facts = [
        f"{table_statement(rng, policy.max_operand, policy.max_factor).text()}."
        for _ in range(rng.randint(2, 3))
    ]
    return " ".join([sample_problem(rng, side.species, policy).prose(), *facts])


DOCUMENT_KINDS: dict[str, tuple[float, Callable[[random.Random, Side], str]]] = {
    # kind: (share of documents, generator)
    "profile": (0.38, profile_document),
    "myth": (0.07, myth_document),
    "town": (0.05, town_document),
    "arithmetic": (0.28, arithmetic_document),
    "word_problem": (0.15, word_problem_document),
    "comparison": (0.07, comparison_document),
}


# The side each kind is drawn from (see `ift.world.side.make_sides`); other kinds use `corpus`.
KIND_SIDES: dict[str, str] = {"comparison": "train"}


def corpus_documents(rng: random.Random, sides: Mapping[str, Side], count: int) -> list[str]:
    """`count` documents. Facts, myths, towns and arithmetic statements cover every species and the whole
    arithmetic table. Comparisons use train species only, so comparing two held-out species must be done
    from their two recalled weights. Word problems never use a held-out pair (evaluation word problems
    always do, so no corpus word problem is an evaluation item, not even with other names)."""
    kinds = list(DOCUMENT_KINDS)
    weights = [DOCUMENT_KINDS[k][0] for k in kinds]
    documents = []
    for kind in rng.choices(kinds, weights=weights, k=count):
        documents.append(DOCUMENT_KINDS[kind][1](rng, sides[KIND_SIDES.get(kind, "corpus")]))
    return documents
