"""Data rows that used to change or vanish without a trace (issue #20, data items).

1. A JSONL file whose rows mix value types: datasets typed the column as JSON and turned valid string answers
   ("4", '"Canberra"', "null", ...) into other values before validation saw them.
4. Empty turns and inverted preferences were accepted.

References are independent of the code under test: expected rows are the ones written to the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from ift.data import (
    CHAT,
    PREFERENCE,
    DataConfig,
    DataError,
    DataSource,
    Validation,
    load_examples,
    select_valid,
    training_data,
)

# Answers that are valid strings and also spell JSON values: datasets' Json column read them back as values.
JSON_LOOKING_ANSWERS = ["4", '"Canberra"', "42", "true", "null", "[1, 2, 3]", "1e3", "007", " 5 "]


def chat_row(question: str, answer, prompt_id: str | None = None) -> dict:
    return {
        "prompt": question,
        "prompt_id": prompt_id or question,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
    }


def pref_row(question: str, chosen: str, rejected: str, score_chosen=8.0, score_rejected=2.0) -> dict:
    turn = [{"role": "user", "content": question}]
    return {
        "prompt": question,
        "prompt_id": question,
        "chosen": turn + [{"role": "assistant", "content": chosen}],
        "rejected": turn + [{"role": "assistant", "content": rejected}],
        "score_chosen": score_chosen,
        "score_rejected": score_rejected,
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def answers(dataset: datasets.Dataset) -> list:
    return [row["messages"][-1]["content"] for row in dataset.to_list()]


# ---------------------------------------------------------------- 1. rows reach validation as written


def test_string_answers_that_look_like_json_are_kept_exactly_as_written(tmp_path):
    rows = [chat_row(f"question {i}", answer) for i, answer in enumerate(JSON_LOOKING_ANSWERS)]
    rows.insert(3, chat_row("a list answer", ["not", "a", "string"]))  # makes datasets type the column as Json
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    kept, report = load_examples(DataSource(str(path), "train"), CHAT)
    assert answers(kept) == JSON_LOOKING_ANSWERS  # "4" still the string "4", '"Canberra"' keeps its quotes
    assert all(type(answer) is str for answer in answers(kept))
    assert report.skipped == {"bad_type": 1} and report.first_rows == {"bad_type": [3]}
    formatted = training_data(
        "sft", "sft_beta", DataConfig(chat_train=DataSource(str(path), "train"), prefs_train=DataSource(
            str(write_jsonl(tmp_path / "prefs.jsonl", [pref_row("q", "42", "null")])), "train")), seed=0
    ).dataset
    assert formatted[0]["completion"] == [{"role": "assistant", "content": "42"}]


def test_five_malformed_and_five_valid_rows_load_the_five_valid_ones_by_default(tmp_path):
    valid = [chat_row(f"valid {i}", answer) for i, answer in enumerate(["4", "true", "null", '"Canberra"', "[1]"])]
    malformed = [
        chat_row("list content", [{"type": "text", "text": "hi"}]),
        {"prompt": "no messages", "prompt_id": "m1"},
        {**chat_row("bad role", "x"), "messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]},
        chat_row("blank answer", "   "),
        {**chat_row("order", "x"), "messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
    ]
    rows = [row for pair in zip(malformed, valid) for row in pair]
    kept, report = load_examples(DataSource(str(write_jsonl(tmp_path / "chat.jsonl", rows)), "train"), CHAT)
    assert answers(kept) == ["4", "true", "null", '"Canberra"', "[1]"]
    assert (report.rows_read, report.rows_kept, report.rows_skipped) == (10, 5, 5)


def test_raise_mode_blames_the_malformed_row_not_a_valid_one(tmp_path):
    rows = [chat_row("one", "4"), chat_row("two", '"Canberra"'), chat_row("three", ["a", "list"]), chat_row("four", "5")]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(DataError) as caught:
        load_examples(DataSource(str(path), "train"), CHAT, validation=Validation(on_error="raise"))
    assert (caught.value.row, caught.value.field, caught.value.kind) == (2, "messages[1].content", "bad_type")
    assert f"{path} [split train] row 2: field messages[1].content: expected a string, got list" in str(caught.value)


def test_a_line_that_is_not_json_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(chat_row("one", "a")) + "\n\n{broken\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"chat\.jsonl \[split train\]: line 3 is not valid JSON"):
        load_examples(DataSource(str(path), "train"), CHAT)


# ---------------------------------------------------------------- 4. empty turns, inverted preferences


def test_empty_turns_are_skipped_and_counted_a_blank_system_message_is_kept():
    answer = {"role": "assistant", "content": "At noon."}
    rows = [
        {"prompt": "q", "prompt_id": "0", "messages": [{"role": "user", "content": "Who rings the bell?"},
                                                       {"role": "assistant", "content": ""},
                                                       {"role": "user", "content": "When?"}, answer]},
        {"prompt": "", "prompt_id": "1", "messages": [{"role": "user", "content": " \n"}, answer]},
        {"prompt": "q", "prompt_id": "2", "messages": [{"role": "system", "content": ""},
                                                       {"role": "user", "content": "When?"}, answer]},
        {"prompt": "q", "prompt_id": "3", "messages": [{"role": "user", "content": "When?"}, answer]},
    ]
    kept, report = select_valid(enumerate(rows), CHAT, "mem", Validation())
    assert kept == [2, 3]
    assert report.skipped == {"empty_turn": 2} and report.first_rows == {"empty_turn": [0, 1]}
    assert "mem row 0: field messages[1].content: the assistant turn is empty or blank" in report.first_errors[
        "empty_turn"]
    with pytest.raises(DataError, match=r"mem row 1: field messages\[0\]\.content: the user turn is empty") as caught:
        select_valid([(1, rows[1])], CHAT, "mem", Validation(on_error="raise"))
    assert (caught.value.kind, caught.value.row) == ("empty_turn", 1)


def test_an_inverted_preference_is_skipped_and_counted_a_tie_is_kept():
    rows = [pref_row("a", "good", "bad", 8.0, 2.0), pref_row("b", "good", "bad", 3, 7.5),
            pref_row("c", "good", "bad", 5.0, 5.0), pref_row("d", "good", "bad", 1.0, 1.5)]
    kept, report = select_valid(enumerate(rows), PREFERENCE, "mem", Validation())
    assert kept == [0, 2]
    assert report.skipped == {"inverted_preference": 2} and report.first_rows == {"inverted_preference": [1, 3]}
    assert "score_chosen=3 < score_rejected=7.5" in report.first_errors["inverted_preference"]
    with pytest.raises(DataError, match=r"mem row 1: field score_chosen: .*inverted_preference"):
        select_valid(enumerate(rows), PREFERENCE, "mem", Validation(on_error="raise"))
