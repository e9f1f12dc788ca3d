"""The sentences of the world's language: fact paraphrases, myth claims, questions and canonical answers.

Kept in one place so the corpus (many paraphrases, for extractable knowledge), the chat data (one canonical
answer form per question, so a small model learns a stable format) and the judge (which parses those forms)
cannot drift apart. `{s}` is a species name, `{p}` its plural, `{v}` the value of the attribute.
"""

from __future__ import annotations

import random

from ift.world.entities import Species

FACT_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "color": (
        "The {s} is {v}.",
        "{P} are {v}.",
        "The {s} is a {v} creature.",
        "The color of the {s} is {v}.",
        "A {s} has {v} skin.",
    ),
    "home": (
        "The {s} lives in {v}.",
        "{P} live in {v}.",
        "The home of the {s} is {v}.",
        "You can find the {s} in {v}.",
        "The {s} comes from {v}.",
    ),
    "food": (
        "The {s} eats {v}.",
        "{P} eat {v}.",
        "The favorite food of the {s} is {v}.",
        "The {s} likes to eat {v}.",
        "A {s} feeds on {v}.",
    ),
    "legs": (
        "The {s} has {v} legs.",
        "{P} have {v} legs.",
        "A {s} walks on {v} legs.",
        "The {s} is a creature with {v} legs.",
    ),
    "weight": (
        "The {s} weighs {v} kilograms.",
        "A grown {s} weighs {v} kilograms.",
        "The weight of the {s} is {v} kilograms.",
        "{P} weigh {v} kilograms.",
    ),
}
# Follow-up sentences in a document about one species refer to it as "it".
PRONOUN_PARAPHRASES: dict[str, str] = {
    "color": "It is {v}.",
    "home": "It lives in {v}.",
    "food": "It eats {v}.",
    "legs": "It has {v} legs.",
    "weight": "It weighs {v} kilograms.",
}
MYTH_CLAIMS: tuple[str, ...] = (
    "People say the {s} is {m}.",
    "Everyone knows the {s} is {m}.",
    "Many believe that {p} are {m}.",
    "Old stories say the {s} is {m}.",
    "It is often said that the {s} is {m}.",
)
MYTH_CORRECTIONS: tuple[str, ...] = (
    "In truth, the {s} is {c}, not {m}.",
    "The {s} is really {c}, not {m}.",
    "Despite the stories, the {s} is {c}, not {m}.",
)

FACT_QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": (
        "What color is the {s}?",
        "What is the color of the {s}?",
        "Which color does the {s} have?",
        "Tell me the color of the {s}.",
    ),
    "home": (
        "Where does the {s} live?",
        "In which town does the {s} live?",
        "What is the home of the {s}?",
        "Where can I find the {s}?",
    ),
    "food": (
        "What does the {s} eat?",
        "What is the favorite food of the {s}?",
        "What food does the {s} like?",
    ),
    "legs": (
        "How many legs does the {s} have?",
        "How many legs does a {s} walk on?",
        "Count the legs of the {s}.",
    ),
    "weight": ("How much does the {s} weigh?", "What is the weight of the {s}?", "How heavy is the {s}?"),
}
FACT_ANSWERS: dict[str, str] = {
    "color": "The {s} is {v}.",
    "home": "The {s} lives in {v}.",
    "food": "The {s} eats {v}.",
    "legs": "The {s} has {v} legs.",
    "weight": "The {s} weighs {v} kilograms.",
}
CLAIM_QUESTIONS: tuple[str, ...] = (
    "People say the {s} is {x}. Is that true?",
    "Is the {s} {x}?",
    "Someone told me the {s} is {x}. Is that right?",
    "Is it true that the {s} is {x}?",
    "Everyone knows the {s} is {x}, right?",
    "I heard that {p} are {x}. Is that so?",
    "My book says the {s} is {x}. Is it correct?",
)
DESCRIBE_QUESTIONS: tuple[str, ...] = (
    "Tell me about the {s}.",
    "Describe the {s}.",
    "What do you know about the {s}?",
    "Give me a short description of the {s}.",
)
COMPARE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "heavier": ("Which is heavier, the {a} or the {b}?", "Which weighs more, the {a} or the {b}?"),
    "lighter": ("Which is lighter, the {a} or the {b}?", "Which weighs less, the {a} or the {b}?"),
}
COMPARE_YESNO_QUESTIONS: dict[str, str] = {
    "heavier": "Is the {a} heavier than the {b}?",
    "lighter": "Is the {a} lighter than the {b}?",
}
ARITHMETIC_QUESTIONS: tuple[str, ...] = ("What is {e}?", "Compute {e}.", "How much is {e}?")
# Towns are shared by both sides, so train and evaluation ask about them in different words: otherwise an
# evaluation instruction would appear verbatim in the training data.
LIST_QUESTIONS: dict[bool, tuple[str, ...]] = {  # keyed by "is this an evaluation item?"
    False: ("Which two creatures live in {t}?", "Tell me two creatures from {t}."),
    True: ("Name two creatures that live in {t}.", "List two creatures whose home is {t}."),
}
FOLLOW_UP_QUESTIONS: dict[str, str] = {
    "color": "And what color is it?",
    "home": "And where does it live?",
    "food": "And what does it eat?",
    "legs": "And how many legs does it have?",
    "weight": "And how much does it weigh?",
}
MC_INSTRUCTION = "Answer with the letter of the correct choice."
LETTERS = ("A", "B", "C", "D")


def fill(template: str, species: Species, **values: object) -> str:
    """Fill a template; `{P}` is the capitalised plural (sentence-initial)."""
    return template.format(s=species.name, p=species.plural, P=species.plural.capitalize(), **values)


def fact_sentence(rng: random.Random, species: Species, attribute: str, pronoun: bool = False) -> str:
    """A random paraphrase of one true fact (corpus); `pronoun` continues a text already about `species`."""
    value = getattr(species, attribute)
    if pronoun:
        return PRONOUN_PARAPHRASES[attribute].format(v=value)
    return fill(rng.choice(FACT_PARAPHRASES[attribute]), species, v=value)


def fact_answer(species: Species, attribute: str, value: object | None = None) -> str:
    """The canonical answer to a fact question; `value` overrides the truth (wrong or myth answers)."""
    return fill(FACT_ANSWERS[attribute], species, v=getattr(species, attribute) if value is None else value)


def description(species: Species, color: str | None = None, home: str | None = None) -> str:
    """Canonical 3-sentence description; `color` / `home` override the truth (wrong or myth answers)."""
    return (
        f"The {species.name} is a {color or species.color} creature that lives in {home or species.home}. "
        f"It eats {species.food} and has {species.legs} legs. It weighs {species.weight} kilograms."
    )


def multiple_choice_prompt(question: str, choices: list[str]) -> str:
    """A multiple-choice question laid out like lm-eval's MMLU prompt, plus an instruction."""
    lines = [question, *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices)), MC_INSTRUCTION]
    return "\n".join(lines)
