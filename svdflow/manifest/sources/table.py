"""`table:` entries: one item per row of a CSV file (with a header row) or a JSON Lines file.

Cells are validated with `TableRow`, the same Pydantic fields as an item written in the manifest,
so a bad value gets the same words, located in the table: `shots.csv:12:4: ...`. An empty cell (a
JSON null) means "not set". Positions of cells are worked out only for the cells a problem names:
reading 100,000 rows stays a matter of parsing and validating them.

A table is read row by row, and only as far as the manifest's job limit: a table of 50 million
tiny rows (512 MiB, the size limit) costs the rows up to the limit, not the file. Only the text of
the rows read is kept (to place problems in it), and past `MAX_PROBLEMS` problems the rest are
counted, not kept.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


class Row(NamedTuple):
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
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    header: list[str] = field(default_factory=list)  # csv: the columns in file order
    header_line: int = 1
    header_text: str = ""
    row_lines: list[int] = field(default_factory=list)  # first line of each data row
    row_texts: list[str] = field(default_factory=list)  # each data row as written (a CSV record may span lines)
    cut_short: bool = False  # reading stopped past `max_rows` rows: the table has more
    uncounted: int = 0  # problems past the first MAX_PROBLEMS rows' worth, counted and not kept
    counting: bool = False  # enough problems are kept: the rest are only counted

    def add(self, problem: Problem) -> None:
        """Keep a problem, or only count it once enough are kept to fill the list shown."""
        if self.counting:
            self.uncounted += 1
            return
        self.problems.append(problem)
        if len(self.problems) > 4 * MAX_PROBLEMS:  # a header of a million bad columns, say
            self.counting = True

    def start_row(self) -> None:
        """A row begins: whole rows' problems are kept (they are sorted by column), then counted."""
        if len(self.problems) > MAX_PROBLEMS:
            self.counting = True

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
            line, col = _csv_cell(self.header_text, self.header_line, self.header.index(column))
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
            return _csv_cell(self.row_texts[row], start, self.header.index(column))
        return start, _json_value_column(self.row_texts[row], column)


def shown_path(written: str, manifest_shown: str) -> str:
    """How problems name a table: a local one relative to the manifest as the user named it."""
    location = Location.parse(written)
    if not location.is_local or os.path.isabs(os.path.expanduser(written)):
        return written
    return os.path.normpath(os.path.join(os.path.dirname(manifest_shown), written))


def read_table(written: str, base_dir: str | os.PathLike[str], shown: str, max_rows: int | None = None) -> Table:
    """Read and validate a table; problems inside it are on the returned Table, TableUnusable otherwise.

    `max_rows`: stop after one row more than this (`cut_short`): a table too long for the manifest's
    job limit is not read to its end.
    """
    location = Location.parse(written, base_dir)
    kind = FORMATS.get(os.path.splitext(_path_part(location))[1].lower())
    if kind is None:
        raise TableUnusable(f"'{written}' is not a table svdflow reads; use a .csv file with a header row "
                            "(spreadsheets: save as CSV UTF-8) or a .jsonl file (one JSON object per line)")
    if location.is_local and not os.path.exists(location.path):
        raise TableUnusable(f"'{written}' does not exist; check the path (local tables are read from the manifest's "
                            "folder)")
    if location.is_local and os.path.isdir(location.path):
        raise TableUnusable(f"'{written}' is a folder, not a table; check the path (local tables are read from the "
                            "manifest's folder)")
    table = Table(shown, location, kind)
    with _open(location, written) as binary:
        lines = _Lines(binary, written)
        if kind == "csv":
            _read_csv(table, lines, max_rows)
        else:
            _read_jsonl(table, lines, max_rows)
    if not table.row_lines and not table.problems:  # a table that breaks early says why, not "empty"
        what = "has a header row but no rows" if table.header else "is empty"
        raise TableUnusable(f"the table '{written}' {what}; add one row per item"
                            + (" under a header row (id,image,...)" if kind == "csv" else
                               ", one JSON object per line ({\"id\": ..., \"image\": ...})"))
    table.problems = _capped(table.problems, table.shown, table.uncounted)
    return table


def _path_part(location: Location) -> str:
    """The part of a table's location that names the file: a web URL's path, without its query or
    its fragment (`http://host/secret#.csv` is not a .csv file; the server never sees `#.csv`)."""
    if location.protocol in ("http", "https"):
        return urllib.parse.urlsplit(location.text.rsplit("::", 1)[-1]).path
    return location.text.split("?", 1)[0]


def _open(location: Location, written: str) -> io.BufferedIOBase:
    """The table's bytes, read as they are parsed: a local file from the disk as far as it is read, a
    remote one downloaded (up to the size limit) first."""
    from svdflow.errors import InputError, InputTooLarge
    from svdflow.inputs import fetch_bytes, open_local

    try:
        if location.is_local:
            binary: io.BufferedIOBase = io.BufferedReader(_Capped(open_local(
                written, location.path, MAX_TABLE_BYTES, "a .csv or .jsonl file"), written))
        else:
            binary = io.BytesIO(fetch_bytes(location.text, max_bytes=MAX_TABLE_BYTES))
    except InputTooLarge as exc:
        raise _too_large(written, exc.size) from None
    except InputError as exc:
        raise TableUnusable(f"the table cannot be read: {exc}") from None
    return binary


def _too_large(written: str, size: int | None) -> TableUnusable:
    known = f"{size:,} bytes, " if size is not None else ""
    return TableUnusable(f"'{written}' is {known}over the {MAX_TABLE_BYTES:,}-byte limit for a table; split it "
                         "into several tables (one table: entry each)")


class _Capped(io.RawIOBase):
    """A local file read up to the size limit, also when it grows while read or its size says 0."""

    def __init__(self, f: io.BufferedReader, written: str):
        self.f, self.written, self.read_bytes = f, written, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.f.readinto(buffer)
        self.read_bytes += count or 0
        if self.read_bytes > MAX_TABLE_BYTES:
            raise _too_large(self.written, None)
        return count

    def close(self) -> None:
        self.f.close()
        super().close()


class _Lines:
    """A table's lines, numbered from 1, each decoded and checked on its own as it is read: a NUL
    means a binary file, a byte that is not UTF-8 is named with its line, and nothing past the last
    line asked for is decoded. \r, \n and \r\n all end a line, and are kept (csv needs them)."""

    def __init__(self, binary: io.BufferedIOBase, written: str):
        self.binary, self.written = binary, written
        self.number = 0  # of the last line given

    def __iter__(self) -> Iterator[str]:
        first = True
        while line := self.binary.readline():
            if first:
                line, first = line.removeprefix(b"\xef\xbb\xbf"), False
            if b"\x00" in line:
                raise TableUnusable(f"'{self.written}' is a binary file, not a text table; export it as CSV UTF-8 "
                                    "(or JSON Lines)")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TableUnusable(f"'{self.written}' line {self.number + 1}: byte 0x{line[exc.start]:02x} is not "
                                    "UTF-8; save the table as UTF-8 text (spreadsheets: CSV UTF-8)") from None
            # A lone \r ends a line too (old spreadsheets' exports); \r\n stays one line break.
            for part in io.StringIO(text, newline="").readlines() if "\r" in text[:-2] else (text,):
                self.number += 1
                yield part


def _records(table: Table, lines: _Lines) -> Iterator[tuple[int, list[str], str]]:
    """(first line, cells, text) of each non-blank CSV record; quoted cells may span lines."""
    taken: list[str] = []

    def taking() -> Iterator[str]:
        for line in lines:
            taken.append(line)
            yield line

    reader = csv.reader(taking(), strict=True)
    consumed = 0
    while True:
        taken.clear()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            table.add(Problem(table.shown, reader.line_num, None,
                              f"not valid CSV ({exc}); quote cells that hold commas, quotes or "
                              "line breaks (\"a, b\"), and double the quotes inside them (\"\")"))
            return
        start, consumed = consumed + 1, reader.line_num
        if cells:
            yield start, cells, "".join(taken)


def _read_csv(table: Table, lines: _Lines, max_rows: int | None) -> None:
    records = _records(table, lines)
    first = next(records, None)
    if first is None:
        return
    table.header_line, table.header, table.header_text = first
    known = _check_header(table)
    for start, cells, text in records:
        index = len(table.row_lines)
        if max_rows is not None and index > max_rows:
            table.cut_short = True
            return
        table.start_row()
        table.row_lines.append(start)
        table.row_texts.append(text)
        if not known:  # the header's problems say it all; every row would only repeat them
            continue
        if len(cells) != len(table.header):
            table.add(_width_problem(table, index, start, cells))
            continue
        values = {name: cell for name, cell in zip(table.header, cells) if cell != "" and name in known}
        _validate(table, index, values, strict=False)


def _check_header(table: Table) -> set[str]:
    """Problems with the header row; the columns that can be read."""
    known: set[str] = set()
    for i, name in enumerate(table.header):
        line, col = _csv_cell(table.header_text, table.header_line, i)
        if not name:
            message = f"column {i + 1} has no name in the header row; name it (id, image or a parameter) or remove it"
        elif name in known:
            message = f"column '{name}' appears twice in the header row; keep one of them"
        elif name not in COLUMNS:
            message = f"unknown column '{name}'; {suggest(name, COLUMNS)}"
        else:
            known.add(name)
            continue
        table.add(Problem(table.shown, line, col, message))
    for name in REQUIRED_COLUMNS:
        if name not in table.header:
            what = "each row's unique item id" if name == "id" else \
                "each row's image (a path relative to the table's folder, or a URL)"
            table.add(Problem(table.shown, table.header_line, 1, (
                f"no '{name}' column; the header row names the columns (it has: {', '.join(table.header)}); "
                f"add an {name} column with {what}")))
    return known if all(name in known for name in REQUIRED_COLUMNS) else set()


def _width_problem(table: Table, index: int, start: int, cells: list[str]) -> Problem:
    count, columns = len(cells), len(table.header)
    if count > columns:
        line, col = _csv_cell(table.row_texts[index], start, columns)
        return Problem(table.shown, line, col, (
            f"this row has {count} cells but the header row has {columns} columns; quote cells that hold "
            "commas (\"a, b\"), or remove the extra cells"))
    return Problem(table.shown, start, 1, (
        f"this row has {count} cells but the header row has {columns} columns; add the missing cells "
        "(an empty cell means not set)"))


def _read_jsonl(table: Table, lines: _Lines, max_rows: int | None) -> None:
    unknown: set[str] = set()  # keys reported once, at their first line
    for line in lines:
        number = lines.number
        if not line.strip():
            continue
        index = len(table.row_lines)
        if max_rows is not None and index > max_rows:
            table.cut_short = True
            return
        table.start_row()
        table.row_lines.append(number)
        table.row_texts.append(line)
        try:
            value = json.loads(line, object_pairs_hook=_no_repeated_keys)
        except _RepeatedKey as exc:
            table.add(Problem(table.shown, number, _json_value_column(line, exc.key), (
                f"key '{exc.key}' appears twice on this line; keep one of them")))
            continue
        except json.JSONDecodeError as exc:
            table.add(Problem(table.shown, number, exc.colno, (
                f"not valid JSON ({exc.msg}); each line is one JSON object, e.g. "
                "{\"id\": \"rocket\", \"image\": \"rocket.png\"}")))
            continue
        if not isinstance(value, dict):
            table.add(Problem(table.shown, number, 1, (
                f"this line is {_json_kind(value)}, not a JSON object; write one object per line, e.g. "
                "{\"id\": \"rocket\", \"image\": \"rocket.png\"}")))
            continue
        for key in [k for k in value if k not in COLUMNS]:
            del value[key]
            if key in unknown:
                continue
            unknown.add(key)
            table.add(Problem(table.shown, number, _json_key_column(line, key),
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
            table.add(table.problem(index, column, _describe(error, column, table.kind)))
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


def _capped(problems: list[Problem], shown: str, uncounted: int) -> list[Problem]:
    ordered = in_file_order(problems)
    total = len(ordered) + uncounted
    if total <= MAX_PROBLEMS:
        return ordered
    rest = ordered[MAX_PROBLEMS]
    return ordered[:MAX_PROBLEMS] + [Problem(shown, rest.line, rest.col, (
        f"{total - MAX_PROBLEMS} more problems from here on in this table; fix the ones above and "
        "validate again"))]


def _csv_cell(record: str, start: int, cell: int) -> tuple[int, int]:
    """(line, column) where cell number `cell` of the record `record`, which starts on line `start`, begins."""
    if cell == 0:
        return start, 1
    seen, quoted = 0, False
    for number, line in enumerate(io.StringIO(record, newline="").readlines(), start=start):
        for col, char in enumerate(line, start=1):
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
