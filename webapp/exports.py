"""Tables as files people open in Excel or WPS: CSV and xlsx, written the same way for every
export (the overdue board, the figures).

- CSV is UTF-8 with a byte order mark: without it Excel reads the file in the system's code page
  and garbles every Chinese word. Lines end in CRLF, as RFC 4180 and Excel expect.
- xlsx is written by openpyxl: a bold header, the header rows frozen, columns as wide as their
  longest value (a Chinese character counts two), times in Asia/Shanghai as real date cells.
- Numbers stay numbers (84.8 is a number cell, not the text "84.8"); None is an empty cell.
- Text is never a formula: a case title typed as `=HYPERLINK(...)` would otherwise run when the
  file is opened (CSV injection). In CSV such text gets a leading apostrophe, which Excel hides;
  in xlsx the cell is typed as a string, so the text is kept exactly.

A Sheet has one header row in the page's language and, when `fields` is given, a second row with
the raw field names of the JSON API (the figures: `received`, `resolution_rate`, ...), so that a
program can find a column whatever the language the file was made in.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from flask import Response
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from engine.clock import SHANGHAI

from .security import download

CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TIME_FORMAT = "yyyy-mm-dd hh:mm"  # Excel's number format
DAY_FORMAT = "yyyy-mm-dd"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MAX_WIDTH = 60


@dataclass
class Sheet:
    """A table to export: its sheet name (xlsx), header, optional raw field names, rows, the
    number format of some columns (by index) and the rows to set in bold (by index in `rows`)."""

    title: str
    header: Sequence[str]
    rows: list[list[Any]]
    fields: Sequence[str] | None = None
    formats: dict[int, str] = field(default_factory=dict)
    bold_rows: set[int] = field(default_factory=set)

    @property
    def header_rows(self) -> list[list[str]]:
        return [list(self.header)] + ([list(self.fields)] if self.fields else [])


def local(value: datetime) -> datetime:
    """An instant as the town's wall-clock time, without a zone: Excel has no zones, and the
    town reads its own time."""
    return value.astimezone(SHANGHAI).replace(tzinfo=None)


# ------------------------------------------------------------------ CSV


def csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return local(value).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        raise TypeError("say yes or no in words before exporting")
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_bytes(sheet: Sheet) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in sheet.header_rows:
        writer.writerow(row)
    for row in sheet.rows:
        writer.writerow([csv_text(v) for v in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def csv_response(sheet: Sheet, filename: str) -> Response:
    return download(Response(csv_bytes(sheet), content_type=CSV_TYPE), filename)


# ------------------------------------------------------------------ xlsx


def _width(value: Any) -> int:
    """How many character cells a value takes in a column: CJK characters are double width."""
    if value is None:
        return 0
    if isinstance(value, datetime):
        return 16
    text = str(value)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _write(ws, sheet: Sheet) -> None:
    bold = Font(bold=True)
    for row in sheet.header_rows:
        ws.append(row)
    for r in range(1, len(sheet.header_rows) + 1):
        for cell in ws[r]:
            cell.font = bold
    first = len(sheet.header_rows) + 1
    for index, values in enumerate(sheet.rows):
        ws.append([_cell(v) for v in values])
        for column, cell in enumerate(ws[first + index]):
            value = values[column]
            if isinstance(value, str):
                cell.data_type = "s"  # openpyxl would take "=..." for a formula
            elif isinstance(value, datetime):
                cell.number_format = TIME_FORMAT
            elif isinstance(value, date):
                cell.number_format = DAY_FORMAT
            if column in sheet.formats and not isinstance(value, str):
                cell.number_format = sheet.formats[column]
            if index in sheet.bold_rows:
                cell.font = bold
    ws.freeze_panes = ws.cell(row=first, column=1)
    columns = max([len(r) for r in sheet.header_rows + sheet.rows] or [0])
    for column in range(columns):
        cells = [r[column] for r in sheet.header_rows + sheet.rows if column < len(r)]
        wide = max((_width(v) for v in cells), default=0)
        ws.column_dimensions[get_column_letter(column + 1)].width = min(max(wide + 2, 8), MAX_WIDTH)


def xlsx_bytes(sheets: Sequence[Sheet]) -> bytes:
    book = Workbook()
    book.remove(book.active)
    for sheet in sheets:
        _write(book.create_sheet(sheet.title), sheet)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def xlsx_response(sheets: Sequence[Sheet], filename: str) -> Response:
    return download(Response(xlsx_bytes(sheets), content_type=XLSX_TYPE), filename)


def _cell(value):
    """A value as an xlsx cell takes it: times in Shanghai, and text without the control
    characters the format cannot hold (a title pasted from Word may carry a vertical tab)."""
    if isinstance(value, datetime):
        return local(value)
    if isinstance(value, str):
        return ILLEGAL_CHARACTERS_RE.sub("", value)
    return value
