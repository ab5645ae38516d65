"""What `svdflow inspect` and `svdflow rerender` read: the provenance a file carries, or a job's entry
in the JSON svdflow wrote beside its files (a sidecar `<id>.json`, or the folder's record: its
index.jsonl, or a format 1/2 index.json, and the job's id)."""

from __future__ import annotations

import json
import os

from pydantic import ValidationError

from svdflow.errors import UsageError
from svdflow.outputs.entry import READABLE_FORMATS, IndexEntry, Provenance
from svdflow.outputs.index import RunIndex
from svdflow.outputs.provenance import read_provenance
from svdflow.outputs.store import OutputStore
from svdflow.outputs.upgrade import upgrade_entry

# A sidecar is one entry (a few KiB); more is not one.
MAX_SIDECAR_BYTES = 16 << 20


def read_record(path: str, job_id: str | None = None) -> Provenance | IndexEntry:
    """The provenance of a file svdflow wrote, or the entry of a sidecar or (with `job_id`) an index.json.
    UsageError, naming the file and what to pass instead, for anything else."""
    if path.endswith(".jsonl"):
        return _index_entry(path, job_id)
    if not path.endswith(".json"):
        provenance = read_provenance(path)
        if job_id is not None and job_id != provenance.id:
            raise UsageError(f"{path}: made by job '{provenance.id}', not '{job_id}'; drop --id or pass that job's file")
        return provenance
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file; pass a sidecar <id>.json or an index.json svdflow wrote")
    if os.path.getsize(path) <= MAX_SIDECAR_BYTES:
        with open(path, "rb") as f:
            raw = _json(f.read())
        if not isinstance(raw, dict):
            raise UsageError(f"{path}: not an svdflow sidecar or index.json (not a JSON object); pass a <id>.json "
                             "or index.json svdflow wrote")
        if "jobs" not in raw:
            return _sidecar(path, raw, job_id)
    return _index_entry(path, job_id)


def _json(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return None


def _sidecar(path: str, raw: dict, job_id: str | None) -> IndexEntry:
    if "id" not in raw or "status" not in raw:
        raise UsageError(f"{path}: not an svdflow sidecar or index.json (no job id and status); pass a <id>.json "
                         "or index.json svdflow wrote")
    try:
        entry = IndexEntry.model_validate(upgrade_entry(raw))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "(the JSON)"
        raise UsageError(f"{path}: a sidecar this svdflow cannot read ({where}: {error['msg']}; it reads index "
                         f"formats {', '.join(map(str, READABLE_FORMATS))}); read it with the svdflow that wrote "
                         "it") from exc
    if job_id is not None and job_id != entry.id:
        raise UsageError(f"{path}: the sidecar of job '{entry.id}', not '{job_id}'; drop --id or pass that job's "
                         f"{job_id}.json")
    return entry


def _index_entry(path: str, job_id: str | None) -> IndexEntry:
    if job_id is None:
        raise UsageError(f"{path}: an index holds many jobs; pass --id ID to say which (or pass the job's "
                         "sidecar <id>.json or one of its files)")
    return index_entry(path, job_id)


def index_entry(index_path: str, job_id: str) -> IndexEntry:
    """The entry of `job_id` in an output folder's record (the folder, its index.jsonl or a format 1/2
    index.json), as a run reads it: parts and newer sidecars merged in, its line completed by its run.
    UsageError naming the file when it is no record or has no such job."""
    folder = index_path if os.path.isdir(index_path) else os.path.dirname(index_path)
    index = RunIndex.load(OutputStore(folder or "."))
    if index.unreadable:
        raise UsageError(f"{index_path}: not an svdflow record ({index.unreadable}); pass the output folder of a "
                         "run (or its index.jsonl)")
    entry = index.get(job_id)
    if entry is None:
        known = ", ".join(sorted(index.ids())[:10])
        raise UsageError(f"{index_path}: no job '{job_id}' in this index; known ids: {known}")
    return entry
