"""Data layer: hub-schema rows in, validated TRL conversational datasets out.

Read top-down: :mod:`~ift.data.source` loads a split (hub id or hub-like dir through
``datasets.load_dataset``, a JSONL file row by row as written) and draws seeded subsets;
:mod:`~ift.data.row_checks` checks each row of the UltraChat-200k / UltraFeedback-binarized schemas and skips
or raises; :mod:`~ift.data.fit` finds the rows a trainer would train on nothing under the run's
``max_length``; :mod:`~ift.data.format` turns rows into TRL prompt/completion or preference rows;
:mod:`~ift.data.training_set` says which rows each (method, start point) of the paper trains on.
"""

from ift.data.errors import DataError
from ift.data.fit import FIT_REASONS, PROMPT_FILLS_MAX_LENGTH, first_answer_token
from ift.data.format import chosen_as_completion, plain_messages, to_preference, to_prompt_completion
from ift.data.row_checks import CHAT, DEFECT_KINDS, PREFERENCE, SkipReport, Validation, select_valid
from ift.data.source import DataSource, load_examples, load_source, load_split, read_json_rows, seeded_order
from ift.data.training_set import (
    DEFAULT_TARGETS,
    TARGETS,
    DataConfig,
    TrainingData,
    data_plan,
    load_chat_for_sft,
    training_data,
)

__all__ = [
    "CHAT",
    "DEFAULT_TARGETS",
    "DEFECT_KINDS",
    "FIT_REASONS",
    "PREFERENCE",
    "PROMPT_FILLS_MAX_LENGTH",
    "TARGETS",
    "DataConfig",
    "DataError",
    "DataSource",
    "SkipReport",
    "TrainingData",
    "Validation",
    "chosen_as_completion",
    "data_plan",
    "first_answer_token",
    "load_chat_for_sft",
    "load_examples",
    "load_source",
    "load_split",
    "plain_messages",
    "read_json_rows",
    "seeded_order",
    "select_valid",
    "to_preference",
    "to_prompt_completion",
    "training_data",
]
