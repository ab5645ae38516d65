"""index.json and the per-job sidecars: the record of what was rendered, and how.

Each finished job writes its sidecar `<id>.json` atomically first; index.json is rewritten
atomically from all entries at most every few seconds and at the end of a run. After a crash the
index may lag behind, never lie: loading merges newer sidecars back in.
"""

from __future__ import annotations

import re
import time
from typing import Any

from svdflow.outputs.store import OutputStore

INDEX_FILE = "index.json"
INDEX_FORMAT = 1
# Under a multi-process launcher each rank writes its own shard; rank 0 merges them into index.json.
SHARD_FILE = re.compile(r"^index\.rank(\d+)\.json$")


def shard_name(rank: int) -> str:
    return f"index.rank{rank}.json"


class RunIndex:
    """All entries of one output folder, by job id, in the order they were first recorded."""

    def __init__(self, store: OutputStore, entries: dict[str, dict[str, Any]], meta: dict[str, Any] | None = None,
                 flush_every_s: float = 2.0, file_name: str = INDEX_FILE):
        self.store = store
        self.file_name = file_name  # index.json, or this rank's shard
        self.entries = entries
        self.meta = dict(meta or {})  # run-level fields written at the top of index.json
        self.flush_every_s = flush_every_s
        self._last_flush = 0.0
        self._dirty = False
        self.shards: list[str] = []  # the shard files load() merged (a killed multi-process run's)

    @classmethod
    def load(cls, store: OutputStore, **kwargs: Any) -> RunIndex:
        document = store.read_json(INDEX_FILE)
        entries: dict[str, dict[str, Any]] = {}
        meta: dict[str, Any] = {}
        if isinstance(document, dict) and isinstance(document.get("jobs"), list):
            meta = {k: v for k, v in document.items() if k not in ("jobs", "svdflow_index", "updated_at")}
            for entry in document["jobs"]:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    entries[entry["id"]] = entry
        index_mtime = store.mtime(INDEX_FILE)
        names = store.json_files()
        shards = [name for name in names if SHARD_FILE.match(name)]
        for name in shards:
            shard = store.read_json(name)
            for entry in (shard or {}).get("jobs", []) if isinstance(shard, dict) else []:
                if _is_newer(entry, entries.get(entry.get("id"))):
                    entries[entry["id"]] = entry
        for name in names:
            job_id = name[: -len(".json")]
            if name == INDEX_FILE or name in shards or job_id in entries and index_mtime is not None and (
                    (store.mtime(name) or 0) < index_mtime):
                continue
            sidecar = store.read_json(name)
            if _is_newer(sidecar, entries.get(job_id)):
                entries[job_id] = sidecar
        index = cls(store, entries, meta, **kwargs)
        index.shards = shards
        return index

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.entries.get(job_id)

    def is_up_to_date(self, job_id: str, key: str) -> bool:
        """Done with this key, and every recorded output still there, of the recorded size.

        A file of another size is not this entry's output: a run killed after replacing a job's files
        but before recording it leaves the old record beside the new files.
        """
        entry = self.entries.get(job_id)
        if not entry or entry.get("status") != "done" or entry.get("key") != key:
            return False
        return all(self._output_as_recorded(out) for out in entry.get("outputs", []))

    def _output_as_recorded(self, out: dict[str, Any]) -> bool:
        if out.get("format") == "frames" or "bytes" not in out:  # a folder's size is its PNGs' total
            return self.store.exists(out["file"])
        return self.store.size(out["file"]) == out["bytes"]

    def record(self, entry: dict[str, Any]) -> None:
        """Keep a finished job's entry: its sidecar now, the index soon."""
        self.entries[entry["id"]] = entry
        self.store.write_json(f"{entry['id']}.json", entry)
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self, force: bool = False) -> None:
        if not (self._dirty or force):
            return
        document = {"svdflow_index": INDEX_FORMAT, **self.meta, "updated_at": _now(),
                    "jobs": list(self.entries.values())}
        self.store.write_json(self.file_name, document)
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


def _is_newer(candidate: Any, current: dict[str, Any] | None) -> bool:
    if not isinstance(candidate, dict) or not isinstance(candidate.get("id"), str):
        return False
    if current is None:
        return True
    return candidate.get("finished_unix", 0) > current.get("finished_unix", 0)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
