"""Per-row validation of the two hub schemas, with a skip-or-raise policy and a report of what was dropped.

Both profiles read the same two schemas (those of HuggingFaceH4/ultrachat_200k and
HuggingFaceH4/ultrafeedback_binarized), so one set of checks guards the paper data and the miniature world.
A malformed row is never trained on: either the run stops at it (``on_error="raise"``) or it is dropped and
counted per kind of defect (``on_error="skip"``), one log line per kind, and the counts go into a
:class:`SkipReport` that the train app can write next to the results.

Checks, in the order they are reported (the first defect of a row names it):
``missing_field`` (absent or null), ``bad_type`` (non-string text, non-dict message, non-list messages),
``unknown_role``, ``role_order`` (optional leading system, then user/assistant alternating, ending with
an assistant answer), ``empty_answer`` (the trained answer is blank), ``empty_turn`` (a user message or an
earlier assistant answer is blank: the answer would be trained on a conversation that lost a turn; a blank
system message stands for no instruction and is kept), and for preference rows ``prompt_mismatch`` (chosen
and rejected differ before the answer), ``bad_score`` (non-numeric score) and ``inverted_preference``
(score_chosen < score_rejected: the pair's own scores say the rejected answer is better, so DPO/ORPO would
push toward the worse one; a tie is kept, as UltraFeedback-binarized has ties); last ``prompt_too_long``
(chat-templated prompt tokens), only when a tokenizer and a limit are given.

Those are defects of the row itself and follow ``on_error``. A well-formed row can still leave the trainer
nothing to train on under the run's ``max_length`` (``prompt_fills_max_length``, :mod:`ift.data.fit`); such
a row is skipped and counted in both modes, as it is not bad data but a limit of this run. Every skipped
row counts toward ``max_skip_fraction``, and the report lists only the reasons that occurred.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ift.data.errors import DataError
from ift.data.format import plain_messages

logger = logging.getLogger(__name__)

CHAT = "chat"  # single-target schema: prompt, prompt_id, messages
PREFERENCE = "preference"  # prompt, prompt_id, chosen, rejected, score_chosen, score_rejected
SCHEMAS = (CHAT, PREFERENCE)

MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
UNKNOWN_ROLE = "unknown_role"
ROLE_ORDER = "role_order"
EMPTY_ANSWER = "empty_answer"
EMPTY_TURN = "empty_turn"
PROMPT_MISMATCH = "prompt_mismatch"
BAD_SCORE = "bad_score"
INVERTED_PREFERENCE = "inverted_preference"
PROMPT_TOO_LONG = "prompt_too_long"
DEFECT_KINDS = (
    MISSING_FIELD,
    BAD_TYPE,
    UNKNOWN_ROLE,
    ROLE_ORDER,
    EMPTY_ANSWER,
    EMPTY_TURN,
    PROMPT_MISMATCH,
    BAD_SCORE,
    INVERTED_PREFERENCE,
    PROMPT_TOO_LONG,
)

ROLES = ("system", "user", "assistant")
ON_ERROR_CHOICES = ("skip", "raise")
FIRST_ROWS_KEPT_PER_KIND = 5  # how many offending row indices a report (and its log line) lists per kind


@dataclass(frozen=True)
class Defect:
    """What is wrong with one row: the kind (for counting), the field path and a human-readable detail."""

    kind: str
    field: str
    detail: str


@dataclass(frozen=True)
class Validation:
    """How strictly rows are checked and what happens to a bad one.

    ``max_prompt_tokens`` drops rows whose chat-templated prompt would leave no room for the answer;
    it needs ``tokenizer`` and is skipped without one. ``max_skip_fraction`` stops a run whose source is
    mostly broken (a wrong file, a schema change) or mostly too long for the run, instead of training on the
    few rows that survive. ``fit`` checks a well-formed row against the run's trainer and ``max_length``
    (:func:`ift.data.fit.row_fit`); the rows it rejects are skipped and counted whatever ``on_error`` says.
    """

    on_error: str = "skip"
    max_skip_fraction: float = 0.5
    tokenizer: Any = None
    max_prompt_tokens: int | None = None
    fit: Callable[[Mapping[str, Any]], Defect | None] | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {self.on_error!r}")
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be positive or None, got {self.max_prompt_tokens}")


@dataclass
class SkipReport:
    """What one source lost to validation: counts per defect kind and the first offending rows of each."""

    origin: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_rows: dict[str, list[int]] = field(default_factory=dict)
    first_errors: dict[str, str] = field(default_factory=dict)

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def record(self, row: int, defect: Defect, message: str) -> None:
        self.skipped[defect.kind] = self.skipped.get(defect.kind, 0) + 1
        rows = self.first_rows.setdefault(defect.kind, [])
        if len(rows) < FIRST_ROWS_KEPT_PER_KIND:
            rows.append(row)
        self.first_errors.setdefault(defect.kind, message)

    def summary_lines(self) -> list[str]:
        """One line per defect kind: count, first offending rows and the first full message."""
        return [
            f"{self.origin}: skipped {count} row(s) with {kind} (first rows {self.first_rows[kind]}); "
            f"first: {self.first_errors[kind]}"
            for kind, count in sorted(self.skipped.items())
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_skipped": self.rows_skipped,
            "skipped": dict(self.skipped),
            "first_rows": {kind: list(rows) for kind, rows in self.first_rows.items()},
            "first_errors": dict(self.first_errors),
        }


def _type_name(value: Any) -> str:
    return type(value).__name__


def _text_defect(value: Any, field_path: str) -> Defect | None:
    if value is None:
        return Defect(MISSING_FIELD, field_path, "missing or null")
    if not isinstance(value, str):
        return Defect(BAD_TYPE, field_path, f"expected a string, got {_type_name(value)}")
    return None


def _message_defect(message: Any, field_path: str) -> Defect | None:
    if not isinstance(message, Mapping):
        return Defect(BAD_TYPE, field_path, f"expected a message dict, got {_type_name(message)}")
    for key in ("role", "content"):
        defect = _text_defect(message.get(key), f"{field_path}.{key}")
        if defect:
            return defect
    if message["role"] not in ROLES:
        return Defect(UNKNOWN_ROLE, f"{field_path}.role", f"{message['role']!r} is not one of {ROLES}")
    return None


def _role_order_defect(messages: Sequence[Mapping[str, str]], field_path: str) -> Defect | None:
    """Optional leading system message, then user/assistant alternating, ending with an assistant answer."""
    roles = [message["role"] for message in messages]
    first_turn = 1 if roles[:1] == ["system"] else 0
    if len(roles) - first_turn < 2:
        return Defect(ROLE_ORDER, field_path, f"needs a user turn and an assistant answer, got roles {roles}")
    for position in range(first_turn, len(roles)):
        expected = "user" if (position - first_turn) % 2 == 0 else "assistant"
        if roles[position] != expected:
            return Defect(
                ROLE_ORDER,
                f"{field_path}[{position}].role",
                f"expected {expected!r}, got {roles[position]!r}",
            )
    if roles[-1] != "assistant":
        return Defect(
            ROLE_ORDER,
            f"{field_path}[{len(roles) - 1}].role",
            "the conversation must end with an assistant answer",
        )
    return None


def conversation_defect(messages: Any, field_path: str) -> Defect | None:
    """The first defect of a message list that should end in the answer to train on, or None."""
    if messages is None:
        return Defect(MISSING_FIELD, field_path, "missing or null")
    if not isinstance(messages, list):
        return Defect(BAD_TYPE, field_path, f"expected a list of messages, got {_type_name(messages)}")
    for position, message in enumerate(messages):
        defect = _message_defect(message, f"{field_path}[{position}]")
        if defect:
            return defect
    defect = _role_order_defect(messages, field_path)
    if defect:
        return defect
    if not messages[-1]["content"].strip():
        return Defect(
            EMPTY_ANSWER, f"{field_path}[{len(messages) - 1}].content", "the answer is empty or blank"
        )
    return _empty_turn_defect(messages[:-1], field_path)


def _empty_turn_defect(turns: Sequence[Mapping[str, str]], field_path: str) -> Defect | None:
    """A blank user message or earlier answer: the trained answer would follow a conversation missing a turn.

    A blank system message is not a defect: it gives no instruction, which is what having none means.
    """
    for position, message in enumerate(turns):
        if message["role"] != "system" and not message["content"].strip():
            detail = f"the {message['role']} turn is empty or blank"
            return Defect(EMPTY_TURN, f"{field_path}[{position}].content", detail)
    return None


def _same_prompt_defect(chosen: list[Mapping[str, str]], rejected: list[Mapping[str, str]]) -> Defect | None:
    """Chosen and rejected must answer the same prompt, or the pair compares answers to different questions."""
    chosen_prompt, rejected_prompt = plain_messages(chosen[:-1]), plain_messages(rejected[:-1])
    if chosen_prompt == rejected_prompt:
        return None
    if len(chosen_prompt) != len(rejected_prompt):
        detail = f"prompt has {len(rejected_prompt)} turn(s), chosen has {len(chosen_prompt)}"
        return Defect(PROMPT_MISMATCH, "rejected", detail)
    position = next(i for i, (c, r) in enumerate(zip(chosen_prompt, rejected_prompt)) if c != r)
    return Defect(PROMPT_MISMATCH, f"rejected[{position}]", "differs from the same prompt turn in chosen")


def _score_defect(value: Any, field_path: str) -> Defect | None:
    if value is None:
        return Defect(MISSING_FIELD, field_path, "missing or null")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return Defect(BAD_SCORE, field_path, f"expected a finite number, got {value!r} ({_type_name(value)})")
    return None


def _inverted_defect(score_chosen: float, score_rejected: float) -> Defect | None:
    """The pair's own scores rank the rejected answer higher: training on it pushes toward the worse one."""
    if score_chosen >= score_rejected:
        return None
    return Defect(
        INVERTED_PREFERENCE,
        "score_chosen",
        f"score_chosen={score_chosen!r} < score_rejected={score_rejected!r}: rejected is rated higher",
    )


def structural_defect(row: Any, schema: str) -> Defect | None:
    """The first schema defect of a row (everything except the prompt length), or None."""
    if not isinstance(row, Mapping):
        return Defect(BAD_TYPE, "<row>", f"expected a row dict, got {_type_name(row)}")
    defect = _text_defect(row.get("prompt"), "prompt") or _text_defect(row.get("prompt_id"), "prompt_id")
    if defect:
        return defect
    if schema == CHAT:
        return conversation_defect(row.get("messages"), "messages")
    if schema == PREFERENCE:
        return (
            conversation_defect(row.get("chosen"), "chosen")
            or conversation_defect(row.get("rejected"), "rejected")
            or _same_prompt_defect(row["chosen"], row["rejected"])
            or _score_defect(row.get("score_chosen"), "score_chosen")
            or _score_defect(row.get("score_rejected"), "score_rejected")
            or _inverted_defect(row["score_chosen"], row["score_rejected"])
        )
    raise ValueError(f"unknown schema {schema!r}; expected one of {SCHEMAS}")


def prompt_messages(row: Mapping[str, Any], schema: str) -> list[dict[str, str]]:
    """The turns before the trained answer (of a structurally valid row)."""
    return plain_messages(row["messages" if schema == CHAT else "chosen"][:-1])


def prompt_token_count(tokenizer: Any, prompt: list[dict[str, str]]) -> int:
    """Tokens the model sees before the answer: the chat-templated prompt with the generation prompt."""
    token_ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return len(token_ids)


def _length_defect(
    row: Mapping[str, Any], schema: str, validation: Validation, origin: str, index: int
) -> Defect | None:
    if validation.tokenizer is None or validation.max_prompt_tokens is None:
        return None
    try:
        count = prompt_token_count(validation.tokenizer, prompt_messages(row, schema))
    except Exception as error:
        # A template that rejects a schema-valid row is a tokenizer/config mismatch, not bad data: never skip it.
        raise DataError(
            f"{origin} row {index}: the tokenizer's chat template failed on the prompt: {error!r}",
            origin=origin,
            row=index,
        ) from error
    if count > validation.max_prompt_tokens:
        field_path = "messages" if schema == CHAT else "chosen"
        return Defect(
            PROMPT_TOO_LONG,
            field_path,
            f"prompt has {count} tokens > max_prompt_tokens={validation.max_prompt_tokens}",
        )
    return None


def select_valid(
    indexed_rows: Iterable[tuple[int, Any]],
    schema: str,
    origin: str,
    validation: Validation,
    want: int | None = None,
) -> tuple[list[int], SkipReport]:
    """Row indices that pass validation, in the order given, stopping once ``want`` rows are kept.

    ``indexed_rows`` pairs each row with its index in the source split, so messages point at the row as
    stored. Raises :class:`DataError` at the first bad row (``raise``), or when nothing is usable, more than
    ``max_skip_fraction`` of the rows read were skipped, or fewer than ``want`` valid rows exist. A row that
    ``validation.fit`` rejects is skipped and counted in either mode.
    """
    report = SkipReport(origin=origin)
    kept: list[int] = []
    for index, row in indexed_rows:
        if want is not None and len(kept) >= want:
            break
        report.rows_read += 1
        defect = structural_defect(row, schema) or _length_defect(row, schema, validation, origin, index)
        if defect is not None and validation.on_error == "raise":
            message = _row_message(origin, index, defect)
            raise DataError(message, origin=origin, row=index, field=defect.field, kind=defect.kind)
        defect = defect or _fit_defect(row, validation, origin, index)
        if defect is None:
            kept.append(index)
            continue
        report.record(index, defect, _row_message(origin, index, defect))
    report.rows_kept = len(kept)
    for line in report.summary_lines():
        logger.warning(line)
    _check_enough(report, validation, want)
    return kept, report


def _row_message(origin: str, index: int, defect: Defect) -> str:
    return f"{origin} row {index}: field {defect.field}: {defect.detail} [{defect.kind}]"


def _fit_defect(row: Mapping[str, Any], validation: Validation, origin: str, index: int) -> Defect | None:
    if validation.fit is None:
        return None
    try:
        return validation.fit(row)
    except Exception as error:
        # As for the prompt-length check: a template or tokenizer failing on a schema-valid row is a mismatch
        # of tokenizer and data, not a row to skip.
        message = f"{origin} row {index}: tokenizing the row as the trainer will failed: {error!r}"
        raise DataError(message, origin=origin, row=index) from error


def _check_enough(report: SkipReport, validation: Validation, want: int | None) -> None:
    """Skipping is for a few stray rows; an empty, mostly broken or too small result stops the run.

    The message ends with the first row of each reason, so that the setting behind it (a ``max_length``, a
    ``max_prompt_tokens``) or the broken field is named, not only counted.
    """
    counts = f"read {report.rows_read}, kept {report.rows_kept}, skipped {report.skipped}"
    first = "".join(f"; first {kind}: {report.first_errors[kind]}" for kind in sorted(report.first_errors))
    if report.rows_kept == 0:
        raise DataError(f"{report.origin}: no usable rows ({counts}){first}", origin=report.origin)
    skipped_fraction = report.rows_skipped / report.rows_read
    if skipped_fraction > validation.max_skip_fraction:
        raise DataError(
            f"{report.origin}: {skipped_fraction:.0%} of the rows are malformed or too long for the run, "
            f"more than max_skip_fraction={validation.max_skip_fraction} ({counts}){first}",
            origin=report.origin,
        )
    if want is not None and report.rows_kept < want:
        raise DataError(
            f"{report.origin}: asked for {want} valid rows but only {report.rows_kept} exist ({counts}){first}",
            origin=report.origin,
        )
