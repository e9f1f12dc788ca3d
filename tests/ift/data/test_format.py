"""ift.data.format: chat and preference rows into TRL's conversational format.

References are independent of the code under test: rows are read back with the ``json`` module, subsets
are recomputed from numpy's permutation, validity is decided by a naive checker written from the schema
description, token counts are computed by hand for a word-level tokenizer.
"""

from __future__ import annotations

from data_helpers import (
    ULTRACHAT,
    WORLD,
    hub_rows,
    read_jsonl,
)

from ift.data import (
    chosen_as_completion,
    to_preference,
    to_prompt_completion,
)

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
