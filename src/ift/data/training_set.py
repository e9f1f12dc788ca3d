"""The paper's data use per (method, start point): which rows each training run sees, in which format.

From the base model (``start=base``):
- ``sft`` / ``ift``: ``n_chat`` UltraChat conversations (last answer as target) plus ``n_prefs`` UltraFeedback
  chosen answers, shuffled together (2N targets when n_chat == n_prefs == N);
- ``dpo`` / ``orpo``: the ``n_prefs`` UltraFeedback preference pairs;
- the SFT+DPO baseline is two runs (ift.methods: sft_dpo's halves): SFT on the chat rows only (``targets: chat``),
  then DPO on the preference pairs starting from that checkpoint (the train app's ``init_from``).
From mistral-7b-sft-beta (``start=sft_beta``, already SFT-ed on UltraChat):
- ``sft`` / ``ift``: the UltraFeedback chosen answers only; ``dpo`` / ``orpo``: the preference pairs.
The tiny profile builds its own sft_beta by SFT on every chat row (:func:`load_chat_for_sft`).

The UltraFeedback rows are the same for every method at a given seed (same permutation, same checks), so
methods differ only in how they use the rows, not in which rows they see, as long as every row fits the run's
``max_length``: a row whose prompt leaves the method's trainer no answer token is skipped and counted
(``prompt_fills_max_length``, :mod:`ift.data.fit`) and the walk goes on to the next row, so a run still gets
``n`` rows, all of which the trainer trains on. Everything here takes plain
values (paths, ids, sizes, seed), so it is testable without Hydra; :meth:`DataConfig.from_mapping` reads
the ``data`` config node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import datasets

from ift.data.fit import SFT, row_fit
from ift.data.format import (
    PREFERENCE_FEATURES,
    PROMPT_COMPLETION_FEATURES,
    chosen_as_completion,
    to_preference,
    to_prompt_completion,
)
from ift.data.row_checks import CHAT, PREFERENCE, SkipReport, Validation
from ift.data.source import DataSource, load_examples

# The parts a training set is made of.
CHAT_ANSWERS = "chat"  # UltraChat: last assistant answer as completion, earlier turns as prompt
CHOSEN_ANSWERS = "chosen"  # UltraFeedback: the chosen answer as completion
PREFERENCE_PAIRS = "pairs"  # UltraFeedback: prompt, chosen answer, rejected answer

# Which answers an sft/ift run trains on (``targets``), and the paper's choice per start point.
TARGETS = {
    "chat+chosen": (CHAT_ANSWERS, CHOSEN_ANSWERS),
    "chat": (CHAT_ANSWERS,),
    "chosen": (CHOSEN_ANSWERS,),
}
DEFAULT_TARGETS = {"base": "chat+chosen", "sft_beta": "chosen"}


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` config node as plain values: sources, sizes (None = all rows) and the row policy."""

    chat_train: DataSource
    prefs_train: DataSource
    chat_test: DataSource | None = None
    prefs_test: DataSource | None = None
    n_chat: int | None = None
    n_prefs: int | None = None
    max_prompt_tokens: int | None = None
    on_error: str = "skip"
    max_skip_fraction: float = 0.5

    @classmethod
    def from_mapping(cls, node: Mapping[str, Any]) -> DataConfig:
        """Read a config node (dict or OmegaConf DictConfig); other keys are ignored.

        A source is either a file path (the miniature world: the split is named after the key, ``train`` or
        ``test``) or a mapping ``{source: <hub id or dir>, split: <split>}`` (the hub datasets).
        """

        def source(key: str) -> DataSource | None:
            value = node.get(key)
            if value is None:
                return None
            if isinstance(value, Mapping):
                return DataSource(source=str(value["source"]), split=str(value["split"]))
            return DataSource(source=str(value), split=key.rsplit("_", 1)[1])

        def optional_int(key: str) -> int | None:
            value = node.get(key)
            return None if value is None else int(value)

        chat_train, prefs_train = source("chat_train"), source("prefs_train")
        if chat_train is None or prefs_train is None:
            raise ValueError(f"the data config needs chat_train and prefs_train, got keys {sorted(node)}")
        return cls(
            chat_train=chat_train,
            prefs_train=prefs_train,
            chat_test=source("chat_test"),
            prefs_test=source("prefs_test"),
            n_chat=optional_int("n_chat"),
            n_prefs=optional_int("n_prefs"),
            max_prompt_tokens=optional_int("max_prompt_tokens"),
            on_error=str(node.get("on_error", cls.on_error)),
            max_skip_fraction=float(node.get("max_skip_fraction", cls.max_skip_fraction)),
        )

    def validation(self, tokenizer: Any = None) -> Validation:
        return Validation(
            on_error=self.on_error,
            max_skip_fraction=self.max_skip_fraction,
            tokenizer=tokenizer,
            max_prompt_tokens=self.max_prompt_tokens,
        )


@dataclass(frozen=True)
class _Part:
    """How one part is read: from which configured source, in which schema, how many rows, formatted how."""

    source_key: str
    schema: str
    size_key: str
    formatter: Callable[[Mapping[str, Any]], dict[str, Any]]
    features: datasets.Features


PARTS = {
    CHAT_ANSWERS: _Part("chat_train", CHAT, "n_chat", to_prompt_completion, PROMPT_COMPLETION_FEATURES),
    CHOSEN_ANSWERS: _Part(
        "prefs_train", PREFERENCE, "n_prefs", chosen_as_completion, PROMPT_COMPLETION_FEATURES
    ),
    PREFERENCE_PAIRS: _Part("prefs_train", PREFERENCE, "n_prefs", to_preference, PREFERENCE_FEATURES),
}


class RunMethod(Protocol):
    """What the data path needs of a method; ift.methods declares it (the data layer does not import it)."""

    name: str
    data: str  # "answers": prompt -> one target answer | "pairs": prompt, chosen, rejected
    tokenised_as: str  # the TRL trainer whose tokenisation cuts its rows (ift.data.fit)
    trainer: str | None  # None: a sequence of other methods' runs, which load their own data


def data_plan(method: RunMethod, start: str, targets: str | None = None) -> tuple[str, ...]:
    """The parts of the training set of one run; ``targets`` overrides the paper's choice for sft/ift."""
    if method.trainer is None or method.data not in ("answers", "pairs"):
        raise ValueError(f"method {method.name!r} is not one training run on answers or pairs")
    if start not in DEFAULT_TARGETS:
        raise ValueError(f"unknown start {start!r}; expected one of {tuple(DEFAULT_TARGETS)}")
    if method.data == "pairs":
        if targets is not None:
            raise ValueError(
                f"targets={targets!r} applies to sft/ift only; {method.name} trains on preference pairs"
            )
        return (PREFERENCE_PAIRS,)
    chosen_targets = DEFAULT_TARGETS[start] if targets is None else targets
    if chosen_targets not in TARGETS:
        raise ValueError(f"unknown targets {chosen_targets!r}; expected one of {tuple(TARGETS)}")
    return TARGETS[chosen_targets]


@dataclass
class TrainingData:
    """A run's training set in TRL conversational format, with what went into it and what was dropped.

    ``dataset`` has columns ``prompt_id, prompt, completion`` (sft/ift) or ``prompt_id, prompt, chosen,
    rejected`` (the preference methods). ``part_sizes`` and ``reports`` are keyed by part (``chat``, ``chosen``, ``pairs``).
    """

    method: str
    start: str
    parts: tuple[str, ...]
    dataset: datasets.Dataset
    part_sizes: dict[str, int]
    reports: dict[str, SkipReport]

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the composition, for the run directory."""
        return {
            "method": self.method,
            "start": self.start,
            "parts": list(self.parts),
            "rows": len(self.dataset),
            "part_sizes": dict(self.part_sizes),
            "skips": {part: report.to_dict() for part, report in self.reports.items()},
        }


def _fitting(validation: Validation, part: _Part, trainer: str | None, max_length: int | None) -> Validation:
    """``validation`` plus the check that ``trainer`` keeps an answer token of each row under ``max_length``
    (needs the tokenizer; without one, or without a trainer or limit, rows are not checked for fit)."""
    if validation.tokenizer is None or trainer is None or max_length is None:
        return validation
    field = "messages" if part.schema == CHAT else "chosen"
    return replace(validation, fit=row_fit(validation.tokenizer, trainer, max_length, part.formatter, field))


def _formatted_part(
    part_name: str,
    config: DataConfig,
    seed: int,
    validation: Validation,
    cache_dir: str | None,
    n: int | None,
) -> tuple[datasets.Dataset, SkipReport]:
    """One part's validated rows (``n`` drawn with ``seed``) in its TRL format."""
    part = PARTS[part_name]
    rows, report = load_examples(
        getattr(config, part.source_key),
        part.schema,
        n=n,
        seed=seed,
        validation=validation,
        cache_dir=cache_dir,
    )
    return rows.map(part.formatter, remove_columns=rows.column_names, features=part.features), report


def training_data(
    method: RunMethod,
    start: str,
    config: DataConfig,
    seed: int,
    *,
    tokenizer: Any = None,
    targets: str | None = None,
    cache_dir: str | None = None,
    max_length: int | None = None,
) -> TrainingData:
    """The training set of one run: each part's validated rows, formatted, concatenated and shuffled (seeded).

    ``tokenizer`` enables the prompt-length check (``config.max_prompt_tokens``) and, with ``max_length`` (the
    trainer's), the check that the method's trainer keeps an answer token of every row (:mod:`ift.data.fit`).
    """
    parts = data_plan(method, start, targets)
    validation = config.validation(tokenizer)
    pieces, part_sizes, reports = [], {}, {}
    for part_name in parts:
        size = getattr(config, PARTS[part_name].size_key)
        part_validation = _fitting(validation, PARTS[part_name], method.tokenised_as, max_length)
        piece, reports[part_name] = _formatted_part(
            part_name, config, seed, part_validation, cache_dir, n=size
        )
        pieces.append(piece)
        part_sizes[part_name] = len(piece)
    dataset = datasets.concatenate_datasets(pieces).shuffle(seed=seed)
    return TrainingData(method.name, start, parts, dataset, part_sizes, reports)


def load_chat_for_sft(
    config: DataConfig | Mapping[str, Any],
    *,
    tokenizer: Any = None,
    seed: int = 0,
    n: int | None = None,
    cache_dir: str | None = None,
    max_length: int | None = None,
) -> tuple[datasets.Dataset, SkipReport]:
    """Chat rows as prompt/completion for building the tiny profile's ``sft_beta`` start point.

    The paper's mistral-7b-sft-beta is Mistral-7B SFT-ed on UltraChat; its miniature counterpart is the base
    model SFT-ed on every chat train row (``n=None``) of the world. Accepts the ``data`` config node as is.
    ``max_length`` (the SFT recipe's) skips and counts rows the SFTTrainer would drop, as for a grid cell.
    """
    if not isinstance(config, DataConfig):
        config = DataConfig.from_mapping(config)
    validation = _fitting(config.validation(tokenizer), PARTS[CHAT_ANSWERS], SFT, max_length)
    dataset, report = _formatted_part(CHAT_ANSWERS, config, seed, validation, cache_dir, n=n)
    return dataset.shuffle(seed=seed), report
