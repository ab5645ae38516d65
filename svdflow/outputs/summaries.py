"""What a plan decides a recorded job by (`EntrySummary`), and the summaries kept beside index.jsonl.

A plan of 100,000 finished jobs needs each job's status, keys, files and qc verdict, not its whole
entry; parsing 100,000 lines of ~2.4 KB to get them took most of loading the record. So each
compaction writes, after index.jsonl, `.svdflow/summaries.jsonl`: a header naming index.jsonl's size
and CRC-32, then one short row per line of index.jsonl, in its order, with that line's length.
Loading reads the rows instead of parsing the lines when the header matches the index.jsonl it read;
anything else (an older svdflow's folder, a compaction killed between the two files, either file
edited) is not an error: the lines are parsed, as they were before the summaries existed. A row is
checked as strictly as a parsed line's summary; one that does not pass has its line parsed.
"""

from __future__ import annotations

import re
import sys
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import orjson

from svdflow.manifest.schema import ID_PATTERN

SUMMARIES_FILE = ".svdflow/summaries.jsonl"
SUMMARIES_FORMAT = 1
_STATUSES = frozenset(("done", "failed"))
_JOB_ID = re.compile(ID_PATTERN)


class EntrySummary(NamedTuple):
    """What a plan decides a recorded job by, without validating its whole entry."""

    status: str
    render_key: str | None
    output_key: str | None
    outputs: tuple[tuple[str, str, int], ...]  # (format, file, bytes)
    master: tuple[str, int] | None  # (file, bytes)
    error: str | None
    finished_unix: float
    # The qc thresholds its scores were judged against, as `qc_text` writes them ("null" without a qc
    # block), and the verdict; qc None: not scored (a failed job, one recorded before scores).
    qc: str | None = None
    qc_passed: bool | None = None


def qc_text(thresholds: dict | None) -> str:
    """Recorded (or resolved) qc thresholds as one comparable text; shared between the jobs alike.
    (orjson: a summary per loaded line makes one, and json.dumps builds an encoder per call.)"""
    return sys.intern(orjson.dumps(thresholds, option=orjson.OPT_SORT_KEYS).decode())


def summarize(raw: dict) -> EntrySummary | None:
    """An entry's (or a line's) summary, or None when a field it holds is not of its type (the caller
    then validates it whole, to say why)."""
    try:
        master, error, quality = raw["master"], raw["error"], raw.get("quality")
        if master is not None:
            master = (master["file"], master["bytes"])
        qc = passed = None
        if quality is not None:  # `passed` checked with the rest, in _checked
            passed, qc = quality["passed"], qc_text(quality["thresholds"])
        return _checked(raw.get("id"), raw["status"], raw["render_key"], raw["output_key"],
                        tuple([(o["format"], o["file"], o["bytes"]) for o in raw["outputs"]]), master,
                        None if error is None else error["message"], raw["finished_unix"], qc, passed)
    except (KeyError, TypeError, AttributeError):
        return None


def _checked(job_id, status, render_key, output_key, outputs, master, error, finished, qc, passed) -> EntrySummary | None:
    if status not in _STATUSES or type(finished) not in (int, float) or type(job_id) is not str \
            or _JOB_ID.fullmatch(job_id) is None:
        return None
    for fmt, file, size in outputs:
        if type(fmt) is not str or type(file) is not str or type(size) is not int:
            return None
    if master is not None and (type(master[0]) is not str or type(master[1]) is not int):
        return None
    for text in (render_key, output_key, error, qc):
        if text is not None and type(text) is not str:
            return None
    if not (passed is None or passed is True or passed is False):
        return None
    return EntrySummary(status, render_key, output_key, outputs, master, error, finished, qc, passed)


# -- the file beside index.jsonl ----------------------------------------------------------------------

def summaries_bytes(index_data: bytes, rows: Iterator[tuple[str, str, int, EntrySummary]]) -> bytes:
    """The file for `index_data`: rows of (job id, run id, its line's length, summary), in its order."""
    dumps = orjson.dumps
    out = [dumps({"svdflow_summaries": SUMMARIES_FORMAT, "index_bytes": len(index_data),
                  "index_crc32": zlib.crc32(index_data)}) + b"\n"]
    for job_id, run_id, length, s in rows:
        out.append(dumps([job_id, run_id, length, s.status, s.render_key, s.output_key, s.outputs, s.master,
                          s.error, s.finished_unix, s.qc, s.qc_passed]) + b"\n")
    return b"".join(out)


class SummaryRow(NamedTuple):
    """A row read back: the line it summarises is index.jsonl's bytes [start, end)."""

    job_id: str
    run_id: str
    start: int
    end: int
    summary: EntrySummary | None  # None: the row does not pass; parse the line


def read_summaries(data: bytes | None, index_data: bytes) -> list[SummaryRow] | None:
    """The rows of a summaries file `data` when it is the one for `index_data`, every row's line where
    it says (else None: parse the lines)."""
    if not data:
        return None
    newline = data.find(b"\n")
    try:
        header = orjson.loads(data[:newline] if newline >= 0 else data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(header, dict) or header.get("svdflow_summaries") != SUMMARIES_FORMAT \
            or header.get("index_bytes") != len(index_data) or header.get("index_crc32") != zlib.crc32(index_data):
        return None
    rows, offset, size = [], 0, len(data)
    loads, view, start = orjson.loads, memoryview(data), newline + 1
    while start < size:
        end = data.find(b"\n", start)
        end = size if end < 0 else end
        try:
            row = loads(view[start:end])
        except orjson.JSONDecodeError:
            return None
        if type(row) is not list or len(row) != 12 or type(row[0]) is not str or type(row[1]) is not str \
                or type(row[2]) is not int or row[2] <= 0 or index_data[offset + row[2] - 1:offset + row[2]] != b"\n":
            return None
        rows.append(SummaryRow(row[0], row[1], offset, offset + row[2], _row_summary(row)))
        offset += row[2]
        start = end + 1
    return rows if offset == len(index_data) else None


def _row_summary(row: list) -> EntrySummary | None:
    outputs, master = row[6], row[7]
    try:
        outputs = tuple([tuple(o) for o in outputs])
        if any(len(o) != 3 for o in outputs) or (master is not None and len(master) != 2):
            return None
        return _checked(row[0], row[3], row[4], row[5], outputs, None if master is None else tuple(master), row[8],
                        row[9], row[10], row[11])
    except TypeError:
        return None
