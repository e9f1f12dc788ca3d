"""Validated hub-schema rows -> the conversational formats TRL trainers take.

The paper trains on the LAST assistant message of a conversation, with every earlier turn (an optional
system message included) as the prompt. TRL's conversational formats express exactly that:

- prompt/completion (SFTTrainer, and IFT, which trains on the same targets):
  ``{"prompt": [...earlier turns], "completion": [last assistant message]}``
- preference (DPOTrainer, ORPOTrainer):
  ``{"prompt": [...earlier turns], "chosen": [chosen answer], "rejected": [rejected answer]}``

``prompt_id`` is carried through so that rows can be traced back to the source and deduplicated.
These functions assume a row that passed :mod:`ift.data.row_checks`; they do not re-check it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets

Message = dict[str, str]

# Column types of the formatted datasets, stated rather than inferred: rows from a source with mixed JSON
# types (some malformed rows dropped) would otherwise carry those loose types into the training set.
MESSAGE_LIST = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
PROMPT_COMPLETION_FEATURES = datasets.Features(
    {"prompt_id": datasets.Value("string"), "prompt": MESSAGE_LIST, "completion": MESSAGE_LIST}
)
PREFERENCE_FEATURES = datasets.Features(
    {
        "prompt_id": datasets.Value("string"),
        "prompt": MESSAGE_LIST,
        "chosen": MESSAGE_LIST,
        "rejected": MESSAGE_LIST,
    }
)


def plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Only ``role`` and ``content`` of each message.

    Arrow unifies the keys of all messages in a column, so a message can come back with extra keys set to
    None (e.g. ``name``); chat templates must not see those, and two sources must give identical features
    to be concatenated.
    """
    return [{"role": message["role"], "content": message["content"]} for message in messages]


def to_prompt_completion(row: Mapping[str, Any]) -> dict[str, Any]:
    """A single-target row (UltraChat schema) as TRL prompt/completion: all earlier turns -> last answer."""
    messages = plain_messages(row["messages"])
    return {"prompt_id": row["prompt_id"], "prompt": messages[:-1], "completion": messages[-1:]}


def chosen_as_completion(row: Mapping[str, Any]) -> dict[str, Any]:
    """A preference row's chosen answer as prompt/completion: SFT/IFT on the UltraFeedback chosen answers."""
    return to_prompt_completion({"prompt_id": row["prompt_id"], "messages": row["chosen"]})


def to_preference(row: Mapping[str, Any]) -> dict[str, Any]:
    """A preference row as TRL preference format; the prompt turns are shared, so take them from chosen."""
    chosen = plain_messages(row["chosen"])
    rejected = plain_messages(row["rejected"])
    return {
        "prompt_id": row["prompt_id"],
        "prompt": chosen[:-1],
        "chosen": chosen[-1:],
        "rejected": rejected[-1:],
    }
