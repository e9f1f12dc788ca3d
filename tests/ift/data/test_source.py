"""ift.data.source: loading the hub schemas through one load_dataset path, and seeded subsets.

References are independent of the code under test: rows are read back with the ``json`` module, subsets
are recomputed from numpy's permutation, validity is decided by a naive checker written from the schema
description, token counts are computed by hand for a word-level tokenizer.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import datasets  # conftest.py imports ift first, which sets the offline defaults
import numpy as np
import pytest
from data_helpers import (
    FIXTURES,
    MALFORMED,
    MALFORMED_FILES,
    ULTRACHAT,
    ULTRAFEEDBACK,
    WORLD,
    hub_rows,
    read_jsonl,
)

from ift.data import (
    CHAT,
    PREFERENCE,
    DataError,
    DataSource,
    load_examples,
    load_source,
    load_split,
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
