"""Whose folder it is: svdflow writes only into an output folder that is new, empty, or its own.

A folder is svdflow's when it holds `.svdflow` (the folder every run makes, where masters live: the
mark), or what a run of an earlier release always left: `.svdflow.lock`, or an index.json of svdflow's
format. A folder holding anything else is someone's (a home folder, a project, another tool's output)
and is refused before anything is written, with how to opt in: `mkdir <folder>/.svdflow`.

Inside its own folder a job still writes only names its record owns: a file in the way of one of its
outputs that no recorded entry lists (the user's `photos.mp4` beside an item `photos`) fails that job
and stays untouched, unless it carries this job's own provenance (a run killed between writing the file
and recording it).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable

from svdflow.errors import ForeignFolderError, UsageError
from svdflow.outputs.atomic import real_folder
from svdflow.outputs.failures import storing
from svdflow.outputs.provenance import read_provenance
from svdflow.outputs.store import OutputStore

MARK = ".svdflow"
MARK_NOTE = f"{MARK}/README.txt"
_LEGACY_MARKS = (".svdflow.lock",)  # every run of 0.1 left its (emptied) lock file
_INDEX = "index.json"
_INDEX_HEAD = 4096  # index.json's first key is svdflow_index: its first bytes say whose it is
_SHOWN = 3
MAX_SIDECAR = 1 << 20  # a sidecar is a few KiB; a bigger file of its name is not one  # names quoted in the refusal
_NOTE = (b"This folder is an svdflow output folder: svdflow runs write, replace and remove here only the\n"
         b"files its record (index.jsonl, the .json sidecars) lists. Keep your own files elsewhere.\n")


def _names(store: OutputStore, limit: int) -> list[str]:
    """Up to `limit` names in the folder (any order), [] when it is empty or not there."""
    if store.is_local:
        try:
            with os.scandir(store.root) as entries:
                names = []
                for entry in entries:
                    names.append(entry.name)
                    if len(names) >= limit:
                        break
                return names
        except (FileNotFoundError, NotADirectoryError):
            return []
    try:
        found = store.fs.ls(store.root, detail=False)
    except FileNotFoundError:
        return []
    return [posixpath.basename(str(p).rstrip("/")) for p in found][:limit]


def is_svdflow_folder(store: OutputStore) -> bool:
    """Marked (`.svdflow`), or left so by an earlier release (`.svdflow.lock`, svdflow's index.json)."""
    if store.is_local:
        if any(os.path.lexists(os.path.join(store.root, name)) for name in (MARK, *_LEGACY_MARKS)):
            return True
        try:
            with open(os.path.join(store.root, _INDEX), "rb") as f:
                head = f.read(_INDEX_HEAD)
        except OSError:
            return False
    else:  # the note first: a file is one request, a "folder" on an object store two
        if any(store.exists(name) for name in (MARK_NOTE, MARK)):
            return True
        # A 100,000-job index.json of 0.1 is 400 MB: its first bytes say whose it is.
        head = store.read_bytes(_INDEX, limit=_INDEX_HEAD) or b""
    return b'"svdflow_index"' in head


def check_folder_is_ours(store: OutputStore) -> None:
    """ForeignFolderError (exit 2) when the output folder holds files and is not svdflow's."""
    with storing(store.url, "looking at what it holds"):
        # The marks first: listing the folder's names on an object store lists all of them (a request
        # per thousand), which a folder svdflow marked never needs.
        if is_svdflow_folder(store):
            return
        names = _names(store, _SHOWN + 1)
        if not names:
            return
    shown = ", ".join(sorted(names)[:_SHOWN]) + (", …" if len(names) > _SHOWN else "")
    mark = os.path.join(store.url, MARK) if store.is_local else f"{store.url}/{MARK_NOTE}"
    how = f"mkdir {mark}" if store.is_local else f"create {mark}"
    raise ForeignFolderError(
        f"output folder {store.url}: it holds files svdflow did not write ({shown}) and is not an svdflow output "
        f"folder; choose a new or empty output.dir, or let svdflow write among them by marking it as "
        f"one ({how})")


def mark_folder(store: OutputStore) -> None:
    """Mark a folder svdflow now owns (the caller holds its lock); nothing when it is marked already."""
    with storing(store.url, f"marking it ({MARK_NOTE})"):
        if store.is_local:
            real_folder(store.root, MARK)
        if not store.exists(MARK_NOTE):
            store.write_bytes(MARK_NOTE, _NOTE)


def owned_names(outputs: Iterable[tuple[str, str, int]], master: tuple[str, int] | None) -> tuple[str, ...]:
    """The names a job's record lists in the output folder: its files ((format, file, bytes), as the
    record's summary holds them) and its master. (Its sidecar is told by its content: a file of that
    name is svdflow's when it is this job's record.)"""
    names = [file for _, file, _ in outputs]
    if master is not None:
        names.append(master[0])
    return tuple(names)


def names_in_the_way(store: OutputStore, job_id: str, names: Iterable[str], owned: Iterable[str]) -> list[str]:
    """Which of `names` (a job's files, by name in the folder) are there although no record of the job
    lists them (`owned`) and they are not this job's own: files svdflow must not replace."""
    owned = set(owned)
    in_the_way = []
    for name in names:
        if name in owned:
            continue
        there = os.path.lexists(os.path.join(store.root, name)) if store.is_local else store.exists(name)
        if there and not _written_for(store, name, job_id):
            in_the_way.append(name)
    return in_the_way


def _written_for(store: OutputStore, name: str, job_id: str) -> bool:
    """Whether the file is this job's own: its sidecar, or a file written by a run killed before it
    recorded it (its embedded provenance names the job; read from local folders only)."""
    path = os.path.join(store.root, name)
    if store.is_local and os.path.islink(path):
        return False
    if name.endswith(".json"):
        size = store.size(name)
        if size is None or size > MAX_SIDECAR:
            return False
        try:
            raw = json.loads(store.read_bytes(name) or b"")
        except ValueError:
            return False
        return isinstance(raw, dict) and raw.get("id") == job_id
    if not store.is_local:
        return False
    try:
        return read_provenance(path).id == job_id
    except (UsageError, OSError, ValueError):
        return False
