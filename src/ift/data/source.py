"""Where rows come from: hub ids and hub-like dirs through ``datasets.load_dataset``, JSONL files as written.

The paper profile reads ``HuggingFaceH4/ultrachat_200k`` and ``HuggingFaceH4/ultrafeedback_binarized`` from
the hub; the tests read local directories laid out like those repos (``data/<split>-00000-of-00001.*`` plus
a README with ``configs:``) through the very same call, with the directory in place of the repo id. The
miniature world writes plain JSONL files; :func:`load_examples` reads those row by row with Python's
``json`` module, validates each row exactly as written and only then builds a ``datasets.Dataset`` from
the valid rows (:func:`read_json_rows` says why not with datasets' JSON reader). :func:`load_split` and
:func:`load_source` are the unvalidated view through ``datasets`` (its JSON caveat is logged). Whatever the
source, a subset of ``n`` rows is the first ``n`` of one seeded permutation, so a given (source, seed)
always yields the same rows and a larger ``n`` extends a smaller one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ift.data.errors import DataError
from ift.data.format import MESSAGE_LIST, plain_messages
from ift.data.row_checks import CHAT, PREFERENCE, SkipReport, Validation, select_valid

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}  # file suffix -> datasets builder
JSON_SUFFIXES = (".jsonl", ".json")  # plain files load_examples reads row by row with the json module
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "owner/name"
ROWS_PER_READ = 1024  # rows decoded per batch while validating: bounds memory on the 200k-row hub splits


@dataclass(frozen=True)
class DataSource:
    """One split of one dataset: ``source`` is a hub id, a hub-like local dir, or a .jsonl/.json/.parquet file.

    For a plain file the split name only labels the rows (the file is the whole split).
    """

    source: str
    split: str

    def describe(self) -> str:
        return f"{self.source} [split {self.split}]"


def load_split(data_source: DataSource, cache_dir: str | None = None) -> datasets.Dataset:
    """The whole split as a ``datasets.Dataset``, unvalidated; any loading failure becomes a DataError."""
    path = Path(data_source.source)
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise DataError(
                f"{data_source.describe()}: cannot read {path.suffix!r} files; expected one of {sorted(FILE_BUILDERS)}"
            )
        args: tuple[str, ...] = (builder,)
        kwargs = {"data_files": {data_source.split: str(path)}}
    elif path.is_dir() or HUB_ID.match(data_source.source):
        args, kwargs = (data_source.source,), {}
    else:
        raise DataError(f"{data_source.describe()}: no such file or directory, and not a hub id 'owner/name'")
    as_hub_id = "" if path.exists() else " (no such local path, so read as a hub id)"
    try:
        dataset = datasets.load_dataset(*args, split=data_source.split, cache_dir=cache_dir, **kwargs)
    except Exception as error:  # many types: FileNotFoundError, ValueError (split), ConnectionError, ...
        dataset = _json_file_rows(path, data_source) if args == ("json",) else None
        if dataset is None:
            raise DataError(
                f"could not load {data_source.describe()}{as_hub_id}: {type(error).__name__}: {error}"
            ) from error
        logger.warning("%s: datasets' JSON reader failed (%s: %s); read the rows with json.loads instead",
                       data_source.describe(), type(error).__name__, error)
    _warn_about_mixed_types(dataset, data_source)
    return dataset


def _json_file_rows(path: Path, data_source: DataSource) -> datasets.Dataset | None:
    """A JSON-lines (or JSON-array) file read row by row into one Arrow table, or None if that fails too.

    datasets' JSON reader gives up on some files whose rows are each fine to validate: a malformed row sends it
    down a path that builds tables piecewise and then cannot merge a column read as int64 in one piece and double
    in another (scores 3 and 2.5). Python's reader and one Arrow table over all rows read those as double."""
    try:
        return datasets.Dataset.from_list(read_json_rows(path, data_source))
    except Exception:  # not JSON, a non-object row, columns Arrow cannot unify: the caller's error stands
        return None


def read_json_rows(path: Path, data_source: DataSource) -> list[Any]:
    """Every row of a JSON-lines file (or of a ``.json`` file holding one array) as Python's json reads it.

    Why not datasets' JSON reader: it types each column over all rows, and one row whose ``content`` is a list
    (where the others have strings) makes the whole column ``Json``; strings that spell a JSON value then come
    back as that value, so a valid answer "4" arrives as the int 4 (and is skipped as bad_type), '"Canberra"'
    silently loses its quotes, and in raise mode the first error blames a valid row. Rows read here reach
    validation exactly as written. A line that is not JSON is an error naming the file and line (row indices
    count the non-blank lines, as datasets does).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        message = f"could not load {data_source.describe()}: {type(error).__name__}: {error}"
        raise DataError(message, origin=data_source.describe()) from error
    if path.suffix == ".json":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # not one JSON document: JSON lines, as datasets' reader also accepts
        if isinstance(whole, list):
            return whole
    rows = []
    # split("\n"), not splitlines(): a string in a row may hold U+2028, which splitlines() would break at
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataError(
                f"could not load {data_source.describe()}: line {line_number} is not valid JSON ({error})",
                origin=data_source.describe(),
                row=len(rows),
            ) from error
    return rows


def _holds_json(feature: object) -> bool:
    if isinstance(feature, datasets.Json):
        return True
    if isinstance(feature, dict):
        return any(_holds_json(inner) for inner in feature.values())
    inner = getattr(feature, "feature", None)  # List / LargeList
    return inner is not None and _holds_json(inner)


def _warn_about_mixed_types(dataset: datasets.Dataset, data_source: DataSource) -> None:
    """Say when a JSON source mixes value types in a column: datasets then stores that column as ``Json`` and
    reads back a string that is itself valid JSON as the value it spells (the string "8.0" as the number 8.0).
    Training never reads a plain JSON file this way (:func:`load_examples` uses :func:`read_json_rows`); a
    hub-like dir with JSON shards still does, so its rows can arrive changed and the warning says so."""
    columns = [name for name, feature in dataset.features.items() if _holds_json(feature)]
    if columns:
        logger.warning(
            "%s: columns %s mix value types (malformed rows); strings in them that are valid JSON "
            "are read as JSON values",
            data_source.describe(),
            columns,
        )


def seeded_order(num_rows: int, seed: int) -> list[int]:
    """The permutation every subset of a split is a prefix of (numpy PCG64: same on every platform)."""
    return np.random.default_rng(seed).permutation(num_rows).tolist()


def _check_subset_size(data_source: DataSource, n: int | None, available: int) -> None:
    if n is None:
        return
    if n < 1:
        raise DataError(
            f"{data_source.describe()}: n must be a positive number of rows or None (all), got {n}"
        )
    if n > available:
        raise DataError(f"{data_source.describe()}: asked for n={n} rows but only {available} are available")


def load_source(
    data_source: DataSource, n: int | None = None, seed: int = 0, cache_dir: str | None = None
) -> datasets.Dataset:
    """The split (``n=None``, stored order) or a seeded random subset of ``n`` rows, unvalidated."""
    dataset = load_split(data_source, cache_dir)
    _check_subset_size(data_source, n, len(dataset))
    return dataset if n is None else dataset.select(seeded_order(len(dataset), seed)[:n])


def _indexed_rows(dataset: datasets.Dataset, order: Sequence[int]) -> Iterator[tuple[int, dict]]:
    for start in range(0, len(order), ROWS_PER_READ):
        indices = order[start : start + ROWS_PER_READ]
        yield from zip(indices, dataset.select(indices).to_list())


# The hub schemas' fields as stated types, for datasets built from validated rows: the types of the kept rows
# are then those of the schema, whatever other rows or extra keys the file held.
_TEXT = datasets.Value("string")
SCHEMA_FEATURES = {
    CHAT: datasets.Features({"prompt": _TEXT, "prompt_id": _TEXT, "messages": MESSAGE_LIST}),
    PREFERENCE: datasets.Features(
        {
            "prompt": _TEXT,
            "prompt_id": _TEXT,
            "chosen": MESSAGE_LIST,
            "rejected": MESSAGE_LIST,
            "score_chosen": datasets.Value("float64"),
            "score_rejected": datasets.Value("float64"),
        }
    ),
}


def schema_row(row: dict, schema: str) -> dict:
    """A validated row reduced to its schema's fields (messages to role and content), values as written."""
    reduced = {name: row[name] for name in SCHEMA_FEATURES[schema]}
    for name in ("messages", "chosen", "rejected"):
        if name in reduced:
            reduced[name] = plain_messages(reduced[name])
    for name in ("score_chosen", "score_rejected"):
        if name in reduced:
            reduced[name] = float(reduced[name])
    return reduced


def _walk(
    data_source: DataSource,
    schema: str,
    num_rows: int,
    row_at: Callable[[Sequence[int]], Iterator[tuple[int, Any]]],
    n: int | None,
    seed: int,
    validation: Validation | None,
) -> tuple[list[int], SkipReport]:
    """The first ``n`` valid rows of the seeded permutation (or all valid rows in stored order)."""
    _check_subset_size(data_source, n, num_rows)
    order = list(range(num_rows)) if n is None else seeded_order(num_rows, seed)
    return select_valid(row_at(order), schema, data_source.describe(), validation or Validation(), want=n)


def load_examples(
    data_source: DataSource,
    schema: str,
    n: int | None = None,
    seed: int = 0,
    validation: Validation | None = None,
    cache_dir: str | None = None,
) -> tuple[datasets.Dataset, SkipReport]:
    """``n`` valid rows drawn at random (seeded), or all valid rows in stored order (``n=None``).

    Walks the same permutation as :func:`load_source` and keeps the first ``n`` rows that pass validation,
    so a run gets exactly ``n`` rows even when some are skipped, and the same rows as ``load_source`` when
    none are. Returns the raw rows (hub schema) and what validation dropped. A plain ``.jsonl``/``.json`` file
    is read with the ``json`` module (:func:`read_json_rows`) and its valid rows come back with the schema's
    fields only, typed as the schema says; a hub id or hub-like dir comes back with all its columns.
    """
    path = Path(data_source.source)
    if path.is_file() and path.suffix in JSON_SUFFIXES:
        rows = read_json_rows(path, data_source)
        kept, report = _walk(
            data_source, schema, len(rows), lambda order: ((i, rows[i]) for i in order), n, seed, validation
        )
        valid = [schema_row(rows[index], schema) for index in kept]
        return datasets.Dataset.from_list(valid, features=SCHEMA_FEATURES[schema]), report
    dataset = load_split(data_source, cache_dir)
    kept, report = _walk(
        data_source, schema, len(dataset), lambda order: _indexed_rows(dataset, order), n, seed, validation
    )
    return dataset.select(kept), report
