"""index.json and the per-job sidecars: the only code that reads or writes them.

Each finished job writes its sidecar `<id>.json` atomically first; index.json is rewritten
atomically from all entries at most every few seconds and at the end of a run. After a crash the
index may lag behind, never lie: loading merges newer sidecars (and a killed multi-process run's
rank shards) back in. Their shape is `svdflow.outputs.entry`.
"""

from __future__ import annotations

import json
import re
import time

from pydantic import ValidationError

from svdflow.errors import EnvironmentProblem
from svdflow.outputs.entry import INDEX_FORMAT, READABLE_FORMATS, IndexDocument, IndexEntry
from svdflow.outputs.store import OutputStore
from svdflow.outputs.upgrade import upgrade_entry

INDEX_FILE = "index.json"
# Under a multi-process launcher each rank writes its own shard; rank 0 merges them into index.json.
SHARD_FILE = re.compile(r"^index\.rank(\d+)\.json$")


def shard_name(rank: int) -> str:
    return f"index.rank{rank}.json"


class RunIndex:
    """All entries of one output folder, by job id, in the order they were first recorded."""

    def __init__(self, store: OutputStore, entries: dict[str, IndexEntry] | None = None, *,
                 name: str | None = None, manifest: str | None = None, updated_at: str | None = None,
                 flush_every_s: float = 2.0, file_name: str = INDEX_FILE):
        self.store = store
        self.file_name = file_name  # index.json, or this rank's shard
        self.entries: dict[str, IndexEntry] = dict(entries or {})
        self.name, self.manifest, self.updated_at = name, manifest, updated_at  # the document's own fields
        self.flush_every_s = flush_every_s
        self.format_read: int | None = None  # the format index.json was in (None: there was none)
        self.unreadable: str | None = None  # why index.json could not be used: missing, not JSON, ...
        self.skipped: list[str] = []  # entries that did not fit the format, and why (left out)
        self.shards: list[str] = []  # the shard files load() merged (a killed multi-process run's)
        self._last_flush = 0.0
        self._dirty = False

    @classmethod
    def load(cls, store: OutputStore, *, document: str = INDEX_FILE, sidecars: bool = True,
             **kwargs) -> RunIndex:
        """The folder's record: `document` (index.json), then newer rank shards and sidecars.

        An unreadable document or entry is left out (its job renders again, nothing is lost); a
        document from a newer svdflow is refused, so this one never writes over what it cannot read.
        """
        index = cls(store, **kwargs)
        parsed, index.unreadable = index._read(document)
        if parsed is not None:
            index.format_read = parsed.get("svdflow_index")
            index.name, index.manifest, index.updated_at = (
                _text(parsed.get("name")), _text(parsed.get("manifest")), _text(parsed.get("updated_at")))
            for raw in parsed.get("jobs", []):
                if (entry := index._entry(raw, document)) is not None:
                    index.entries[entry.id] = entry
        if not sidecars:
            return index
        index_mtime = store.mtime(document)
        names = store.json_files()
        index.shards = [name for name in names if SHARD_FILE.match(name)]
        for name in index.shards:
            shard, _ = index._read(name)
            for raw in (shard or {}).get("jobs", []):
                index._merge(index._entry(raw, name))
        for name in names:
            job_id = name[: -len(".json")]
            if name == document or name in index.shards:
                continue
            if job_id in index.entries and index_mtime is not None and (store.mtime(name) or 0) < index_mtime:
                continue  # older than the index: already in it
            raw = store.read_json(name)
            if isinstance(raw, dict) and raw.get("id") == job_id:
                index._merge(index._entry(raw, name))
        return index

    def _read(self, name: str) -> tuple[dict | None, str | None]:
        """The parsed document, or None and why it cannot be used."""
        data = self.store.read_bytes(name)
        if data is None:
            return None, "missing"
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            return None, f"cannot be read as JSON ({exc})"
        if not isinstance(parsed, dict) or not isinstance(parsed.get("jobs"), list):
            return None, "not an svdflow index (no \"jobs\" list)"
        version = parsed.get("svdflow_index")
        if isinstance(version, int) and version > max(READABLE_FORMATS):
            raise EnvironmentProblem(
                f"{self.store.path(name)}: index format {version} was written by a newer svdflow (this one reads "
                f"format {max(READABLE_FORMATS)}); upgrade svdflow (pip install -U svdflow) to use this folder")
        return parsed, None

    def _entry(self, raw, where: str) -> IndexEntry | None:
        try:
            return IndexEntry.model_validate(upgrade_entry(raw))
        except ValidationError as exc:
            job = raw.get("id") if isinstance(raw, dict) else None
            error = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in error["loc"])
            self.skipped.append(f"{where}: job {job!r}: {field}: {error['msg']}")
            return None

    def _merge(self, entry: IndexEntry | None) -> None:
        if entry is None:
            return
        current = self.entries.get(entry.id)
        if current is None or entry.finished_unix > current.finished_unix:
            self.entries[entry.id] = entry

    def snapshot(self) -> RunIndex:
        """A copy of the entries as they are now, for reading while this index goes on recording."""
        copy = RunIndex(self.store, self.entries, name=self.name, manifest=self.manifest,
                        updated_at=self.updated_at, file_name=self.file_name)
        copy.format_read = self.format_read
        return copy

    def get(self, job_id: str) -> IndexEntry | None:
        return self.entries.get(job_id)

    def outputs_intact(self, job_id: str) -> bool:
        """Every output the job's entry records is still there, of the recorded size.

        A file of another size is not this entry's output: a run killed after replacing a job's files
        but before recording it leaves the old record beside the new files.
        """
        entry = self.entries.get(job_id)
        if entry is None:
            return False
        for out in entry.outputs:
            if out.format == "frames":  # a folder's size is its PNGs' total
                if not self.store.exists(out.file):
                    return False
            elif self.store.size(out.file) != out.bytes:
                return False
        return True

    def masters_bytes(self) -> int:
        """The recorded masters' total size."""
        return sum(entry.master.bytes for entry in self.entries.values() if entry.master is not None)

    def record(self, entry: IndexEntry) -> None:
        """Keep a finished job's entry: its sidecar now (the job is recorded once that is written), the
        index soon (`flush_if_due`). A file of the sidecar's name that is not svdflow's (a user's
        `package.json` beside an item `package`, whose job then fails) is left alone: the index holds it."""
        if self._sidecar_free(entry.id):
            self.store.write_bytes(f"{entry.id}.json", entry.to_json_bytes())
        self.entries[entry.id] = entry
        self._dirty = True

    def _sidecar_free(self, job_id: str) -> bool:
        """No file of the sidecar's name, or one of svdflow's for this job (a killed run's)."""
        name = f"{job_id}.json"
        if not self.store.exists(name):
            return True
        raw = self.store.read_json(name)
        return isinstance(raw, dict) and raw.get("id") == job_id

    def flush_if_due(self) -> None:
        """Write the whole index when the last write is `flush_every_s` old."""
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Write the whole index, in the current format (an older one read is upgraded here)."""
        if not (self._dirty or force):
            return
        self.updated_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        document = IndexDocument(svdflow_index=INDEX_FORMAT, name=self.name, manifest=self.manifest,
                                 updated_at=self.updated_at, jobs=list(self.entries.values()))
        self.store.write_bytes(self.file_name, document.to_json_bytes())
        self._last_flush = time.monotonic()
        self._dirty = False

    def order_by(self, job_ids: list[str]) -> None:
        """List entries in manifest order (then jobs no longer in it), whatever order they finished in."""
        position = {job_id: i for i, job_id in enumerate(job_ids)}
        ordered = sorted(self.entries, key=lambda job_id: position.get(job_id, len(position)))
        self.entries = {job_id: self.entries[job_id] for job_id in ordered}

    def remove_shards(self) -> None:
        """After a merge into index.json, the shards it loaded say nothing new."""
        for name in self.shards:
            self.store.remove(name)
        self.shards = []

    def orphans(self, job_ids: set[str]) -> list[str]:
        """Recorded jobs that are no longer in the manifest (their files are kept)."""
        return [job_id for job_id in self.entries if job_id not in job_ids]


def _text(value) -> str | None:
    return value if isinstance(value, str) else None
