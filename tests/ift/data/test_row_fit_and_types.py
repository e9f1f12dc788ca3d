"""Data rows that used to change or vanish without a trace (issue #20, data items).

1. A JSONL file whose rows mix value types: datasets typed the column as JSON and turned valid string answers
   ("4", '"Canberra"', "null", ...) into other values before validation saw them.
2. Rows TRL drops because the prompt fills ``max_length``: the trainer saw fewer rows than data.json said.
3. A 100k-character prompt: lost quietly (SFT, DPO) or an out-of-memory sequence (ORPO).
4. Empty turns and inverted preferences were accepted.

References are independent of the code under test: expected rows are the ones written to the file; which rows a
trainer drops is read off the real TRL trainers (built on a tiny model, never trained).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from conftest import compose
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
from ift.data.fit import first_answer_token, fit_defect
from ift.data.format import PREFERENCE_FEATURES, PROMPT_COMPLETION_FEATURES
from ift.methods import METHODS

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
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [pref_row("q", "42", "null")])
    config = DataConfig(chat_train=DataSource(str(path), "train"), prefs_train=DataSource(str(prefs), "train"))
    formatted = training_data(METHODS["sft"], "sft_beta", config, seed=0).dataset
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


# ---------------------------------------------------------------- 2./3. rows the trainer would train on nothing

MAX_LENGTH = 14  # tokens; the rows below put 9 + k prompt tokens first (every trainer alike)


def _question(k: int) -> str:
    return "what color is the zorb" + " big" * k + " ?"


def trl_rows(kind: str, lengths) -> list[dict]:
    """TRL-format rows whose prompts grow one token at a time across the MAX_LENGTH boundary."""
    rows = []
    for k in lengths:
        prompt = [{"role": "user", "content": _question(k)}]
        answer = [{"role": "assistant", "content": "the zorb is red ."}]
        if kind == "completion":
            rows.append({"prompt_id": f"k{k}", "prompt": prompt, "completion": answer})
        else:
            rejected = [{"role": "assistant", "content": "the zorb is blue big big ."}]
            rows.append({"prompt_id": f"k{k}", "prompt": prompt, "chosen": answer, "rejected": rejected})
    return rows


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    """A saved tiny model: DPO loads its reference from the policy's own checkpoint directory."""
    from tiny_lm import tiny_model, tiny_tokenizer

    directory = tmp_path_factory.mktemp("tiny_model")
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def real_trainer(method: str, dataset: datasets.Dataset, model_dir: Path, out: Path, max_length: int = MAX_LENGTH):
    """The project's TRL trainer for ``method`` on a tiny model, built (datasets prepared) but not trained."""
    from transformers import AutoModelForCausalLM

    from ift.train.arguments import training_kwargs
    from ift.train.trainers import build_trainer
    from tiny_lm import tiny_tokenizer

    common = training_kwargs({"device": "cpu", "logging_steps": 1},
                             {"num_train_epochs": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-3},
                             output_dir=out / method, seed=0, run_name=method, report_to="none")
    keys = {"dpo": {"beta": 0.1}, "orpo": {"beta": 0.1}, "simpo": {"beta": 2.0, "gamma_beta_ratio": 0.8},
            "tdpo": {"beta": 0.1, "variant": "tdpo2", "alpha": 0.5}}
    node = {"name": method, **keys.get(method, {})}
    return build_trainer(node, model=AutoModelForCausalLM.from_pretrained(model_dir), tokenizer=tiny_tokenizer(),
                         dataset=dataset, common_args=common, max_length=max_length)


def rows_trained_on(method: str, trainer) -> set[str]:
    """prompt_ids the built trainer will train on: what SFT/DPO kept, ORPO's and CPO's rows with a label on both
    sides."""
    prepared = trainer.train_dataset
    if method not in ("orpo", "simpo"):
        return set(prepared["prompt_id"])
    return {
        row["prompt_id"] for row in prepared
        if any(t != -100 for t in row["chosen_labels"]) and any(t != -100 for t in row["rejected_labels"])
    }


@pytest.mark.parametrize("method", ["sft", "ift", "dpo", "orpo", "simpo", "tdpo"])
def test_the_rows_counted_as_not_fitting_are_exactly_the_rows_trl_leaves_untrained(method, saved_tiny, tmp_path):
    from tiny_lm import tiny_tokenizer

    kind = "pairs" if METHODS[method].data == "pairs" else "completion"
    rows = trl_rows(kind, range(0, 9))
    features = PREFERENCE_FEATURES if kind == "pairs" else PROMPT_COMPLETION_FEATURES
    trainer = real_trainer(method, datasets.Dataset.from_list(rows, features=features), saved_tiny, tmp_path)
    trained = rows_trained_on(method, trainer)
    predicted = {
        row["prompt_id"] for row in rows
        if fit_defect(tiny_tokenizer(), row, METHODS[method].tokenised_as, MAX_LENGTH) is None
    }
    assert predicted == trained
    assert 0 < len(trained) < len(rows)  # the boundary lies inside the rows



@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_a_pair_trainer_trains_nothing_on_an_empty_answer_and_the_row_is_counted(method, saved_tiny, tmp_path):
    """Text rows, which no chat template ends: ORPO and SimPO add no EOS of their own, so an empty answer has no
    token (a NaN mean log-prob); the row is predicted not to fit whatever max_length is."""
    from tiny_lm import tiny_tokenizer

    rows = [{"prompt_id": "empty", "prompt": "what color is the zorb ?", "chosen": "", "rejected": " red ."},
            {"prompt_id": "both", "prompt": "what color is the zorb ?", "chosen": " blue .", "rejected": " red ."}]
    trainer = real_trainer(method, datasets.Dataset.from_list(rows), saved_tiny, tmp_path)
    assert rows_trained_on(method, trainer) == {"both"}
    defects = [fit_defect(tiny_tokenizer(), row, METHODS[method].tokenised_as, 1000) for row in rows]
    assert defects[1] is None and "the answer adds no token" in defects[0].detail


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_a_prompt_token_merged_into_one_answer_starts_both_answers_where_the_prompt_first_diverges(method, saved_tiny,
                                                                                                  tmp_path):
    """DPO's rule, in ORPO and SimPO too: "the" + "zorb" tokenises as one word ("<unk>"), so the prompt's last token
    belongs to the chosen answer, and to the rejected one as well (one prompt for both)."""
    from tiny_lm import tiny_tokenizer

    tok = tiny_tokenizer()
    row = {"prompt_id": "merged", "prompt": "what color is the", "chosen": "zorb .", "rejected": " red ."}
    assert first_answer_token(tok, row, METHODS[method].tokenised_as) == 3
    [prepared] = real_trainer(method, datasets.Dataset.from_list([row]), saved_tiny, tmp_path).train_dataset
    labels = {side: tok.convert_ids_to_tokens([t for t in prepared[f"{side}_labels"] if t != -100])
              for side in ("chosen", "rejected")}
    assert labels == {"chosen": ["<unk>", "."], "rejected": ["the", "red", "."]}
    assert tok.convert_ids_to_tokens(prepared["prompt_input_ids"]) == ["what", "color", "is"]

def world_files(tmp_path: Path, prompt_lengths: list[int], extra_prefs: list[dict] = ()) -> DataConfig:
    """Chat and preference JSONL files in the hub schemas whose prompts have the given extra lengths."""
    chat = [chat_row(_question(k), "the zorb is red .", prompt_id=f"c{i}") for i, k in enumerate(prompt_lengths)]
    prefs = [{**pref_row(_question(k), "the zorb is red .", "the zorb is blue big ."), "prompt_id": f"p{i}"}
             for i, k in enumerate(prompt_lengths)]
    return DataConfig(chat_train=DataSource(str(write_jsonl(tmp_path / "chat.jsonl", chat)), "train"),
                      prefs_train=DataSource(str(write_jsonl(tmp_path / "prefs.jsonl", prefs + list(extra_prefs))),
                                             "train"))


@pytest.mark.parametrize("method", ["sft", "dpo", "orpo"])
def test_data_json_counts_every_row_the_trainer_would_not_see_and_the_trainer_sees_the_rest(method, saved_tiny,
                                                                                           tmp_path):
    from dataclasses import replace

    from tiny_lm import tiny_tokenizer

    lengths = [0, 1, 2, 3, 9, 0, 1, 12, 2, 3]  # 4 + 9 and 4 + 12 do not fit (9 + k >= 14); 10 % of each part
    config = replace(world_files(tmp_path, lengths), on_error="raise")  # the tiny profile's mode: still counted
    data = training_data(METHODS[method], "base", config, seed=0, tokenizer=tiny_tokenizer(), max_length=MAX_LENGTH)
    summary = json.loads(json.dumps(data.summary()))
    for part, report in summary["skips"].items():
        assert report["skipped"] == {"prompt_fills_max_length": 2}, part
        assert report["rows_read"] == 10 and report["rows_kept"] == 8
        assert "max_length=14 leaves no answer token" in report["first_errors"]["prompt_fills_max_length"]
    assert summary["rows"] == 8 * len(summary["skips"])
    trainer = real_trainer(method, data.dataset, saved_tiny, tmp_path)
    assert len(trainer.train_dataset) == summary["rows"]  # TRL drops nothing more
    assert rows_trained_on(method, trainer) == set(data.dataset["prompt_id"])


def test_a_run_still_gets_n_rows_when_some_do_not_fit(tmp_path):
    from dataclasses import replace

    from tiny_lm import tiny_tokenizer

    config = replace(world_files(tmp_path, [0, 9, 1, 10, 2, 3, 0, 1]), n_prefs=6)  # 6 of 8 fit
    data = training_data(METHODS["dpo"], "base", config, seed=0, tokenizer=tiny_tokenizer(), max_length=MAX_LENGTH)
    report = data.reports["pairs"]
    assert len(data.dataset) == 6 and report.rows_kept == 6  # the walk went past the 2 rows that do not fit
    assert report.rows_read == 8 and report.skipped == {"prompt_fills_max_length": 2}


def test_nothing_is_reported_when_every_row_fits(tmp_path):
    """data.json on clean data is unchanged: a reason appears only when it occurred."""
    from tiny_lm import tiny_tokenizer

    data = training_data(METHODS["ift"], "base", world_files(tmp_path, [0, 1, 2]), seed=0, tokenizer=tiny_tokenizer(),
                         max_length=256)
    for report in data.summary()["skips"].values():
        assert report["skipped"] == {} and report["first_errors"] == {} and report["rows_skipped"] == 0


def test_too_many_rows_not_fitting_refuses_the_run_naming_max_length(tmp_path):
    from tiny_lm import tiny_tokenizer

    config = world_files(tmp_path, [0, 9, 10, 11, 12, 1])  # 4 of 6 do not fit
    with pytest.raises(DataError, match=r"67% of the rows are malformed or too long.*max_skip_fraction=0\.5"
                                        r".*prompt_fills_max_length.*max_length=14"):
        training_data(METHODS["sft"], "base", config, seed=0, tokenizer=tiny_tokenizer(), max_length=MAX_LENGTH)
    with pytest.raises(DataError, match=r"no usable rows .*'prompt_fills_max_length': 6.*max_length=8 leaves"):
        training_data(METHODS["orpo"], "base", config, seed=0, tokenizer=tiny_tokenizer(), max_length=8)


def test_the_train_app_refuses_a_max_length_no_prompt_fits_naming_max_length(tmp_path, monkeypatch):
    """Through the train app (paper profile, fixtures for the hub data, a tiny stand-in model): before, TRL
    dropped every row and the Trainer failed with num_samples=0."""
    import ift.train.cell as app
    from conftest import REPO_ROOT
    from tiny_lm import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    stand_in = tmp_path / "stand-in"
    tiny_model(tok).save_pretrained(stand_in)
    tok.save_pretrained(stand_in)
    fixtures = REPO_ROOT / "tests" / "fixtures"
    cfg = compose(["profile=paper", "method=dpo", "start=base", "logger=none", f"start_checkpoints.base={stand_in}",
                   f"data.prefs_train.source={fixtures / 'ultrafeedback_binarized'}", "data.n_prefs=4",
                   "trainer.finetune.max_length=8"], root=tmp_path)
    monkeypatch.setattr("ift.train.trainers.build_trainer", lambda *a, **k: pytest.fail("trainer was built"))
    with pytest.raises(DataError, match=r"no usable rows.*prompt_fills_max_length.*max_length=8"):
        app.run_training(cfg)


HUGE = 100_000  # characters


@pytest.mark.parametrize("method", ["sft", "dpo", "orpo"])
def test_a_100k_character_prompt_is_skipped_and_counted_never_an_oversized_sequence(method, saved_tiny, tmp_path):
    from tiny_lm import tiny_tokenizer

    huge = pref_row("what color is the zorb" + " big" * (HUGE // 4) + " ?", "the zorb is red .", "the zorb is blue .")
    config = world_files(tmp_path, [0, 1, 2, 3, 0, 1, 2, 3], extra_prefs=[{**huge, "prompt_id": "huge"}])
    data = training_data(METHODS[method], "sft_beta", config, seed=0, tokenizer=tiny_tokenizer(), max_length=64)
    part = "pairs" if method in ("dpo", "orpo") else "chosen"
    report = data.reports[part]
    assert report.skipped == {"prompt_fills_max_length": 1} and report.first_rows == {"prompt_fills_max_length": [8]}
    assert "huge" not in data.dataset["prompt_id"] and len(data.dataset) == 8
    trainer = real_trainer(method, data.dataset, saved_tiny, tmp_path, max_length=64)
    prepared = trainer.train_dataset
    columns = ["chosen_input_ids", "rejected_input_ids"] if method == "orpo" else (
        ["input_ids"] if method == "sft" else ["prompt_ids"])
    assert max(len(ids) for column in columns for ids in prepared[column]) <= 64
    assert len(prepared) == 8


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
