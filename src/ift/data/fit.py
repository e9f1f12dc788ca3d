"""Rows a TRL trainer would train on nothing under the run's ``max_length``, found before it sees them.

Every trainer renders a row with the chat template, tokenises it and cuts it to ``max_length`` tokens,
keeping the start (TRL's default ``truncation_mode="keep_start"``). When the prompt alone fills
``max_length``, no answer token is left, and TRL 1.16 then does one of three things, none of which the
data report would show:

- ``SFTTrainer`` (sft, ift, the SFT half of sft_dpo, sft_beta) drops the row ("Dropping fully masked
  examples"): the run has fewer rows and steps than ``data.json`` says (25 steps instead of 32 at
  ``max_length=40`` in the smoke profile), and when no row is left the Trainer fails with
  ``num_samples=0``, which does not name ``max_length``;
- ``DPOTrainer`` drops the row likewise ("Dropping fully truncated examples");
- ``ORPOTrainer`` (``trl.experimental``) never cuts the prompt, only the answers (to ``max_length`` minus
  the prompt, here to nothing): a 100k-character prompt becomes a ~100k-token sequence whose forward pass
  asks for tens of GB, and an empty answer has a NaN mean log-prob. ``CPOTrainer`` (simpo) has the same
  ``tokenize_row``. Ours (ift.train.trainers.TemplatePairTokens, for orpo and simpo alike) keep that cut
  but split the row as DPO does (:func:`rendered_pair_ids`), adding no BOS and no EOS of their own.

The declared treatment, for every trainer alike: such a row is skipped before training and counted as
``prompt_fills_max_length``. The prompt is never truncated (cutting its start would train an answer on a
question it no longer answers). :func:`first_answer_token` says where each trainer puts the first trained
answer token, by the same tokenisation as TRL 1.16 (``SFTTrainer._prepare_dataset``,
``DPOTrainer._prepare_dataset``) and as our ORPO and SimPO trainers (:func:`rendered_pair_ids`);
tests/ift/data/test_row_fit_and_types.py checks it against the real trainers. A row that fits but whose
answer is cut short is trained on what fits, as TRL does, and is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ift.data.row_checks import Defect

PROMPT_FILLS_MAX_LENGTH = "prompt_fills_max_length"
FIT_REASONS = (PROMPT_FILLS_MAX_LENGTH,)

SFT, DPO, ORPO, CPO = "sft", "dpo", "orpo", "cpo"  # the trainers whose tokenisation cuts a row (ift.methods:
                                                   # tokenised_as); CPO's is ORPO's (one tokenize_row)


def common_prefix_length(ids: Sequence[int], other_ids: Sequence[int]) -> int:
    """Leading tokens two sequences share (TRL: the answer starts where prompt and prompt+answer diverge)."""
    length = 0
    for token, other in zip(ids, other_ids):
        if token != other:
            break
        length += 1
    return length


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list:
    """Token ids of chat-templated messages, called as TRL's ``_tokenize`` calls it for conversations."""
    return tokenizer.apply_chat_template(
        messages, tools=None, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )["input_ids"]


def _sft_first_answer_token(tokenizer: Any, row: Mapping[str, Any]) -> int | None:
    """SFTTrainer: labels start after the common prefix of the prompt (with the generation prompt) and
    prompt+answer; None when the answer adds no token (TRL drops that row whatever ``max_length`` is)."""
    prompt_ids = _chat_ids(tokenizer, row["prompt"], add_generation_prompt=True)
    full_ids = _chat_ids(tokenizer, row["prompt"] + row["completion"])
    start = common_prefix_length(prompt_ids, full_ids)
    return start if start < len(full_ids) else None


def _dpo_first_answer_token(tokenizer: Any, row: Mapping[str, Any]) -> int:
    """DPOTrainer: the prompt is the shorter common prefix with prompt+chosen and prompt+rejected."""
    prompt_ids = _chat_ids(tokenizer, row["prompt"], add_generation_prompt=True)
    return min(
        common_prefix_length(prompt_ids, _chat_ids(tokenizer, row["prompt"] + row[answer]))
        for answer in ("chosen", "rejected")
    )


def rendered_pair_ids(tokenizer: Any, prompt: str, chosen: str, rejected: str) -> tuple[int, list, list]:
    """A preference row rendered to text (TRL's ``maybe_apply_chat_template``: the prompt, and each answer as the
    chat template continues it) tokenised as DPOTrainer tokenises the conversation: ``prompt + answer`` exactly as
    rendered (the chat template's tokenisation, ``add_special_tokens=False``: no BOS, no EOS added), the answers
    starting where the tokenised prompt and either prompt+answer first diverge. Returns (prompt length, the
    prompt+chosen ids, the prompt+rejected ids). ORPO's and SimPO's trainers use it (their ``tokenize_row``)."""

    def ids(text: str) -> list:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt_ids, chosen_ids, rejected_ids = ids(prompt), ids(prompt + chosen), ids(prompt + rejected)
    start = min(common_prefix_length(prompt_ids, chosen_ids), common_prefix_length(prompt_ids, rejected_ids))
    return start, chosen_ids, rejected_ids


def _pair_first_answer_token(tokenizer: Any, row: Mapping[str, Any]) -> int | None:
    """ORPO and SimPO (TRL's ORPOTrainer and CPOTrainer with our ``tokenize_row``): TRL renders the row to text
    with its own ``maybe_apply_chat_template``, :func:`rendered_pair_ids` splits it; each answer is cut to
    ``max_length`` minus the prompt (never the prompt). None when an answer adds no token (its mean log-prob
    would be NaN whatever ``max_length`` is)."""
    from trl.data_utils import maybe_apply_chat_template

    text = maybe_apply_chat_template(
        {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}, tokenizer
    )
    start, *sides = rendered_pair_ids(tokenizer, text["prompt"], text["chosen"], text["rejected"])
    return None if any(len(ids) <= start for ids in sides) else start


FIRST_ANSWER_TOKEN = {
    SFT: _sft_first_answer_token,
    DPO: _dpo_first_answer_token,
    ORPO: _pair_first_answer_token,
    CPO: _pair_first_answer_token,
}


def _check_trainer(trainer: str) -> None:
    if trainer not in FIRST_ANSWER_TOKEN:
        raise ValueError(f"unknown trainer {trainer!r}; expected one of {tuple(FIRST_ANSWER_TOKEN)}")


def first_answer_token(tokenizer: Any, row: Mapping[str, Any], trainer: str) -> int | None:
    """Position of the first trained answer token in ``trainer``'s uncut sequence of a TRL-format row
    (prompt/completion for sft, prompt/chosen/rejected for dpo, orpo and cpo); None if it has no answer token."""
    _check_trainer(trainer)
    return FIRST_ANSWER_TOKEN[trainer](tokenizer, row)


def fit_defect(
    tokenizer: Any, row: Mapping[str, Any], trainer: str, max_length: int, field: str = "prompt"
) -> Defect | None:
    """``prompt_fills_max_length`` when cutting to ``max_length`` leaves ``trainer`` no answer token of the
    row; ``field`` names where the prompt turns are in the source row."""
    position = first_answer_token(tokenizer, row, trainer)
    if position is not None and position < max_length:
        return None
    if position is None:
        where = "the answer adds no token after the prompt"
    else:
        where = f"{position} prompt tokens come before the answer"
    return Defect(
        PROMPT_FILLS_MAX_LENGTH,
        field,
        f"as the {trainer} trainer tokenizes the row, {where}, so max_length={max_length} leaves no answer "
        "token to train on",
    )


def row_fit(
    tokenizer: Any,
    trainer: str,
    max_length: int,
    formatter: Callable[[Mapping[str, Any]], dict],
    field: str,
) -> Callable[[Mapping[str, Any]], Defect | None]:
    """The ``Validation.fit`` check of one part: format a validated hub-schema row as the trainer gets it,
    then :func:`fit_defect`. The settings are checked here, once, rather than at the first row."""
    _check_trainer(trainer)
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")

    def fit(row: Mapping[str, Any]) -> Defect | None:
        return fit_defect(tokenizer, formatter(row), trainer, max_length, field)

    return fit
