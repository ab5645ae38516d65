"""`table:` entries: one item per row of a CSV file (with a header row) or a JSON Lines file.

Cells are validated with `TableRow`, the same Pydantic fields as an item written in the manifest,
so a bad value gets the same words, located in the table: `shots.csv:12:4: ...`. An empty cell (a
JSON null) means "not set". Positions of cells are worked out only for the cells a problem names:
reading 100,000 rows stays a matter of parsing and validating them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from svdflow.errors import Problem, in_file_order
from svdflow.locations import Location
from svdflow.manifest.limits import MAX_TABLE_BYTES
from svdflow.manifest.loader import allowed_keys, describe_error, suggest
from svdflow.manifest.schema import TableRow

# Past this many problems in one table, the rest are counted, not listed: one wrong column in
# 100,000 rows needs one fix, not 100,000 lines of output.
MAX_PROBLEMS = 20
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
REQUIRED_COLUMNS = ("id", "image")
COLUMNS = allowed_keys(TableRow)
_RANGE_KINDS = {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}
_NUMBER = re.compile(r"\s*[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?\s*\Z")


@dataclass(frozen=True, slots=True)
class Row:
    """One valid row: an item."""

    index: int  # among the table's data rows, for positions
    id: str
    image: str  # as written in the cell
    params: dict[str, Any]  # the parameters this row sets


class TableUnusable(Exception):
    """The table cannot give items: unreadable, not a table, or without rows. Said at the entry."""


@dataclass
class Table:
    """A read table: its valid rows, the problems of the others, and where each cell is in the file."""

    shown: str  # the path as problems name it
    location: Location
    kind: str  # "csv" or "jsonl"
    lines: list[str]
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    header: list[str] = field(default_factory=list)  # csv: the columns in file order
    header_line: int = 1
    row_lines: list[int] = field(default_factory=list)  # first line of each data row
    cut_short: bool = False  # reading stopped past `max_rows` rows: the table has more

    @property
    def folder(self) -> Location:
        """Where relative image paths in the table are read from."""
        return self.location.parent

    def problem(self, row: int, column: str, message: str) -> Problem:
        """A problem about one cell (or, for a column the row leaves empty, the row's first cell)."""
        line, col = self._position(row, column)
        return Problem(self.shown, line, col, message)

    def column_problem(self, column: str, message: str) -> Problem:
        """A problem about a whole column: at its header cell (JSON Lines: where it first appears)."""
        if self.kind == "csv" and column in self.header:
            line, col = _csv_cell(self.lines, self.header_line, self.header.index(column))
            return Problem(self.shown, line, col, message)
        for row in range(len(self.row_lines)):
            line, col = self._position(row, column)
            if col > 1:
                return Problem(self.shown, line, col, message)
        return Problem(self.shown, self.header_line, 1, message)

    def _position(self, row: int, column: str) -> tuple[int, int]:
        start = self.row_lines[row]
        if self.kind == "csv":
            if column not in self.header:
                return start, 1
            return _csv_cell(self.lines, start, self.header.index(column))
        return start, _json_value_column(self.lines[start - 1], column)


def shown_path(written: str, manifest_shown: str) -> str:
    """How problems name a table: a local one relative to the manifest as the user named it."""
    location = Location.parse(written)
    if not location.is_local or os.path.isabs(os.path.expanduser(written)):
        return written
    return os.path.normpath(os.path.join(os.path.dirname(manifest_shown), written))


def read_table(written: str, base_dir: str | os.PathLike[str], shown: str, max_rows: int | None = None) -> Table:
    """Read and validate a table; problems inside it are on the returned Table, TableUnusable otherwise.

    `max_rows`: stop after one row more than this (`cut_short`): a table too long for the manifest's
    job limit is not validated to its end.
    """
    location = Location.parse(written, base_dir)
    kind = FORMATS.get(os.path.splitext(location.text.split("?", 1)[0])[1].lower())
    if kind is None:
        raise TableUnusable(f"'{written}' is not a table svdflow reads; use a .csv file with a header row "
                            "(spreadsheets: save as CSV UTF-8) or a .jsonl file (one JSON object per line)")
    if location.is_local and not os.path.isfile(location.path):
        what = "is a folder, not a table" if os.path.isdir(location.path) else "does not exist"
        raise TableUnusable(f"'{written}' {what}; check the path (local tables are read from the manifest's "
                            "folder)")
    text = _read_text(location, written)
    table = Table(shown, location, kind, io.StringIO(text, newline="").readlines())
    if kind == "csv":
        _read_csv(table, max_rows)
    else:
        _read_jsonl(table, max_rows)
    if not table.row_lines and not table.problems:  # a table that breaks early says why, not "empty"
        what = "has a header row but no rows" if table.header else "is empty"
        raise TableUnusable(f"the table '{written}' {what}; add one row per item"
                            + (" under a header row (id,image,...)" if kind == "csv" else
                               ", one JSON object per line ({\"id\": ..., \"image\": ...})"))
    table.problems = _capped(table.problems, table.shown)
    return table


def _read_text(location: Location, written: str) -> str:
    from svdflow.errors import InputError, InputTooLarge
    from svdflow.inputs import fetch_bytes

    try:
        data = fetch_bytes(location.text, max_bytes=MAX_TABLE_BYTES)
    except InputTooLarge as exc:
        size = f"{exc.size:,} bytes, " if exc.size is not None else ""
        raise TableUnusable(f"'{written}' is {size}over the {MAX_TABLE_BYTES:,}-byte limit for a table; split it "
                            "into several tables (one table: entry each)") from None
    except InputError as exc:
        raise TableUnusable(f"the table cannot be read: {exc}") from None
    if b"\x00" in data:
        raise TableUnusable(f"'{written}' is a binary file, not a text table; export it as CSV UTF-8 "
                            "(or JSON Lines)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TableUnusable(f"'{written}' line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; save the "
                            "table as UTF-8 text (spreadsheets: CSV UTF-8)") from None


def _records(table: Table) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each non-blank CSV record; quoted cells may span lines."""
    reader = csv.reader(table.lines, strict=True)
    consumed = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            table.problems.append(Problem(table.shown, reader.line_num, None,
                                          f"not valid CSV ({exc}); quote cells that hold commas, quotes or "
                                          "line breaks (\"a, b\"), and double the quotes inside them (\"\")"))
            return
        start, consumed = consumed + 1, reader.line_num
        if cells:
            yield start, cells


def _read_csv(table: Table, max_rows: int | None) -> None:
    records = _records(table)
    first = next(records, None)
    if first is None:
        return
    table.header_line, table.header = first
    known = _check_header(table)
    for start, cells in records:
        index = len(table.row_lines)
        if max_rows is not None and index > max_rows:
            table.cut_short = True
            return
        table.row_lines.append(start)
        if not known:  # the header's problems say it all; every row would only repeat them
            continue
        if len(cells) != len(table.header):
            table.problems.append(_width_problem(table, index, start, cells))
            continue
        values = {name: cell for name, cell in zip(table.header, cells) if cell != "" and name in known}
        _validate(table, index, values, strict=False)


def _check_header(table: Table) -> set[str]:
    """Problems with the header row; the columns that can be read."""
    known: set[str] = set()
    for i, name in enumerate(table.header):
        line, col = _csv_cell(table.lines, table.header_line, i)
        if not name:
            message = f"column {i + 1} has no name in the header row; name it (id, image or a parameter) or remove it"
        elif name in known:
            message = f"column '{name}' appears twice in the header row; keep one of them"
        elif name not in COLUMNS:
            message = f"unknown column '{name}'; {suggest(name, COLUMNS)}"
        else:
            known.add(name)
            continue
        table.problems.append(Problem(table.shown, line, col, message))
    for name in REQUIRED_COLUMNS:
        if name not in table.header:
            what = "each row's unique item id" if name == "id" else \
                "each row's image (a path relative to the table's folder, or a URL)"
            table.problems.append(Problem(table.shown, table.header_line, 1, (
                f"no '{name}' column; the header row names the columns (it has: {', '.join(table.header)}); "
                f"add an {name} column with {what}")))
    return known if all(name in known for name in REQUIRED_COLUMNS) else set()


def _width_problem(table: Table, index: int, start: int, cells: list[str]) -> Problem:
    count, columns = len(cells), len(table.header)
    if count > columns:
        line, col = _csv_cell(table.lines, start, columns)
        return Problem(table.shown, line, col, (
            f"this row has {count} cells but the header row has {columns} columns; quote cells that hold "
            "commas (\"a, b\"), or remove the extra cells"))
    return Problem(table.shown, start, 1, (
        f"this row has {count} cells but the header row has {columns} columns; add the missing cells "
        "(an empty cell means not set)"))


def _read_jsonl(table: Table, max_rows: int | None) -> None:
    unknown: dict[str, int] = {}  # key -> problem index, to count its other lines
    for number, line in enumerate(table.lines, start=1):
        if not line.strip():
            continue
        index = len(table.row_lines)
        if max_rows is not None and index > max_rows:
            table.cut_short = True
            return
        table.row_lines.append(number)
        try:
            value = json.loads(line, object_pairs_hook=_no_repeated_keys)
        except _RepeatedKey as exc:
            table.problems.append(Problem(table.shown, number, _json_value_column(line, exc.key), (
                f"key '{exc.key}' appears twice on this line; keep one of them")))
            continue
        except json.JSONDecodeError as exc:
            table.problems.append(Problem(table.shown, number, exc.colno, (
                f"not valid JSON ({exc.msg}); each line is one JSON object, e.g. "
                "{\"id\": \"rocket\", \"image\": \"rocket.png\"}")))
            continue
        if not isinstance(value, dict):
            table.problems.append(Problem(table.shown, number, 1, (
                f"this line is {_json_kind(value)}, not a JSON object; write one object per line, e.g. "
                "{\"id\": \"rocket\", \"image\": \"rocket.png\"}")))
            continue
        for key in [k for k in value if k not in COLUMNS]:
            del value[key]
            if key in unknown:
                continue
            unknown[key] = len(table.problems)
            table.problems.append(Problem(table.shown, number, _json_key_column(line, key),
                                          f"unknown key '{key}'; {suggest(key, COLUMNS)}"))
        _validate(table, index, {k: v for k, v in value.items() if v is not None}, strict=True)


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _validate(table: Table, index: int, values: dict[str, Any], *, strict: bool) -> None:
    try:
        row = TableRow.model_validate(values, strict=strict)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            column = str(error["loc"][0]) if error["loc"] else "id"
            table.problems.append(table.problem(index, column, _describe(error, column, table.kind)))
        return
    params = {key: getattr(row, key) for key in values if key not in REQUIRED_COLUMNS}
    table.rows.append(Row(index, row.id, row.image, params))


def _describe(error: dict[str, Any], column: str, kind: str) -> str:
    """A cell's problem in the words a manifest's item gets, and what an empty cell means."""
    value = error.get("input")
    if error["type"] == "missing":
        if kind == "csv":
            return f"{column}: the cell is empty; every row needs its {column}"
        return f"missing key '{column}'; every line needs its {column}"
    if error["type"] == "int_parsing":
        return f"{column}: {value!r} is not an integer; write a whole number, or leave the cell empty to use the default"
    if error["type"] == "float_parsing":
        return f"{column}: {value!r} is not a number; write a number such as 0.5, or leave the cell empty to use the default"
    if error["type"] == "string_too_short" and column == "image":
        return f"{column}: is empty; give the image's local path (relative to the table's folder) or URL"
    if error["type"] in _RANGE_KINDS and isinstance(value, str) and _NUMBER.match(value):
        error = {**error, "input": float(value) if any(c in value for c in ".eE") else int(value)}
    return describe_error(error, (column,), TableRow)


def _capped(problems: list[Problem], shown: str) -> list[Problem]:
    ordered = in_file_order(problems)
    if len(ordered) <= MAX_PROBLEMS:
        return ordered
    rest = ordered[MAX_PROBLEMS]
    return ordered[:MAX_PROBLEMS] + [Problem(shown, rest.line, rest.col, (
        f"{len(ordered) - MAX_PROBLEMS} more problems from here on in this table; fix the ones above and "
        "validate again"))]


def _csv_cell(lines: list[str], start: int, cell: int) -> tuple[int, int]:
    """(line, column) where cell number `cell` of the record starting on line `start` begins."""
    if cell == 0:
        return start, 1
    seen, quoted = 0, False
    for number in range(start, len(lines) + 1):
        for col, char in enumerate(lines[number - 1], start=1):
            if char == '"':
                quoted = not quoted  # a doubled quote inside a quoted cell flips twice
            elif char == "," and not quoted:
                seen += 1
                if seen == cell:
                    return number, col + 1
            elif char in "\r\n" and not quoted:
                return start, 1
    return start, 1


def _json_key_column(line: str, key: str) -> int:
    match = re.search(r'"' + re.escape(key) + r'"\s*:', line)
    return match.start() + 1 if match else 1


def _json_value_column(line: str, key: str) -> int:
    match = re.search(r'"' + re.escape(key) + r'"\s*:\s*', line)
    return match.end() + 1 if match else 1


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
