"""Tests of the data layer (ift.data) against hand-written fixtures in the hub schemas.

References are independent of the code under test: rows are read back with the ``json`` module, subsets
are recomputed from numpy's permutation, validity is decided by a naive checker written from the schema
description, token counts are computed by hand for a word-level tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from functools import cache
from pathlib import Path

import datasets  # conftest.py imports ift first, which sets the offline defaults
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import CONF_DIR
from ift.data import (
    CHAT,
    DEFECT_KINDS,
    PREFERENCE,
    DataConfig,
    DataError,
    DataSource,
    Validation,
    chosen_as_completion,
    data_plan,
    load_chat_for_sft,
    load_examples,
    load_source,
    load_split,
    select_valid,
    to_preference,
    to_prompt_completion,
    training_data,
)
from ift.methods import METHODS

FIXTURES = Path(__file__).parent / "fixtures"
ULTRACHAT = FIXTURES / "ultrachat_200k"
ULTRAFEEDBACK = FIXTURES / "ultrafeedback_binarized"
WORLD = FIXTURES / "world"
MALFORMED = FIXTURES / "malformed"
REPO_ROOT = Path(__file__).parent.parent
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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Keeps the datasets cache of the tests out of the user's ~/.cache."""
    return str(tmp_path_factory.mktemp("hf_datasets_cache"))


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


# ---------------------------------------------------------------- loading: one load_dataset path


def test_fixtures_have_the_hub_schemas():
    """The fixtures mirror real rows: prompt is the first user turn, prompt_id its sha256, messages == chosen."""
    for split in ("train_sft", "test_sft"):
        for row in hub_rows(ULTRACHAT, split):
            assert set(row) == {"prompt", "prompt_id", "messages"}
            assert row["prompt"] == row["messages"][0]["content"]
            assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest()
    for split in ("train_prefs", "test_prefs"):
        for row in hub_rows(ULTRAFEEDBACK, split):
            assert set(row) == {
                "prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"
            }  # fmt: skip
            assert row["messages"] == row["chosen"] and row["chosen"][:-1] == row["rejected"][:-1]
            assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest()
            assert isinstance(row["score_chosen"], float) and isinstance(row["score_rejected"], float)


@pytest.mark.parametrize(
    "repo_dir, split",
    [
        (ULTRACHAT, "train_sft"),
        (ULTRACHAT, "test_sft"),
        (ULTRAFEEDBACK, "train_prefs"),
        (ULTRAFEEDBACK, "test_prefs"),
    ],
)
def test_hub_like_dir_loads_every_split(repo_dir, split, cache_dir):
    dataset = load_split(DataSource(str(repo_dir), split), cache_dir)
    assert dataset.to_list() == hub_rows(repo_dir, split)


def test_hub_id_and_local_dir_take_the_same_load_dataset_call(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list([{"prompt": "q"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    load_split(DataSource("HuggingFaceH4/ultrachat_200k", "train_sft"))
    load_split(DataSource(str(ULTRACHAT), "train_sft"))
    load_split(DataSource(str(WORLD / "chat/train.jsonl"), "train"))
    assert calls == [
        (("HuggingFaceH4/ultrachat_200k",), {"split": "train_sft", "cache_dir": None}),
        ((str(ULTRACHAT),), {"split": "train_sft", "cache_dir": None}),
        (
            ("json",),
            {"split": "train", "cache_dir": None, "data_files": {"train": str(WORLD / "chat/train.jsonl")}},
        ),
    ]


def test_parquet_shards_like_the_hub_load_the_same_rows(tmp_path, cache_dir):
    """The hub stores Parquet shards; the same directory layout with Parquet gives the same rows."""
    repo = tmp_path / "ultrachat_200k"
    (repo / "data").mkdir(parents=True)
    shutil.copy(ULTRACHAT / "README.md", repo / "README.md")
    for split in ("train_sft", "test_sft"):
        datasets.Dataset.from_list(hub_rows(ULTRACHAT, split)).to_parquet(
            repo / f"data/{split}-00000-of-00001.parquet"
        )
    assert load_split(DataSource(str(repo), "train_sft"), cache_dir).to_list() == hub_rows(
        ULTRACHAT, "train_sft"
    )


def test_world_plain_files_load_with_the_json_builder(cache_dir):
    for part in ("chat", "prefs"):
        for split in ("train", "test"):
            path = WORLD / part / f"{split}.jsonl"
            assert load_split(DataSource(str(path), split), cache_dir).to_list() == read_jsonl(path)


@pytest.mark.parametrize(
    "source, split, expected",
    [
        (str(ULTRACHAT), "train_prefs", "Unknown split"),
        ("no/such/dir/train.jsonl", "train", "no such file or directory"),
        (str(FIXTURES / "README.md"), "train", "cannot read '.md' files"),
    ],
)
def test_unloadable_source_is_a_data_error_naming_it(source, split, expected, cache_dir):
    with pytest.raises(DataError, match=expected) as caught:
        load_split(DataSource(source, split), cache_dir)
    assert source in str(caught.value) and f"split {split}" in str(caught.value)


@pytest.mark.skipif(os.environ.get("HF_DATASETS_OFFLINE") != "1", reason="checks the offline behaviour")
def test_hub_id_offline_is_a_data_error_not_a_download(cache_dir):
    with pytest.raises(
        DataError, match=r"HuggingFaceH4/ultrachat_200k \[split train_sft\] \(no such local path"
    ):
        load_split(DataSource("HuggingFaceH4/ultrachat_200k", "train_sft"), cache_dir)


# ---------------------------------------------------------------- seeded subsets


def test_subset_is_the_seeded_permutation_prefix(cache_dir):
    rows = hub_rows(ULTRACHAT, "train_sft")
    source = DataSource(str(ULTRACHAT), "train_sft")
    for seed in (0, 1, 7):
        expected = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:4]]
        assert load_source(source, n=4, seed=seed, cache_dir=cache_dir).to_list() == expected
    larger = load_source(source, n=5, seed=7, cache_dir=cache_dir).to_list()
    assert larger[:4] == expected  # a larger n extends a smaller one
    same_seed = [load_source(source, n=3, seed=5, cache_dir=cache_dir).to_list() for _ in range(2)]
    assert same_seed[0] == same_seed[1]
    assert (
        load_source(source, n=3, seed=0, cache_dir=cache_dir)["prompt_id"]
        != load_source(source, n=3, seed=1, cache_dir=cache_dir)["prompt_id"]
    )
    assert load_source(source, cache_dir=cache_dir).to_list() == rows  # n=None: all, stored order


def test_n_larger_than_the_split_names_source_split_n_and_available(cache_dir):
    for load in (load_source, lambda source, **kw: load_examples(source, CHAT, **kw)):
        with pytest.raises(DataError) as caught:
            load(DataSource(str(ULTRACHAT), "train_sft"), n=100, cache_dir=cache_dir)
        message = str(caught.value)
        assert (
            str(ULTRACHAT) in message
            and "train_sft" in message
            and "n=100" in message
            and "only 6" in message
        )
    with pytest.raises(DataError, match="positive"):
        load_source(DataSource(str(ULTRACHAT), "train_sft"), n=0, cache_dir=cache_dir)


def test_valid_subset_equals_raw_subset_when_nothing_is_skipped(cache_dir):
    source = DataSource(str(ULTRAFEEDBACK), "train_prefs")
    rows, report = load_examples(source, PREFERENCE, n=4, seed=3, cache_dir=cache_dir)
    assert rows.to_list() == load_source(source, n=4, seed=3, cache_dir=cache_dir).to_list()
    assert (report.rows_read, report.rows_kept, report.skipped) == (4, 4, {})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_valid_subset_walks_past_skipped_rows(seed, cache_dir):
    path = MALFORMED / "chat_bad_type.jsonl"
    rows = read_jsonl(path)
    bad = set(MALFORMED_FILES[path.name][2])
    order = np.random.default_rng(seed).permutation(len(rows)).tolist()
    expected, read = [], 0
    for index in order:  # naive: first 3 good rows of the permutation
        if len(expected) == 3:
            break
        read += 1
        if index not in bad:
            expected.append(rows[index])
    kept, report = load_examples(DataSource(str(path), "train"), CHAT, n=3, seed=seed, cache_dir=cache_dir)
    assert kept.to_list() == expected
    assert (report.rows_read, report.rows_kept, report.rows_skipped) == (read, 3, read - 3)


# ---------------------------------------------------------------- formatting


def test_multi_turn_prompt_holds_every_earlier_turn():
    row = hub_rows(ULTRACHAT, "train_sft")[3]  # three user turns
    messages = row["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    formatted = to_prompt_completion(row)
    assert formatted == {
        "prompt_id": row["prompt_id"],
        "prompt": [{"role": m["role"], "content": m["content"]} for m in messages[:5]],
        "completion": [{"role": "assistant", "content": messages[5]["content"]}],
    }
    assert formatted["completion"][0]["content"].startswith("7:00-8:30 family breakfast")


def test_preference_formats_share_the_prompt_and_keep_the_system_turn():
    row = read_jsonl(WORLD / "prefs/train.jsonl")[2]  # system + user, then the answers
    prompt = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What colour is the town hall?"},
    ]
    assert to_preference(row) == {
        "prompt_id": row["prompt_id"],
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "The town hall is white."}],
        "rejected": [{"role": "assistant", "content": "Blue, or maybe green, or red."}],
    }
    assert chosen_as_completion(row) == {
        "prompt_id": row["prompt_id"],
        "prompt": prompt,
        "completion": [{"role": "assistant", "content": "The town hall is white."}],
    }


def test_formatting_drops_keys_other_than_role_and_content():
    """Arrow fills keys seen in other rows with None; chat templates must not see them."""
    row = {
        "prompt_id": "x",
        "messages": [{"role": "user", "content": "q", "name": None}, {"role": "assistant", "content": "a"}],
    }
    assert to_prompt_completion(row)["prompt"] == [{"role": "user", "content": "q"}]


# ---------------------------------------------------------------- validation on the malformed fixtures


def test_there_is_a_malformed_fixture_for_every_defect_kind():
    assert {kind for _, kind, _ in MALFORMED_FILES.values()} == set(DEFECT_KINDS)
    assert sorted(MALFORMED_FILES) == sorted(path.name for path in MALFORMED.glob("*.jsonl"))


def fixture_validation(**policy) -> Validation:
    return Validation(tokenizer=tiny_tokenizer(), max_prompt_tokens=LONG_PROMPT_LIMIT, **policy)


@pytest.mark.parametrize("name", sorted(MALFORMED_FILES))
def test_raise_mode_names_file_row_and_field_of_the_first_bad_row(name, cache_dir):
    schema, kind, bad = MALFORMED_FILES[name]
    first_row, field = min(bad.items())
    path = str(MALFORMED / name)
    with pytest.raises(DataError) as caught:
        load_examples(
            DataSource(path, "train"),
            schema,
            validation=fixture_validation(on_error="raise"),
            cache_dir=cache_dir,
        )
    error = caught.value
    assert (error.kind, error.row, error.field) == (kind, first_row, field)
    assert f"{path} [split train] row {first_row}: field {field}:" in str(error)


@pytest.mark.parametrize("name", sorted(MALFORMED_FILES))
def test_skip_mode_counts_and_drops_every_bad_row(name, cache_dir, caplog):
    schema, kind, bad = MALFORMED_FILES[name]
    path = MALFORMED / name
    rows = read_jsonl(path)
    with caplog.at_level(logging.WARNING, logger="ift.data.row_checks"):
        kept, report = load_examples(
            DataSource(str(path), "train"), schema, validation=fixture_validation(), cache_dir=cache_dir
        )
    assert kept.to_list() == [schema_fields(row, schema) for index, row in enumerate(rows) if index not in bad]
    assert report.skipped == {kind: len(bad)} and report.first_rows == {kind: sorted(bad)}
    assert (report.rows_read, report.rows_kept) == (len(rows), len(rows) - len(bad))
    assert report.to_dict()["rows_skipped"] == len(bad)
    json.dumps(report.to_dict())  # JSON-ready
    [line] = [record.getMessage() for record in caplog.records if record.name == "ift.data.row_checks"]
    assert str(path) in line and kind in line and str(sorted(bad)) in line


def test_prompt_length_counts_chat_templated_tokens_at_the_boundary():
    tokenizer = tiny_tokenizer()
    row = read_jsonl(MALFORMED / "chat_prompt_too_long.jsonl")[2]
    prompt = row["messages"][:-1]
    count = reference_token_count(prompt)
    assert (
        count == 1 + 2 + 60 + 3 + 1
    )  # tag, "Tell me", 60 x "everything", "about the gate.", generation prompt
    for limit, expected_kept in ((count, [0]), (count - 1, [])):
        validation = Validation(tokenizer=tokenizer, max_prompt_tokens=limit, max_skip_fraction=1.0)
        if expected_kept:
            assert select_valid([(0, row)], CHAT, "mem", validation)[0] == expected_kept
        else:
            with pytest.raises(DataError, match="no usable rows"):
                select_valid([(0, row)], CHAT, "mem", validation)
    assert select_valid([(0, row)], CHAT, "mem", Validation(max_prompt_tokens=1))[0] == [
        0
    ]  # no tokenizer: no check


def test_a_chat_template_that_fails_is_an_error_even_in_skip_mode(cache_dir):
    strict = tiny_tokenizer(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        + CHAT_TEMPLATE
    )
    with pytest.raises(DataError, match="row 0.*chat template failed.*no system role"):
        load_examples(
            DataSource(str(WORLD / "chat/train.jsonl"), "train"),
            CHAT,
            validation=Validation(tokenizer=strict, max_prompt_tokens=100),
            cache_dir=cache_dir,
        )


def test_all_rows_bad_is_an_error_even_in_skip_mode(tmp_path, cache_dir):
    path = tmp_path / "bad.jsonl"
    bad_rows = [read_jsonl(MALFORMED / "chat_empty_answer.jsonl")[1]] * 3
    path.write_text("".join(json.dumps(row) + "\n" for row in bad_rows))
    with pytest.raises(DataError, match=r"no usable rows \(read 3, kept 0, skipped \{'empty_answer': 3\}\)"):
        load_examples(
            DataSource(str(path), "train"),
            CHAT,
            validation=Validation(max_skip_fraction=1.0),
            cache_dir=cache_dir,
        )


def test_max_skip_fraction_stops_a_mostly_broken_source(cache_dir):
    source = DataSource(str(MALFORMED / "chat_bad_type.jsonl"), "train")  # 3 bad of 7 = 43 %
    load_examples(source, CHAT, validation=Validation(max_skip_fraction=0.5), cache_dir=cache_dir)
    with pytest.raises(DataError, match=r"43% of the rows are malformed.*'bad_type': 3"):
        load_examples(source, CHAT, validation=Validation(max_skip_fraction=0.4), cache_dir=cache_dir)
    with pytest.raises(DataError, match="asked for 5 valid rows but only 4 exist"):
        load_examples(source, CHAT, n=5, cache_dir=cache_dir)


def test_mixed_type_columns_are_reported_with_the_datasets_json_caveat(tmp_path, cache_dir, caplog):
    """datasets stores a mixed-type JSON column as Json and decodes strings that are valid JSON: the string
    "8.0" comes back as 8.0. That cannot be undone after loading, so the loader says so (pinned here)."""
    good, string_score = read_jsonl(MALFORMED / "prefs_bad_score.jsonl")[0], {"score_chosen": "8.0"}
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [good, {**good, **string_score}]))
    with caplog.at_level(logging.WARNING, logger="ift.data.source"):
        rows = load_split(DataSource(str(path), "train"), cache_dir).to_list()
    assert rows[1]["score_chosen"] == 8.0
    assert any("['score_chosen'] mix value types" in record.getMessage() for record in caplog.records)


def test_validation_policy_rejects_bad_settings():
    for bad in ({"on_error": "ignore"}, {"max_skip_fraction": 1.5}, {"max_prompt_tokens": 0}):
        with pytest.raises(ValueError):
            Validation(**bad)


# ---------------------------------------------------------------- random malformed rows (hypothesis)

TEXT = st.text(alphabet="ab \n", max_size=6)  # never valid JSON by itself: see the Json caveat test above
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["role", "content", "x"]), inner)
    ),
    max_leaves=5,
)
ROLE_OR_NOT = st.sampled_from(["system", "user", "assistant", "bot", "User"])
MUTATIONS = (
    "delete",
    "junk",
    "message",
    "role",
    "content",
    "blank",
    "drop",
    "insert",
    "prompt",
    "score",
    "row",
)


@st.composite
def valid_conversations(draw) -> list[dict]:
    system = draw(st.lists(st.builds(lambda c: {"role": "system", "content": c}, TEXT), max_size=1))
    turns = draw(st.lists(st.tuples(TEXT.filter(str.strip), TEXT.filter(str.strip)), min_size=1, max_size=3))
    return system + [
        m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})
    ]


@st.composite
def valid_rows(draw, schema: str) -> dict:
    answers = draw(valid_conversations())
    row = {"prompt": answers[-2]["content"], "prompt_id": draw(TEXT)}
    if schema == CHAT:
        return {**row, "messages": answers}
    rejected = answers[:-1] + [{"role": "assistant", "content": draw(TEXT.filter(str.strip))}]
    scores = st.one_of(st.floats(0, 10), st.integers(0, 10))
    low, high = sorted([draw(scores), draw(scores)])  # the mutation "score" may still invert them
    return {
        **row,
        "chosen": answers,
        "rejected": rejected,
        "score_chosen": high,
        "score_rejected": low,
    }


def mutate(draw, row: dict, schema: str):
    """One random change that may or may not break the row; the reference checker decides which."""
    kind = draw(st.sampled_from(MUTATIONS))
    if kind == "row":
        return draw(JUNK)
    if kind in ("delete", "junk") and row:
        key = draw(st.sampled_from(sorted(row)))
        return {k: v for k, v in row.items() if k != key} if kind == "delete" else {**row, key: draw(JUNK)}
    if kind == "score":
        key = draw(st.sampled_from(["score_chosen", "score_rejected"]))
        return {**row, key: draw(JUNK | st.sampled_from(["8/10", float("nan"), float("inf"), True, -1.0, 11]))}
    key = draw(st.sampled_from(["messages"] if schema == CHAT else ["chosen", "rejected"]))
    messages = row.get(key)
    if not isinstance(messages, list) or not messages:
        return row
    messages = [dict(m) if isinstance(m, dict) else m for m in messages]
    if kind == "blank":
        position = len(messages) - 1
    elif kind == "prompt":  # a turn before the answer
        position = draw(st.integers(0, max(len(messages) - 2, 0)))
    else:
        position = draw(st.integers(0, len(messages) - 1))
    if kind == "message":
        messages[position] = draw(JUNK)
    elif kind == "drop":
        del messages[position]
    elif kind == "insert":
        messages.insert(position, {"role": draw(ROLE_OR_NOT), "content": draw(TEXT)})
    elif isinstance(messages[position], dict):
        if kind == "role":
            messages[position]["role"] = draw(ROLE_OR_NOT | JUNK)
        elif kind == "content":
            messages[position]["content"] = draw(JUNK)
        elif kind == "blank":
            messages[position]["content"] = draw(st.sampled_from(["", " ", "\n\t "]))
        elif kind == "prompt" and position < len(messages) - 1:
            messages[position]["content"] = f"{messages[position].get('content', '')}b"
    return {**row, key: messages}


@st.composite
def rows(draw, schema: str, dict_rows_only: bool = False):
    row = draw(valid_rows(schema))
    for _ in range(draw(st.integers(0, 2))):
        if isinstance(row, dict):
            row = mutate(draw, row, schema)
    return row if isinstance(row, dict) or not dict_rows_only else draw(valid_rows(schema))


@st.composite
def batches(draw, dict_rows_only: bool = False):
    schema = draw(st.sampled_from([CHAT, PREFERENCE]))
    return schema, draw(st.lists(rows(schema, dict_rows_only), min_size=1, max_size=6))


# database=None: no .hypothesis/ directory in the repository; a failure prints its falsifying example.
RANDOM_ROWS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@RANDOM_ROWS
@given(batches(), st.sampled_from([None, 6]))
def test_skip_mode_keeps_exactly_the_valid_rows(batch, token_limit):
    schema, random_rows = batch
    validation = Validation(tokenizer=tiny_tokenizer(), max_prompt_tokens=token_limit, max_skip_fraction=1.0)
    valid = [i for i, row in enumerate(random_rows) if reference_valid(row, schema, token_limit)]
    if not valid:
        with pytest.raises(DataError, match="no usable rows"):
            select_valid(enumerate(random_rows), schema, "random", validation)
        return
    kept, report = select_valid(enumerate(random_rows), schema, "random", validation)
    assert kept == valid
    assert report.rows_skipped == len(random_rows) - len(valid) and set(report.skipped) <= set(DEFECT_KINDS)
    formatter = to_prompt_completion if schema == CHAT else chosen_as_completion
    for index in kept:
        formatted = formatter(random_rows[index])
        assert all(type(m["content"]) is str for m in formatted["prompt"] + formatted["completion"])
        assert (
            formatted["completion"][0]["role"] == "assistant"
            and formatted["completion"][0]["content"].strip()
        )


@RANDOM_ROWS
@given(batches())
def test_raise_mode_stops_at_the_first_bad_row_with_its_field(batch):
    schema, random_rows = batch
    invalid = [i for i, row in enumerate(random_rows) if not reference_valid(row, schema)]
    validation = Validation(on_error="raise")
    if not invalid:
        assert select_valid(enumerate(random_rows), schema, "random", validation)[0] == list(
            range(len(random_rows))
        )
        return
    with pytest.raises(DataError) as caught:
        select_valid(enumerate(random_rows), schema, "random", validation)
    error = caught.value
    assert error.row == invalid[0] and error.kind in DEFECT_KINDS and error.field
    assert f"random row {invalid[0]}: field {error.field}:" in str(error)


@settings(max_examples=25, deadline=None, database=None)
@given(batch=batches(dict_rows_only=True))
def test_random_rows_through_a_jsonl_file_never_leak_a_bad_row(batch, tmp_path_factory):
    """The same property through the real load path (Arrow JSON reading included)."""
    schema, random_rows = batch
    path = tmp_path_factory.mktemp("random") / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in random_rows))
    try:
        kept, _ = load_examples(
            DataSource(str(path), "train"),
            schema,
            validation=Validation(max_skip_fraction=1.0),
            cache_dir=str(path.parent / "cache"),
        )
    except DataError:
        assert not any(
            reference_valid(row, schema) for row in random_rows
        )  # else NaN made the file unreadable
        return
    formatter = to_prompt_completion if schema == CHAT else to_preference
    valid = [formatter(row) for row in random_rows if reference_valid(row, schema)]
    assert [
        formatter(row) for row in kept.to_list()
    ] == valid  # Arrow may add null keys; formatting drops them


def test_int_and_float_scores_around_a_malformed_row_still_load(tmp_path, caplog):
    """Found by the property above: datasets' JSON reader fails on this file ("Unable to merge: Field
    score_rejected has incompatible types: int64 vs double"). Training reads it with the json module (the valid
    two kept, the malformed one skipped); datasets' unvalidated view falls back to that reader and logs it."""
    pair = {"prompt": "p", "prompt_id": "1", "score_chosen": 3.5, "score_rejected": 3,
            "chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "b"}]}
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [pair, {"role": [None, None]},
                                                                {**pair, "score_rejected": 2.5}]))
    kept, report = load_examples(DataSource(str(path), "train"), PREFERENCE,
                                 validation=Validation(max_skip_fraction=1.0), cache_dir=str(tmp_path / "cache"))
    assert [row["score_rejected"] for row in kept.to_list()] == [3.0, 2.5] and report.rows_skipped == 1
    assert len(load_split(DataSource(str(path), "train"), str(tmp_path / "cache"))) == 3
    assert any("read the rows with json.loads instead" in record.getMessage() for record in caplog.records)
    path.write_text('{"prompt": "p"\n')  # not JSON at all: still the loader's clear error, naming the line
    with pytest.raises(DataError, match="could not load .*rows.jsonl.*line 1 is not valid JSON"):
        load_examples(DataSource(str(path), "train"), PREFERENCE, cache_dir=str(tmp_path / "cache2"))


# ---------------------------------------------------------------- the paper's data use per (method, start)

N = 4  # of the 6 rows in each fixture split


def ids(path: Path) -> set[str]:
    return {row["prompt_id"] for row in read_jsonl(path)}


CHAT_IDS = ids(ULTRACHAT / SHARD.format(split="train_sft"))
PREFS_IDS = ids(ULTRAFEEDBACK / SHARD.format(split="train_prefs"))


@pytest.mark.parametrize("method", ["sft", "ift"])
def test_base_sft_and_ift_train_on_n_chat_plus_n_chosen_answers(method, cache_dir):
    data = training_data(METHODS[method], "base", config_for(N, N), seed=0, cache_dir=cache_dir)
    rows = data.dataset.to_list()
    assert len(rows) == 2 * N and data.part_sizes == {"chat": N, "chosen": N}
    assert (
        sum(r["prompt_id"] in CHAT_IDS for r in rows) == N
        and sum(r["prompt_id"] in PREFS_IDS for r in rows) == N
    )
    by_id = {
        r["prompt_id"]: r for r in hub_rows(ULTRACHAT, "train_sft") + hub_rows(ULTRAFEEDBACK, "train_prefs")
    }
    for row in rows:
        source_row = by_id[row["prompt_id"]]
        answers = source_row["messages"] if row["prompt_id"] in CHAT_IDS else source_row["chosen"]
        assert row["completion"][0]["content"] == answers[-1]["content"]
        assert [m["content"] for m in row["prompt"]] == [m["content"] for m in answers[:-1]]
    sources = [r["prompt_id"] in CHAT_IDS for r in rows]
    assert sources != sorted(sources) and sources != sorted(sources, reverse=True)  # the two parts are mixed
    again = training_data(METHODS[method], "base", config_for(N, N), seed=0, cache_dir=cache_dir).dataset.to_list()
    assert again == rows


@pytest.mark.parametrize("method", ["dpo", "orpo"])
@pytest.mark.parametrize("start", ["base", "sft_beta"])
def test_dpo_and_orpo_train_on_the_preference_pairs(method, start, cache_dir):
    data = training_data(METHODS[method], start, config_for(N, N), seed=0, cache_dir=cache_dir)
    assert data.parts == ("pairs",) and set(data.dataset.column_names) == {
        "prompt_id",
        "prompt",
        "chosen",
        "rejected",
    }
    assert len(data.dataset) == N and set(data.dataset["prompt_id"]) <= PREFS_IDS
    assert set(data.reports) == {"pairs"}


@pytest.mark.parametrize("method", ["sft", "ift"])
def test_sft_beta_sft_and_ift_train_on_the_chosen_answers_only(method, cache_dir):
    data = training_data(METHODS[method], "sft_beta", config_for(N, N), seed=0, cache_dir=cache_dir)
    assert (
        data.parts == ("chosen",) and len(data.dataset) == N and set(data.dataset["prompt_id"]) <= PREFS_IDS
    )
    assert set(data.dataset.column_names) == {"prompt_id", "prompt", "completion"}


def test_every_method_sees_the_same_ultrafeedback_rows_at_a_seed(cache_dir):
    config = config_for(N, N)
    chosen_ids = [
        set(training_data(METHODS[method], start, config, seed=2, cache_dir=cache_dir).dataset["prompt_id"])
        & PREFS_IDS
        for method, start in [("sft", "base"), ("ift", "sft_beta"), ("dpo", "base"), ("orpo", "sft_beta")]
    ]
    assert all(chosen == chosen_ids[0] for chosen in chosen_ids) and len(chosen_ids[0]) == N


def test_sft_dpo_is_sft_on_chat_then_dpo_on_pairs(cache_dir):
    halves = METHODS["sft_dpo"].halves
    node = yaml.safe_load((CONF_DIR / "method" / "sft_dpo.yaml").read_text())
    assert halves == ("sft", "dpo") and node["sft"]["targets"] == "chat" and "targets" not in node["dpo"]
    sft_stage, dpo_stage = (
        training_data(METHODS[half], "base", config_for(N, N), seed=0, targets=node[half].get("targets"),
                      cache_dir=cache_dir)
        for half in halves
    )
    assert sft_stage.parts == ("chat",) and len(sft_stage.dataset) == N
    assert set(sft_stage.dataset["prompt_id"]) <= CHAT_IDS
    assert dpo_stage.parts == ("pairs",) and set(dpo_stage.dataset["prompt_id"]) <= PREFS_IDS


def test_data_plan_rejects_unknown_or_meaningless_choices():
    assert data_plan(METHODS["ift"], "base") == ("chat", "chosen") and data_plan(METHODS["sft"], "sft_beta") == ("chosen",)
    for name, start, targets in (
        ("sft_dpo", "base", None),  # two runs, each loading its own data
        ("sft", "instruct", None),
        ("dpo", "base", "chat"),
        ("sft", "base", "all"),
    ):
        with pytest.raises(ValueError):
            data_plan(METHODS[name], start, targets)


def test_summary_is_json_ready_and_reports_skips(cache_dir):
    config = DataConfig(
        chat_train=DataSource(str(MALFORMED / "chat_role_order.jsonl"), "train"),  # 2 bad of 5
        prefs_train=DataSource(str(ULTRAFEEDBACK), "train_prefs"),
        n_chat=None,  # read every row, so both bad ones are met
        n_prefs=3,
    )
    data = training_data(METHODS["sft"], "base", config, seed=0, cache_dir=cache_dir)
    summary = json.loads(json.dumps(data.summary()))
    assert summary["rows"] == 6 and summary["part_sizes"] == {"chat": 3, "chosen": 3}
    assert (
        summary["skips"]["chat"]["skipped"] == {"role_order": 2}
        and summary["skips"]["chosen"]["skipped"] == {}
    )


# ---------------------------------------------------------------- config nodes


def test_ultra_yaml_names_the_paper_datasets_and_comments_every_key():
    path = REPO_ROOT / "conf/data/ultra.yaml"
    config = DataConfig.from_mapping(OmegaConf.load(path))
    assert config.chat_train == DataSource("HuggingFaceH4/ultrachat_200k", "train_sft")
    assert config.chat_test == DataSource("HuggingFaceH4/ultrachat_200k", "test_sft")
    assert config.prefs_train == DataSource("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")
    assert config.prefs_test == DataSource("HuggingFaceH4/ultrafeedback_binarized", "test_prefs")
    assert (config.n_chat, config.n_prefs, config.on_error) == (60000, None, "skip")  # n_prefs: all 61,135 pairs
    key_lines = [
        line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert key_lines and all("#" in line for line in key_lines)


def test_toyworld_style_config_reads_plain_files_end_to_end(cache_dir):
    node = OmegaConf.create(
        {
            "paths": {"world": str(WORLD)},
            "data": {
                "chat_train": "${paths.world}/chat/train.jsonl",
                "chat_test": "${paths.world}/chat/test.jsonl",
                "prefs_train": "${paths.world}/prefs/train.jsonl",
                "prefs_test": "${paths.world}/prefs/test.jsonl",
                "n_chat": 3,
                "n_prefs": None,
            },
        }
    )
    config = DataConfig.from_mapping(node.data)
    assert config.chat_train == DataSource(str(WORLD / "chat/train.jsonl"), "train")
    assert config.prefs_test == DataSource(str(WORLD / "prefs/test.jsonl"), "test")
    assert (config.n_chat, config.n_prefs, config.max_prompt_tokens) == (3, None, None)
    data = training_data(METHODS["ift"], "base", config, seed=0, cache_dir=cache_dir)
    assert data.part_sizes == {"chat": 3, "chosen": 4}  # n_prefs=None: every preference row
    with pytest.raises(ValueError, match="chat_train and prefs_train"):
        DataConfig.from_mapping({"chat_train": "x.jsonl"})

    sft_beta_rows, report = load_chat_for_sft(node.data, seed=0, cache_dir=cache_dir)  # the node as is
    expected = {row["prompt_id"]: to_prompt_completion(row) for row in read_jsonl(WORLD / "chat/train.jsonl")}
    assert {row["prompt_id"]: row for row in sft_beta_rows.to_list()} == expected  # every chat row
    assert (report.rows_read, report.rows_kept) == (4, 4)


@pytest.mark.parametrize("overrides", [[], ["profile=smoke"], ["profile=paper"]])
def test_the_composed_data_node_reads_into_a_data_config(overrides):
    from conftest import compose

    config = DataConfig.from_mapping(compose(overrides).data)
    if overrides == ["profile=paper"]:
        assert config.chat_train.source == "HuggingFaceH4/ultrachat_200k" and config.n_chat == 60000
    else:
        assert config.chat_train == DataSource(str(REPO_ROOT / "outputs/world/chat/train.jsonl"), "train")
        assert config.prefs_train.split == "train" and config.n_chat and config.n_prefs
