"""Where rows come from: one ``datasets.load_dataset`` path for hub ids, hub-like local dirs and plain files.

The paper profile reads ``HuggingFaceH4/ultrachat_200k`` and ``HuggingFaceH4/ultrafeedback_binarized`` from
the hub; the tests read local directories laid out like those repos (``data/<split>-00000-of-00001.*`` plus
a README with ``configs:``) through the very same call, with the directory in place of the repo id; the
miniature world writes plain JSONL files, read with the ``json`` builder. Whatever the source, a subset of
``n`` rows is the first ``n`` of one seeded permutation, so a given (source, seed) always yields the same rows
and a larger ``n`` extends a smaller one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ift.data.errors import DataError
from ift.data.validate import SkipReport, Validation, select_valid

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}  # file suffix -> datasets builder
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
        dataset = _json_file_rows(path) if args == ("json",) else None
        if dataset is None:
            raise DataError(
                f"could not load {data_source.describe()}{as_hub_id}: {type(error).__name__}: {error}"
            ) from error
        logger.warning("%s: datasets' JSON reader failed (%s: %s); read the rows with json.loads instead",
                       data_source.describe(), type(error).__name__, error)
    _warn_about_mixed_types(dataset, data_source)
    return dataset


def _json_file_rows(path: Path) -> datasets.Dataset | None:
    """A JSON-lines (or JSON-array) file read row by row, or None if that fails too.

    datasets' JSON reader gives up on some files whose rows are each fine to validate: a malformed row sends it
    down a path that builds tables piecewise and then cannot merge a column read as int64 in one piece and double
    in another (scores 3 and 2.5). Python's reader and one Arrow table over all rows read those as double."""
    try:
        text = path.read_text(encoding="utf-8")
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        rows = whole if isinstance(whole, list) else [json.loads(line) for line in text.splitlines() if line.strip()]
        return datasets.Dataset.from_list(rows)
    except Exception:  # not JSON, a row that is not an object, columns Arrow cannot unify: the caller's error stands
        return None


def _holds_json(feature: object) -> bool:
    if isinstance(feature, datasets.Json):
        return True
    if isinstance(feature, dict):
        return any(_holds_json(inner) for inner in feature.values())
    inner = getattr(feature, "feature", None)  # List / LargeList
    return inner is not None and _holds_json(inner)


def _warn_about_mixed_types(dataset: datasets.Dataset, data_source: DataSource) -> None:
    """Say when a JSON source mixes value types in a column: the rows are still checked one by one, but
    datasets then stores that column as ``Json`` and reads back a string that is itself valid JSON as the
    value it spells (the string "8.0" as the number 8.0), so such a string can pass as the wrong type."""
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
    none are. Returns the raw rows (hub schema) and what validation dropped.
    """
    dataset = load_split(data_source, cache_dir)
    _check_subset_size(data_source, n, len(dataset))
    order = list(range(len(dataset))) if n is None else seeded_order(len(dataset), seed)
    kept, report = select_valid(
        _indexed_rows(dataset, order), schema, data_source.describe(), validation or Validation(), want=n
    )
    return dataset.select(kept), report
