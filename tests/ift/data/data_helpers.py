"""Shared fixtures, helpers and independent references of the data-layer tests (tests/ift/data/)."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

from ift.data import (
    CHAT,
    PREFERENCE,
    DataConfig,
    DataSource,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ULTRACHAT = FIXTURES / "ultrachat_200k"
ULTRAFEEDBACK = FIXTURES / "ultrafeedback_binarized"
WORLD = FIXTURES / "world"
MALFORMED = FIXTURES / "malformed"
REPO_ROOT = Path(__file__).resolve().parents[3]
SHARD = "data/{split}-00000-of-00001.jsonl"
LONG_PROMPT_LIMIT = 32  # tokens; only the long row of chat_prompt_too_long.jsonl exceeds it

# file -> (schema, defect kind, {bad row index: field reported})
MALFORMED_FILES = {
    "chat_missing_field.jsonl": (CHAT, "missing_field", {1: "messages", 3: "messages[0].content"}),
    "chat_bad_type.jsonl": (CHAT, "bad_type", {1: "messages[0].content", 3: "messages[0]", 5: "messages"}),
    "chat_unknown_role.jsonl": (CHAT, "unknown_role", {2: "messages[1].role"}),
    "chat_role_order.jsonl": (CHAT, "role_order", {1: "messages[1].role", 3: "messages[2].role"}),
    "chat_empty_answer.jsonl": (CHAT, "empty_answer", {1: "messages[1].content"}),
    "chat_empty_turn.jsonl": (CHAT, "empty_turn", {1: "messages[1].content", 3: "messages[0].content"}),
    "chat_prompt_too_long.jsonl": (CHAT, "prompt_too_long", {2: "messages"}),
    "prefs_prompt_mismatch.jsonl": (PREFERENCE, "prompt_mismatch", {1: "rejected[0]"}),
    "prefs_bad_score.jsonl": (PREFERENCE, "bad_score", {1: "score_chosen", 3: "score_rejected"}),
    "prefs_inverted_preference.jsonl": (PREFERENCE, "inverted_preference", {1: "score_chosen", 3: "score_chosen"}),
}


# ---------------------------------------------------------------- helpers and independent references


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def hub_rows(repo_dir: Path, split: str) -> list[dict]:
    return read_jsonl(repo_dir / SHARD.format(split=split))


SCHEMA_KEYS = {
    CHAT: ("prompt", "prompt_id", "messages"),
    PREFERENCE: ("prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected"),
}


def schema_fields(row: dict, schema: str) -> dict:
    """What load_examples gives back for a valid row of a plain JSON file: the schema's keys, as written."""
    return {key: row[key] for key in SCHEMA_KEYS[schema]}


ROLE_TAGS = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@cache
def tiny_tokenizer(chat_template: str = CHAT_TEMPLATE):
    """A word-level tokenizer built in memory (no download): one token per whitespace-separated word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{tag: i + 1 for i, tag in enumerate(ROLE_TAGS)}}
    for word in "the is where a b gate open".split():
        vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", additional_special_tokens=list(ROLE_TAGS)
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def reference_token_count(prompt: list[dict]) -> int:
    """By hand for CHAT_TEMPLATE: a role tag plus the words of each turn, plus the generation prompt."""
    return sum(1 + len(message["content"].split()) for message in prompt) + 1


def reference_valid_conversation(messages) -> bool:
    """Naive check written straight from the schema description."""
    if type(messages) is not list:
        return False
    roles = []
    for message in messages:
        if type(message) is not dict:
            return False
        if type(message.get("role")) is not str or type(message.get("content")) is not str:
            return False
        if message["role"] not in ("system", "user", "assistant"):
            return False
        roles.append(message["role"])
    turns = roles[1:] if roles[:1] == ["system"] else roles
    if len(turns) < 2 or turns != ["user", "assistant"] * (len(turns) // 2) or len(turns) % 2:
        return False
    # every user and assistant turn has text (a blank system message is allowed)
    return all(message["content"].strip() for message in messages if message["role"] != "system")


def reference_valid(row, schema: str, token_limit: int | None = None) -> bool:
    if type(row) is not dict or type(row.get("prompt")) is not str or type(row.get("prompt_id")) is not str:
        return False
    answers = row.get("messages") if schema == CHAT else row.get("chosen")
    if not reference_valid_conversation(answers):
        return False
    if schema == PREFERENCE:
        rejected = row.get("rejected")
        if not reference_valid_conversation(rejected):
            return False
        turns = lambda messages: [(m["role"], m["content"]) for m in messages[:-1]]  # noqa: E731
        if turns(answers) != turns(rejected):
            return False
        for key in ("score_chosen", "score_rejected"):
            score = row.get(key)
            if type(score) not in (int, float) or not math.isfinite(score):
                return False
        if row["score_chosen"] < row["score_rejected"]:
            return False
    return token_limit is None or reference_token_count(answers[:-1]) <= token_limit


def config_for(n_chat: int | None, n_prefs: int | None, **policy) -> DataConfig:
    return DataConfig(
        chat_train=DataSource(str(ULTRACHAT), "train_sft"),
        prefs_train=DataSource(str(ULTRAFEEDBACK), "train_prefs"),
        n_chat=n_chat,
        n_prefs=n_prefs,
        **policy,
    )
