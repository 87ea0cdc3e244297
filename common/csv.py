"""CSV for spreadsheets, safe from formula injection: every CSV the project writes goes through :func:`csv_writer`.

A cell whose text starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is taken by Excel,
LibreOffice and Google Sheets as a formula (``=HYPERLINK(...)``, ``@SUM(...)``, ``-2+3``...). Such a cell is
written with a leading apostrophe (OWASP's advice), which spreadsheets show as text; numbers (``-12.50``,
``+3``, ``-1e-5``) stay numbers. Subjects, group-by values, descriptions and customer keys come from outside,
so no cell is trusted.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["FORMULA_PREFIXES", "csv_cell", "csv_writer"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def csv_cell(value: Any) -> str:
    """The text of one cell: ``None`` is empty; text a spreadsheet would run as a formula gets an apostrophe."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


class _SafeWriter:
    def __init__(self, file: _Writable, **options: Any) -> None:
        self._writer = csv.writer(file, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([csv_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(file: _Writable, **options: Any) -> _SafeWriter:
    """Like :func:`csv.writer`, with every cell through :func:`csv_cell`."""
    return _SafeWriter(file, **options)
