"""The one exception the data layer raises, so that callers (and tests) can tell bad data from bugs."""

from __future__ import annotations


class DataError(ValueError):
    """Data that cannot be used as asked: unloadable source, malformed row, too few rows.

    The message always names the source and split; for a malformed row also the row index (position in
    the source split, not in a subset) and the field, so that the row can be found and fixed by hand.
    The same facts are attributes, for code that wants to react to them.
    """

    def __init__(
        self,
        message: str,
        *,
        origin: str | None = None,
        row: int | None = None,
        field: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.origin = origin
        self.row = row
        self.field = field
        self.kind = kind
