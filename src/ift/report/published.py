"""The paper's published Table 2 / Table 3 numbers, read from a data file, to print beside ours (paper profile).

The file (``paper_published.yaml`` next to this module by default; ``published_file`` in conf/report.yaml) cites
its source and lists rows ``{start, method, <column>: value}`` in the report's own column keys. Every value is
checked here (known start, method and column; a percentage in [0, 100]; no row twice; an Avg that its five columns
reproduce) so a typo in the data stops the report with the file, table and row named, instead of printing a wrong
number beside ours. A row whose printed Avg the paper's own columns do not reproduce says so with
``avg_as_printed: true`` (kept as printed; the flag is refused where the Avg does agree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from ift.report.tables import AVG_TASKS, LEADERBOARD_COLUMNS, METHOD_TITLES, START_TITLES

DEFAULT_FILE = Path(__file__).with_name("paper_published.yaml")
TABLE_COLUMNS = {
    "table2": {key for key, _ in LEADERBOARD_COLUMNS} | {"avg"},
    # AlpacaEval 2 win rate and official length-controlled win rate; AlpacaEval (v1) win rate and LC win rate
    "table3": {"win_rate", "lc_win_rate", "ae1_win_rate", "ae1_lc_win_rate"},
}
AVG_TOLERANCE = 0.01  # a published Avg may differ from the mean of its five columns by rounding only
AVG_AS_PRINTED = "avg_as_printed"  # a row's flag: the paper prints an Avg its own columns do not give (kept as printed)

Published = dict[str, dict[tuple[str, str | None], dict[str, float]]]  # table -> (start, method) -> column -> value


class PublishedDataError(ValueError):
    """The published-numbers file is malformed (the message names the file, table and row)."""


def load_published(path: Path) -> tuple[dict, Published]:
    """(source, tables) from the data file; raises PublishedDataError naming what is wrong and where."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise PublishedDataError(f"{path}: published-numbers file not found (set published_file in conf/report.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PublishedDataError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, Mapping):
        raise PublishedDataError(f"{path}: expected a mapping with keys source, table2, table3")
    source = data.get("source")
    if not isinstance(source, Mapping) or not all(isinstance(source.get(key), str) and source[key].strip()
                                                  for key in ("citation", "url")):
        raise PublishedDataError(f"{path}: `source` must give the citation and url the numbers come from")
    tables: Published = {}
    for table, columns in TABLE_COLUMNS.items():
        rows = data.get(table) or []
        if not isinstance(rows, list):
            raise PublishedDataError(f"{path}: `{table}` must be a list of rows")
        if rows and not (isinstance(source.get("transcribed_from"), str) and source["transcribed_from"].strip()):
            raise PublishedDataError(f"{path}: `source.transcribed_from` must say where in the paper the numbers "
                                     "were read (version, table, page)")
        tables[table] = {}
        for index, row in enumerate(rows):
            where = f"{path}: {table}[{index}]"
            key, values = _check_row(row, columns, where)
            if key in tables[table]:
                raise PublishedDataError(f"{where}: row {key} appears twice")
            tables[table][key] = values
    return dict(source), tables


def _check_row(row, columns: set[str], where: str) -> tuple[tuple[str, str | None], dict[str, float]]:
    if not isinstance(row, Mapping):
        raise PublishedDataError(f"{where}: expected a mapping, got {type(row).__name__}")
    start, method = row.get("start"), row.get("method")
    if start not in START_TITLES:
        raise PublishedDataError(f"{where}: start {start!r} is not one of {sorted(START_TITLES)}")
    if method is not None and method not in METHOD_TITLES:
        raise PublishedDataError(f"{where}: method {method!r} is not one of {sorted(METHOD_TITLES)} (or null for "
                                 "the start point itself)")
    unknown = set(row) - {"start", "method", AVG_AS_PRINTED} - columns
    if unknown:
        raise PublishedDataError(f"{where}: unknown column(s) {sorted(unknown)}; known: {sorted(columns)}")
    values = {}
    for column in sorted(columns & set(row)):
        value = row[column]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
                or not 0.0 <= value <= 100.0:
            raise PublishedDataError(f"{where}: {column} = {value!r} is not a percentage in [0, 100]")
        values[column] = float(value)
    if not values:
        raise PublishedDataError(f"{where}: no values")
    as_printed = row.get(AVG_AS_PRINTED, False)
    if not isinstance(as_printed, bool):
        raise PublishedDataError(f"{where}: {AVG_AS_PRINTED} must be true or false, got {as_printed!r}")
    if "avg" in values and all(task in values for task in AVG_TASKS):
        mean = sum(values[task] for task in AVG_TASKS) / len(AVG_TASKS)
        differs = abs(values["avg"] - mean) > AVG_TOLERANCE
        if differs and not as_printed:
            raise PublishedDataError(f"{where}: row {(start, method)} has avg {values['avg']} but its five columns "
                                     f"({', '.join(AVG_TASKS)}) average {mean:.4f}; a typo in one of them? (If the "
                                     f"paper prints it so, say {AVG_AS_PRINTED}: true)")
        if as_printed and not differs:
            raise PublishedDataError(f"{where}: row {(start, method)} says {AVG_AS_PRINTED} but its avg "
                                     f"{values['avg']} agrees with its five columns ({mean:.4f})")
    elif as_printed:
        raise PublishedDataError(f"{where}: {AVG_AS_PRINTED} needs the row's avg and its five columns")
    return (start, method), values
