"""The record of an output folder: the only code that reads or writes it.

Layout (format 3), and why:

    index.jsonl                    one line per job (`IndexLine`), in manifest order: the record at rest
    runs.jsonl                     one line per run (`RunInfo`): what its jobs' lines leave out
    <id>.json                      the job's sidecar: its whole entry, written first (the job's truth)
    .svdflow/record/<run>.run.json a run's record, until it is compacted into runs.jsonl
    .svdflow/record/<run>.<n>.jsonl sealed parts: lines recorded since the last compaction

Recording a job writes its sidecar (one write: the job is recorded once it is there) and keeps its
line; every `SEAL_ENTRIES` lines (or `SEAL_AGE_S` seconds) the kept lines become a new part, written
once and never changed, so the record grows by appending even on object stores, where nothing can be
appended to. A run's end (and parts outgrowing index.jsonl, `_outgrown`) compacts: runs.jsonl and
index.jsonl are written whole, then the parts they hold are removed. So each job costs the same to
record at the 100,000th as at the first, and the bytes written over a campaign stay O(N).

After a crash the record may lag behind, never lie: loading merges the parts, then the sidecars that
are newer than the file their job's line came from (the listing's times say which, without reading
the rest), and a compaction that died half-way leaves parts that merge again to the same result.
Every writer leaves a trace in `.svdflow/record/` before its first sidecar (its run's record; a
`<run>.open` mark for `svdflow qc`), which only a compaction removes: where none is left, the last
writer finished, index.jsonl holds every sidecar, and loading looks at no sidecar's time (a local
folder then costs no lstat per job, an object store no read).
Format 1 and 2 folders (index.json, rank shards index.rankN.json) load, and the next compaction
writes them as format 3 and removes them.

Loading does not build 100,000 validated entries: it keeps each job's line and a small summary
(`EntrySummary`, what a plan decides on) and validates an entry when it is asked for (`get`,
iterating). The shape is `svdflow.outputs.entry`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator, Mapping

from pydantic import ValidationError

from svdflow.collector import gc_paused
from svdflow.errors import EnvironmentProblem
from svdflow.manifest.schema import ID_PATTERN
from svdflow.outputs.entry import INDEX_FORMAT, READABLE_FORMATS, SHARED_FIELDS, IndexEntry, RunInfo
from svdflow.outputs.jsonlines import is_blank, loads, split_lines
from svdflow.outputs.masters import MASTERS_DIR
from svdflow.outputs.store import FileInfo, OutputStore
from svdflow.outputs.summaries import SUMMARIES_FILE, EntrySummary, read_summaries, summaries_bytes, summarize
from svdflow.outputs.upgrade import upgrade_entry

INDEX_FILE = "index.jsonl"
RUNS_FILE = "runs.jsonl"
RECORD_DIR = ".svdflow/record"
LEGACY_INDEX_FILE = "index.json"  # formats 1 and 2
LEGACY_SHARD = re.compile(r"^index\.rank(\d+)\.json$")  # a killed format-2 multi-process run's
_PART = re.compile(r"^(?P<run>[A-Za-z0-9_-]+)\.(?P<seq>\d{6})\.jsonl$")
_RUN_FILE = re.compile(r"^(?P<run>[A-Za-z0-9_-]+)\.run\.json$")
_OPEN = re.compile(r"^(?P<run>[A-Za-z0-9_-]+)\.open$")  # a writer under way that records under other runs
_JOB_ID = re.compile(ID_PATTERN)
# A part is sealed at this many lines, or when its first line is this old: at most that much is read
# back from sidecars after a crash, and a campaign of 100,000 jobs writes ~200 parts.
SEAL_ENTRIES = 500
SEAL_AGE_S = 300.0
# Mid-run, the parts are compacted into index.jsonl once they hold more bytes than it (and this many):
# each compaction at least doubles index.jsonl, so all of them together write O(N) bytes.
COMPACT_MIN_BYTES = 8 * 1024 * 1024
# Object stores keep a file's time to the second: a sidecar written in the second index.jsonl was
# written in cannot be told from one written after it, so loading reads it (a request each, on every
# later plan and run). The end of a run lets that second pass before it writes index.jsonl.
COARSE_TIME_S = 1.1


def new_run_id() -> str:
    """A run's id: its start (UTC, sorts by time) and a random part (runs started in the same second)."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


class _Slot:
    """A recorded job: its line (format 3, compact JSON, with its newline; a slice of the file it was
    read from), its run, its summary, and the time of that file (None: recorded by this process)."""

    __slots__ = ("line", "mtime", "run_id", "summary")

    def __init__(self, line: bytes | memoryview, run_id: str, summary: EntrySummary, mtime: float | None):
        self.line, self.run_id, self.summary, self.mtime = line, run_id, summary, mtime


class RunIndex:
    """All entries of one output folder, by job id, in the order they were first recorded.

    Read it with `get(job_id)`, `summary(job_id)`, iteration (validated entries, in order) and `len`;
    `record` adds a finished job, `finish` seals and compacts at the end of a run.
    """

    def __init__(self, store: OutputStore, *, run_id: str | None = None, compacts: bool = True,
                 only: set[str] | None = None):
        """`run_id`: the run that records into it (None: a reader); `compacts`: False for one rank of a
        multi-process run (the others' parts are not its to merge); `only`: load only these jobs."""
        self.store = store
        self.run_id = run_id or new_run_id()
        self.compacts = compacts and only is None
        self.only = only
        self.name: str | None = None
        self.manifest: str | None = None
        self.updated_at: str | None = None  # when index.jsonl (or the newest part) was written
        self.format_read: int | None = None  # the oldest format read (None: nothing was recorded)
        self.unreadable: str | None = None  # "missing" when the folder holds no record at all
        self.skipped: list[str] = []  # entries that did not fit the format, and why (left out)
        self.listing: Mapping[str, FileInfo] = {}  # the folder as loading saw it: the plan reads sizes here
        self._masters: Mapping[str, FileInfo] | None = None
        self.runs: dict[str, RunInfo] = {}
        self._runs_unsaved: set[str] = set()  # runs known only from parts, sidecars or index.json
        self._slots: dict[str, _Slot] = {}
        self._merged_files: list[str] = []  # what the next compaction replaces
        self._pending: list[bytes] = []
        self._pending_since = 0.0
        self._parts_bytes = 0
        self._index_bytes = 0
        self._seq = 0
        self._run_written = False
        self._traced = False  # this writer's trace is in RECORD_DIR (its run's record, or an open mark)
        self._sidecar_at: float | None = None  # when this run last wrote a sidecar (monotonic)

    # -- loading ------------------------------------------------------------------------------------

    @classmethod
    def load(cls, store: OutputStore, **kwargs) -> RunIndex:
        """The folder's record: index.jsonl (or a format 1/2 index.json and shards), the parts, then
        the sidecars newer than what holds their job. An unreadable entry is left out (its job renders
        again, nothing is lost); a record from a newer svdflow is refused, so this one never writes
        over what it cannot read."""
        with gc_paused():  # 100,000 slots and summaries: nothing cyclic to collect
            return cls._load(store, **kwargs)

    @classmethod
    def _load(cls, store: OutputStore, **kwargs) -> RunIndex:
        index = cls(store, **kwargs)
        index.listing = store.listing()
        record = store.listing(RECORD_DIR)
        index._load_runs(record)
        times = []
        if INDEX_FILE in index.listing:
            info = index.listing[INDEX_FILE]
            index._load_lines(INDEX_FILE, info.mtime)
            index._index_bytes = info.size or 0
            times.append(info.mtime)
        elif LEGACY_INDEX_FILE in index.listing:
            index._load_legacy(LEGACY_INDEX_FILE, index.listing[LEGACY_INDEX_FILE].mtime, document=True)
            times.append(index.listing[LEGACY_INDEX_FILE].mtime)
        for name in sorted(n for n in index.listing if LEGACY_SHARD.match(n)):
            index._load_legacy(name, index.listing[name].mtime, document=False)
        for name in sorted(n for n in record if _PART.match(n)):
            index._load_lines(f"{RECORD_DIR}/{name}", record[name].mtime)
            index._parts_bytes += record[name].size or 0
            times.append(record[name].mtime)
        opened = [f"{RECORD_DIR}/{name}" for name in record if _OPEN.match(name)]
        index._merged_files += opened  # removed by the next compaction
        # a writer's trace left (or a format 1/2 record, whose writers left none): its sidecars may be newer
        unfinished = bool(opened) or any(_PART.match(n) or _RUN_FILE.match(n) for n in record) or (
            index.format_read is not None and index.format_read < INDEX_FORMAT)
        index._load_sidecars(unfinished)
        if index.format_read is None and not index._slots and index.unreadable is None:
            index.unreadable = "missing"
        if times:
            index.updated_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(times)))
        return index

    def _load_runs(self, record: Mapping[str, FileInfo]) -> None:
        sources = [RUNS_FILE] if RUNS_FILE in self.listing else []
        for name in sorted(n for n in record if _RUN_FILE.match(n)):
            sources.append(f"{RECORD_DIR}/{name}")
            self._merged_files.append(sources[-1])
            self._runs_unsaved.add(_RUN_FILE.match(name)["run"])
        for source in sources:
            for where, _, raw in self._json_lines(source):
                self._refuse_newer(source, raw.get("svdflow_index"))
                try:
                    run = RunInfo.model_validate(raw)
                except ValidationError as exc:
                    self.skipped.append(f"{where}: run {raw.get('id')!r}: {_first_error(exc)}")
                    continue
                self.runs[run.id] = run
                self.name, self.manifest = run.name, run.manifest

    def _json_lines(self, name: str, data: bytes | None = None) -> Iterator[tuple[str, bytes | memoryview, dict]]:
        """Each object of a JSON Lines file (its bytes `data`, else read), with where it is (file:line)
        and its line (with its newline: a slice of the file as read); a line that is not a JSON object
        is left out and said in `skipped`."""
        for number, line in split_lines(self.store.read_bytes(name) or b"" if data is None else data):
            raw = self._json_line(name, number, line)
            if raw is not None:
                yield f"{name}:{number}", line, raw

    def _json_line(self, name: str, number: int, line: bytes | memoryview) -> dict | None:
        try:
            raw = loads(line)
        except ValueError as exc:
            if not is_blank(line):
                self.skipped.append(f"{name}:{number}: not JSON ({exc})")
            return None
        if not isinstance(raw, dict):
            self.skipped.append(f"{name}:{number}: not a JSON object")
            return None
        return raw

    def _refuse_newer(self, where: str, version) -> None:
        if isinstance(version, int) and version > max(READABLE_FORMATS):
            raise EnvironmentProblem(
                f"{self.store.path(where)}: index format {version} was written by a newer svdflow (this one reads "
                f"format {max(READABLE_FORMATS)}); upgrade svdflow (pip install -U svdflow) to use this folder")

    def _load_lines(self, name: str, mtime: float) -> None:
        self._note_format(INDEX_FORMAT)
        if name != INDEX_FILE:
            self._merged_files.append(name)
        data = self.store.read_bytes(name) or b""
        # index.jsonl's summaries, when they are the ones for the bytes read: no line parsed
        rows = read_summaries(self.store.read_bytes(SUMMARIES_FILE), data) if name == INDEX_FILE and data else None
        if rows is None:
            for where, line, raw in self._json_lines(name, data):
                self._load_line(where, line, raw, mtime)
            return
        view, only, runs = memoryview(data), self.only, self.runs
        for number, row in enumerate(rows, 1):
            if only is not None and row.job_id not in only:
                continue
            line = view[row.start:row.end]
            if row.summary is not None and row.run_id in runs:
                self._merge(row.job_id, line, row.run_id, row.summary, mtime)
            elif (raw := self._json_line(name, number, line)) is not None:
                self._load_line(f"{name}:{number}", line, raw, mtime)

    def _load_line(self, where: str, line: bytes | memoryview, raw: dict, mtime: float) -> None:
        if self.only is not None and raw.get("id") not in self.only:
            return
        summary = self._summarize(raw, where)
        if summary is not None:
            self._merge(raw["id"], line, raw["run_id"], summary, mtime)

    def _summarize(self, raw: dict, where: str) -> EntrySummary | None:
        """The summary of a line, checked as strictly as the entry's model would check those fields; a
        line that does not pass is validated whole, to say why it is left out."""
        summary = summarize(raw)
        if summary is None or raw.get("run_id") not in self.runs:
            self._explain(raw, where)
            return None
        return summary

    def _explain(self, raw: dict, where: str) -> None:
        job = raw.get("id")
        if raw.get("run_id") not in self.runs:
            self.skipped.append(f"{where}: job {job!r}: run_id: no run {raw.get('run_id')!r} in {RUNS_FILE}")
            return
        try:
            self._resolve(raw)
        except ValidationError as exc:
            self.skipped.append(f"{where}: job {job!r}: {_first_error(exc)}")
            return
        self.skipped.append(f"{where}: job {job!r}: not an entry")

    def _load_legacy(self, name: str, mtime: float, *, document: bool) -> None:
        """A format 1 or 2 index.json (or rank shard): each entry validated whole (once: the next
        compaction writes them as format 3)."""
        data = self.store.read_bytes(name)
        try:
            parsed = json.loads(data) if data is not None else None
        except ValueError as exc:
            if document:
                self.unreadable = f"cannot be read as JSON ({exc})"
            return
        if not isinstance(parsed, dict) or not isinstance(parsed.get("jobs"), list):
            if document:
                self.unreadable = "not an svdflow index (no \"jobs\" list)"
            return
        self._refuse_newer(name, parsed.get("svdflow_index"))
        self._merged_files.append(name)
        version = parsed.get("svdflow_index")
        self._note_format(version if isinstance(version, int) else 1)
        if document:
            self.name = self.name or _text(parsed.get("name"))
            self.manifest = self.manifest or _text(parsed.get("manifest"))
        for raw in parsed["jobs"]:
            if self.only is not None and (not isinstance(raw, dict) or raw.get("id") not in self.only):
                continue
            entry = self._entry(raw, name)
            if entry is not None:
                self._merge_entry(entry, mtime)

    def _load_sidecars(self, unfinished: bool) -> None:
        """Sidecars of jobs whose line is missing, and, where a writer did not finish (`unfinished`), those
        newer than their line: what a run killed between a job's sidecar and its part (or compaction)
        recorded. A sidecar older than the file its job's line came from is in that file: not read."""
        slots, only = self._slots, self.only
        for name in self.listing:
            if not name.endswith(".json"):
                continue
            job_id = name[: -len(".json")]
            slot = slots.get(job_id)
            if slot is not None and not unfinished:  # most names of a clean record: no pattern tried
                continue
            if name.startswith(".") or name == LEGACY_INDEX_FILE or LEGACY_SHARD.match(name) \
                    or not _JOB_ID.fullmatch(job_id) or (only is not None and job_id not in only):
                continue
            info = self.listing.get(name)
            if info is None or (slot is not None and slot.mtime is not None and slot.mtime > info.mtime):
                continue
            raw = self.store.read_json(name)
            if isinstance(raw, dict) and raw.get("id") == job_id:
                entry = self._entry(raw, name)
                if entry is not None:
                    self._merge_entry(entry, info.mtime)

    def _note_format(self, version: int) -> None:
        self.format_read = version if self.format_read is None else min(self.format_read, version)

    def _entry(self, raw, where: str) -> IndexEntry | None:
        try:
            return IndexEntry.model_validate(upgrade_entry(raw))
        except ValidationError as exc:
            job = raw.get("id") if isinstance(raw, dict) else None
            self.skipped.append(f"{where}: job {job!r}: {_first_error(exc)}")
            return None

    def _merge(self, job_id: str, line: bytes | memoryview, run_id: str, summary: EntrySummary,
               mtime: float | None) -> None:
        current = self._slots.get(job_id)
        if current is None or summary.finished_unix >= current.summary.finished_unix:
            self._slots[job_id] = _Slot(line, run_id, summary, mtime)

    def _merge_entry(self, entry: IndexEntry, mtime: float | None) -> None:
        """An entry read whole (a sidecar, a format 1/2 index): kept as its line, under its run (one
        made up from it when its run has no record: format 1 and 2, or a run killed before its first)."""
        data = entry.model_dump(mode="json")
        run_id = entry.run.id if entry.run.id in self.runs else self._legacy_run(entry, data)
        self._merge(entry.id, _line(data, self.runs[run_id]), run_id, summarize(data), mtime)

    def _legacy_run(self, entry: IndexEntry, data: dict) -> str:
        shared = {name: data[name] for name in SHARED_FIELDS}
        digest = hashlib.sha256(json.dumps([entry.run.name, entry.run.manifest, shared], sort_keys=True).encode())
        run_id = entry.run.id or f"legacy-{digest.hexdigest()[:12]}"
        if run_id not in self.runs:
            self.runs[run_id] = RunInfo(svdflow_index=INDEX_FORMAT, id=run_id, name=entry.run.name,
                                        manifest=entry.run.manifest, started_at=None,
                                        **{name: getattr(entry, name) for name in SHARED_FIELDS})
            self._runs_unsaved.add(run_id)
        return run_id

    # -- reading ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._slots

    def __iter__(self) -> Iterator[IndexEntry]:
        """Every entry, validated one at a time, in the record's order (those that no longer validate,
        e.g. edited by hand since loading, are left out and said in `skipped`)."""
        for job_id in list(self._slots):
            entry = self.get(job_id)
            if entry is not None:
                yield entry

    def ids(self) -> list[str]:
        return list(self._slots)

    @property
    def entries(self) -> dict[str, IndexEntry]:
        """Every entry by id, validated (for a folder of a few thousand jobs; iterate for bounded memory)."""
        return {entry.id: entry for entry in self}

    def summary(self, job_id: str) -> EntrySummary | None:
        slot = self._slots.get(job_id)
        return slot.summary if slot is not None else None

    def line(self, job_id: str) -> bytes | None:
        """The job's line as recorded (compact JSON; its run's shared parts left out, named by run_id):
        what a reader that caches work per entry keys its cache by, without validating the entry."""
        slot = self._slots.get(job_id)
        return bytes(slot.line) if slot is not None else None  # a slot's line may be a slice of its file

    def get(self, job_id: str) -> IndexEntry | None:
        slot = self._slots.get(job_id)
        if slot is None:
            return None
        try:
            return self._resolve(loads(slot.line))
        except ValidationError as exc:
            self.skipped.append(f"job {job_id!r}: {_first_error(exc)}")
            return None

    def _resolve(self, raw: dict) -> IndexEntry:
        """A line's whole entry: what it leaves out, from its run."""
        run = self.runs[raw.pop("run_id")]
        for name in SHARED_FIELDS:
            if name not in raw:
                raw[name] = getattr(run, name)
        raw["run"] = {"name": run.name, "manifest": run.manifest, "id": run.id}
        return IndexEntry.model_validate(raw)

    def snapshot(self) -> RunIndex:
        """A copy of the record as it is now, for reading while this index goes on recording."""
        copy = RunIndex(self.store, run_id=self.run_id, compacts=False, only=self.only)
        copy.name, copy.manifest, copy.updated_at, copy.format_read = self.name, self.manifest, self.updated_at, \
            self.format_read
        copy.listing, copy.runs, copy._slots = self.listing, dict(self.runs), dict(self._slots)
        copy._masters = self._masters
        return copy

    def file_size(self, name: str) -> int | None:
        """A file's size (None: missing, or a folder): from the listing loading made of the folder, and
        of `.svdflow/masters/` (listed once, when first asked), so that a plan makes no request per file."""
        folder, _, base = name.rpartition("/")
        if folder == "":
            info = self.listing.get(name)
        elif folder == MASTERS_DIR:
            if self._masters is None:
                self._masters = self.store.listing(MASTERS_DIR)
            info = self._masters.get(base)
        else:
            return self.store.size(name)
        return info.size if info is not None else None

    def outputs_intact(self, job_id: str) -> bool:
        """Every output the job's entry records was there when the folder was listed, of the recorded size.

        A file of another size is not this entry's output: a run killed after replacing a job's files
        but before recording it leaves the old record beside the new files.
        """
        summary = self.summary(job_id)
        if summary is None:
            return False
        for fmt, file, size in summary.outputs:
            info = self.listing.get(file)
            if info is None:
                return False
            if fmt != "frames" and info.size != size:  # a folder's size is its PNGs' total
                return False
        return True

    def masters_bytes(self) -> int:
        """The recorded masters' total size."""
        return sum(slot.summary.master[1] for slot in self._slots.values() if slot.summary.master is not None)

    def orphans(self, job_ids: set[str]) -> list[str]:
        """Recorded jobs that are no longer in the manifest (their files are kept)."""
        return [job_id for job_id in self._slots if job_id not in job_ids]

    # -- recording ----------------------------------------------------------------------------------

    def record(self, entry: IndexEntry) -> None:
        """Keep a finished job's entry: its sidecar now (the job is recorded once that is written), its
        line in the next part (`flush_if_due`). A file of the sidecar's name that is not svdflow's (a
        user's `package.json` beside an item `package`, whose job then fails) is left alone: the index
        holds the entry."""
        if not self._run_written:
            self._write_run(entry)
        entry = entry.model_copy(update={"run": entry.run.model_copy(update={"id": self.run_id})})
        self._keep(entry, self.runs[self.run_id], last=True)

    def amend(self, entry: IndexEntry) -> None:
        """Record again a recorded job whose entry gained what its run did not know (its quality, from
        `svdflow qc`): its sidecar now and its line in the next part, like `record`, but under the run
        that rendered it (whose shared parts and manifest are still its own) and in its place."""
        run = self.runs.get(entry.run.id) if entry.run.id is not None else None
        if run is None or entry.id not in self._slots:
            raise ValueError(f"job {entry.id!r} of run {entry.run.id!r} is not in this record: record() it instead")
        if not self._traced:  # before its first sidecar: the next load then reads the sidecars' times
            name = f"{RECORD_DIR}/{self.run_id}.open"
            self.store.write_bytes(name, b"")
            self._merged_files.append(name)
            self._traced = True
        self._keep(entry, run, last=False)

    def _keep(self, entry: IndexEntry, run: RunInfo, *, last: bool) -> None:
        """Write the entry's sidecar (unless a file of its name is not svdflow's), put its line in the job's
        slot (moved `last`: listed in the order jobs finish, until `order_by`) and among the lines the
        next part seals."""
        data = entry.model_dump(mode="json")
        if self._sidecar_free(entry.id):
            self.store.write_bytes(f"{entry.id}.json", _pretty(data))
            self._sidecar_at = time.monotonic()
        line = _line(data, run)
        if last:
            self._slots.pop(entry.id, None)
        self._slots[entry.id] = _Slot(line, run.id, summarize(data), None)
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(line)

    def _write_run(self, entry: IndexEntry) -> None:
        """This run's record, from its first entry (the model's commit and the hardware are known
        once a job rendered), written before any line names it."""
        run = RunInfo(svdflow_index=INDEX_FORMAT, id=self.run_id, name=entry.run.name, manifest=entry.run.manifest,
                      started_at=_run_started(self.run_id), **{name: getattr(entry, name) for name in SHARED_FIELDS})
        name = f"{RECORD_DIR}/{self.run_id}.run.json"
        self.store.write_bytes(name, run.to_line())
        self.runs[run.id] = run
        self._runs_unsaved.add(run.id)
        self._merged_files.append(name)
        self._run_written = self._traced = True

    def _sidecar_free(self, job_id: str) -> bool:
        """No file of the sidecar's name, or one of svdflow's for this job (a killed run's). A recorded
        job's sidecar is svdflow's; on an object store the listing loading made answers for the others,
        so recording costs no request beyond the sidecar's PUT."""
        name = f"{job_id}.json"
        if job_id in self._slots or not (self.store.exists(name) if self.store.is_local else name in self.listing):
            return True
        raw = self.store.read_json(name)
        return isinstance(raw, dict) and raw.get("id") == job_id

    def flush_if_due(self) -> None:
        """Seal the kept lines into a part when there are enough of them or they are old enough; compact
        when the parts have outgrown index.jsonl."""
        if len(self._pending) >= SEAL_ENTRIES or (
                self._pending and time.monotonic() - self._pending_since >= SEAL_AGE_S):
            self.seal()
            if self.compacts and self._parts_bytes >= max(self._index_bytes, COMPACT_MIN_BYTES):
                self.compact()

    def seal(self) -> None:
        """Write the kept lines as a new part (once; it is never changed, only removed by a compaction)."""
        if not self._pending:
            return
        name = f"{RECORD_DIR}/{self.run_id}.{self._seq:06d}.jsonl"
        data = b"".join(self._pending)
        self.store.write_bytes(name, data)
        self._seq += 1
        self._merged_files.append(name)
        self._parts_bytes += len(data)
        self._pending = []

    def compact(self) -> None:
        """Write the whole record as runs.jsonl and index.jsonl, then remove what they now hold (parts,
        run records, a format 1/2 index.json and its shards). Killed half-way, the next load merges
        the same entries again."""
        if self._runs_unsaved:
            runs = b"".join(run.to_line() for run in self.runs.values())
            self.store.write_bytes(RUNS_FILE, runs)
        data = b"".join(slot.line for slot in self._slots.values())
        self.store.write_bytes(INDEX_FILE, data)
        self.store.write_bytes(SUMMARIES_FILE, summaries_bytes(data, (
            (job_id, slot.run_id, len(slot.line), slot.summary) for job_id, slot in self._slots.items())))
        for name in self._merged_files:
            self.store.remove(name)
        self._merged_files, self._runs_unsaved, self._pending = [], set(), []
        self._parts_bytes, self._index_bytes = 0, len(data)
        self.format_read = INDEX_FORMAT

    @property
    def needs_compaction(self) -> bool:
        """Something is recorded outside index.jsonl: lines kept or in parts, or an older format."""
        return bool(self._pending or self._merged_files or self._runs_unsaved) or (
            self.format_read is not None and self.format_read < INDEX_FORMAT)

    def finish(self, job_ids: list[str] | None = None) -> None:
        """The end of a run: compact (in manifest order, `job_ids`, then jobs no longer in it) when this
        index may, else seal what is kept."""
        if not self.compacts:
            self.seal()
            return
        if not self.needs_compaction:
            return
        if job_ids is not None:
            self.order_by(job_ids)
        if not self.store.is_local and self._sidecar_at is not None:
            time.sleep(max(0.0, COARSE_TIME_S - (time.monotonic() - self._sidecar_at)))
        self.compact()

    def order_by(self, job_ids: list[str]) -> None:
        """List entries in manifest order (then jobs no longer in it), whatever order they finished in."""
        position = {job_id: i for i, job_id in enumerate(job_ids)}
        ordered = sorted(self._slots, key=lambda job_id: position.get(job_id, len(position)))
        self._slots = {job_id: self._slots[job_id] for job_id in ordered}


def _line(data: dict, run: RunInfo) -> bytes:
    """An entry's line: compact JSON, run_id in place of its run, the shared parts its run holds left out."""
    shared = _shared_json(run)
    line = {}
    for name, value in data.items():
        if name == "run":
            line["run_id"] = run.id
        elif name not in SHARED_FIELDS or value != shared[name]:
            line[name] = value
    return _LINE_JSON(line).encode("utf-8") + b"\n"


# json.dumps(line, separators=(",", ":"), ensure_ascii=False), as one encoder (dumps makes one per call).
_LINE_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


_SHARED_JSON: dict[int, tuple[RunInfo, dict]] = {}


def _shared_json(run: RunInfo) -> dict:
    """The run's shared parts as JSON, dumped once per run (not once per job)."""
    cached = _SHARED_JSON.get(id(run))
    if cached is None or cached[0] is not run:
        if len(_SHARED_JSON) > 256:
            _SHARED_JSON.clear()
        cached = _SHARED_JSON[id(run)] = (run, run.model_dump(mode="json", include=set(SHARED_FIELDS)))
    return cached[1]


def _pretty(value: dict) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode("utf-8")


def _run_started(run_id: str) -> str | None:
    stamp = run_id.partition("-")[0]
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def _text(value) -> str | None:
    return value if isinstance(value, str) else None
