"""The judge of the AlpacaEval analog, and answer checking against the world's ground truth.

`check_answer(key, text)` reads an answer the way the world writes them: who a sentence is about (species
names; "it" keeps the last one), which colors, towns, foods, leg counts and weights it claims ("not red"
is a denial, not a claim), comparisons ("the X is heavier"), yes/no openings, numbers and `#### N` lines.
An answer is correct when it states the asked truth and contradicts no fact of the species involved.

`judge(key, output_1, output_2)` follows alpaca-eval's convention (1.0: output_1 better, 2.0: output_2
better, 1.5: tie) and is lexicographic: correctness, then format, then concision. It is symmetric by
construction: both outputs go through the same `check_answer`.
Pure Python, no network: it runs on hundreds of pairs in well under a second.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from ift.world.entities import COLORS, FOODS, TOWNS

GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-eval gsm8k "strict-match" filter, verbatim
_FINAL_LINE = re.compile(r"#### -?\d+")
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+")
_NEGATIONS = frozenset({"not", "never", "isn't", "isnt", "aren't", "no"})
_COLORS, _FOODS, _TOWNS = frozenset(COLORS), frozenset(FOODS), frozenset(t.lower() for t in TOWNS)
_COMPARISON = re.compile(
    r"\b([a-z]+) (?:is|are) (?:the )?(heavier|lighter)\b|\b([a-z]+) weighs? (more|less)\b"
)
CONCISION_RATIO = 0.8  # the shorter answer wins only with fewer than 80% of the longer one's words
KINDS = frozenset(
    {"arithmetic", "word_problem", "multiple_choice", "list", "fact", "claim", "compare", "describe"}
)


def gsm8k_extract(text: str) -> str | None:
    """The number after the first `#### `, exactly as lm-eval's gsm8k strict-match captures it (raw: may
    keep commas or a trailing period, which lm-eval ignores when comparing; see `gsm8k_exact_match`)."""
    match = GSM8K_STRICT.search(text)
    return match.group(1) if match else None


def _normalize_number(raw: str) -> str:
    """lm-eval gsm8k's regexes_to_ignore: commas, dollar signs, a trailing period."""
    return re.sub(r"\.$", "", raw.replace(",", "").replace("$", ""))


def gsm8k_exact_match(text: str, truth: int | str) -> bool:
    """The GSM8K analog's exact match: the strict-match number equals the truth."""
    extracted = gsm8k_extract(text)
    return extracted is not None and _normalize_number(extracted) == str(truth)


def _species_of(token: str, names: frozenset[str]) -> str | None:
    if token in names:
        return token
    if token.endswith("s") and token[:-1] in names:
        return token[:-1]
    return None


def _value_of(tokens: list[str], i: int) -> tuple[str, Any] | None:
    """The (attribute, value) a token states, if any."""
    token, following = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
    if token in _COLORS:
        return "color", token
    if token in _TOWNS:
        return "home", token
    if token in _FOODS:
        return "food", token
    if token.isdigit() and following in ("legs", "leg"):
        return "legs", int(token)
    if token.isdigit() and following in ("kilograms", "kilogram", "kg"):
        return "weight", int(token)
    return None


def attribute_claims(
    text: str, names: frozenset[str], default_subject: str | None
) -> dict[str, dict[str, set]]:
    """species -> attribute -> values the text asserts of it. A claim belongs to the species named last
    before it ("it" keeps that species); a value right after a negation is denied, not claimed."""
    tokens = _TOKEN.findall(text.lower())
    claims: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    subject = default_subject
    for i, token in enumerate(tokens):
        subject = _species_of(token, names) or subject
        value = _value_of(tokens, i)
        if value and subject and not _NEGATIONS.intersection(tokens[max(0, i - 2) : i]):
            claims[subject][value[0]].add(value[1])
    return claims


def _lowered(value: Any) -> Any:
    """Claims are read from lower-cased text; town truths are capitalised."""
    return value.lower() if isinstance(value, str) else value


def _contradicts(claims: dict[str, dict[str, set]], facts: Mapping[str, Mapping[str, Any]]) -> bool:
    """Does any claim about a species in `facts` differ from its truth?"""
    return any(
        values - {_lowered(facts[name][attribute])}
        for name in facts
        for attribute, values in claims.get(name, {}).items()
    )


def _opens_with(text: str) -> str | None:
    first = _TOKEN.findall(text.lower()[:12])
    return first[0] if first and first[0] in ("yes", "no") else None


def _comparison_ok(text: str, key: Mapping[str, Any], names: frozenset[str]) -> bool | None:
    """True if every 'X is heavier/lighter' claim matches the truth (None if the text makes none)."""
    verdicts = []
    for match in _COMPARISON.finditer(text.lower()):
        word, relation = (
            (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        )
        species = _species_of(word, names)
        relation = {"more": "heavier", "less": "lighter"}.get(relation, relation)
        verdicts.append(species == key[relation])
    return all(verdicts) if verdicts else None


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"-?\d+", text.replace(",", ""))]


def _is_correct(key: Mapping[str, Any], text: str) -> bool:
    kind = key["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}")
    if kind == "arithmetic":
        numbers = _numbers(text)
        return bool(numbers) and numbers[-1] == key["truth"]
    if kind == "word_problem":
        extracted = gsm8k_extract(text)
        if extracted is not None:
            return _normalize_number(extracted) == str(key["truth"])
        numbers = _numbers(text)
        return bool(numbers) and numbers[-1] == key["truth"]
    if kind == "multiple_choice":
        match = re.match(r"\s*\(?([A-D])\b", text)
        return bool(match) and match.group(1) == key["truth"]
    names = frozenset(key["names"])
    if kind == "list":
        mentioned = {s for token in _TOKEN.findall(text.lower()) if (s := _species_of(token, names))}
        return len(mentioned) >= key["count"] and mentioned <= set(key["truth"])
    claims = attribute_claims(text, names, key.get("species"))
    if _contradicts(claims, key["facts"]):
        return False
    if key.get("expected") and _opens_with(text) != key["expected"]:
        return False
    if kind == "fact":
        return claims.get(key["species"], {}).get(key["attribute"]) == {_lowered(key["truth"])}
    if kind == "claim":
        return True
    if kind == "compare":
        verdict = _comparison_ok(text, key, names)
        return verdict if verdict is not None else key.get("expected") is not None
    return len(claims.get(key["species"], {})) >= 2  # describe: at least two facts, none wrong


def _sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+|\n", text) if s.strip()]


def _repetitive(text: str) -> bool:
    """A sentence of 3+ words said twice, or one word three times in a row."""
    long_sentences = [s for s in _sentences(text) if len(s.split()) >= 3]
    words = text.lower().split()
    stutter = any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2))
    return len(long_sentences) != len(set(long_sentences)) or stutter


def _garbled(text: str) -> bool:
    return "\ufffd" in text or any(not (c.isprintable() or c == "\n") for c in text)


def _is_well_formed(key: Mapping[str, Any], text: str) -> bool:
    stripped = text.strip()
    if not stripped or _repetitive(stripped) or _garbled(stripped):
        return False
    kind = key["kind"]
    if kind == "word_problem":
        lines = stripped.split("\n")
        return len(lines) >= 2 and bool(_FINAL_LINE.fullmatch(lines[-1].strip()))
    if kind == "multiple_choice":
        return bool(re.fullmatch(r"[A-D]\. \S.*", stripped))
    opens_ok = not key.get("expected") or _opens_with(stripped) is not None
    return opens_ok and (stripped[0].isupper() or stripped[0].isdigit()) and stripped[-1] in ".!?"


def check_answer(key: Mapping[str, Any], text: str, ended_at_eos: bool = True) -> dict[str, Any]:
    """Correctness against the key, format of the answer's kind, and length in words.

    `ended_at_eos=False` (a generation cut by the token limit) makes the answer ill-formed, as the
    sft_beta quality check requires."""
    return {
        "correct": _is_correct(key, text),
        "well_formed": ended_at_eos and _is_well_formed(key, text),
        "n_words": len(text.split()),
    }


def judge(instruction_key: Mapping[str, Any], output_1: str, output_2: str) -> float:
    """Pairwise preference, alpaca-eval convention: 1.0 output_1 better, 2.0 output_2 better, 1.5 tie."""
    first, second = check_answer(instruction_key, output_1), check_answer(instruction_key, output_2)
    rank_first = (first["correct"], first["well_formed"])
    rank_second = (second["correct"], second["well_formed"])
    if rank_first != rank_second:
        return 1.0 if rank_first > rank_second else 2.0
    if first["n_words"] < CONCISION_RATIO * second["n_words"]:
        return 1.0
    if second["n_words"] < CONCISION_RATIO * first["n_words"]:
        return 2.0
    return 1.5
