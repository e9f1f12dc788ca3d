"""ift.data.training_set: which rows each (method, start) trains on, and the data config nodes.

References are independent of the code under test: rows are read back with the ``json`` module, subsets
are recomputed from numpy's permutation, validity is decided by a naive checker written from the schema
description, token counts are computed by hand for a word-level tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from data_helpers import (
    MALFORMED,
    REPO_ROOT,
    SHARD,
    ULTRACHAT,
    ULTRAFEEDBACK,
    WORLD,
    config_for,
    hub_rows,
    read_jsonl,
)
from omegaconf import OmegaConf

from conftest import CONF_DIR
from ift.data import (
    DataConfig,
    DataSource,
    data_plan,
    load_chat_for_sft,
    to_prompt_completion,
    training_data,
)
from ift.methods import METHODS

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
