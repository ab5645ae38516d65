"""Input hashes, remembered in the output folder (`.svdflow/inputs.jsonl`), so that planning or
running an unchanged campaign again reads no image bytes.

A job's key holds its input's sha256. Hashing means reading every image, which for a bucket of
100,000 images is the whole bucket, on every plan. So each input's hash is kept with what says
whether the file changed: its size and its mtime (local files: nanoseconds), or its ETag, version id
or modification time (object stores); any of them different, and the image is read and hashed again.
Local files cost one stat each; objects in a store cost one listing per folder of them (not a
request per object). Inputs over HTTP(S) and chained URLs have no cheap stamp: they are hashed each
time, as before. A job that renders still hashes the bytes it renders (`svdflow.run.tickets`).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import fsspec

from svdflow.errors import InputError
from svdflow.inputs import fetch_bytes
from svdflow.locations import Location
from svdflow.outputs.store import OutputStore

HASHES_FILE = ".svdflow/inputs.jsonl"
Stamp = tuple[int, str]  # (size, what changes when the file does)


class InputHashes:
    """The remembered (uri, size, stamp) -> sha256 of one output folder's inputs."""

    def __init__(self, store: OutputStore | None):
        self.store = store
        self._known: dict[str, tuple[Stamp, str]] = {}
        self._changed = False

    @classmethod
    def load(cls, store: OutputStore) -> InputHashes:
        hashes = cls(store)
        for line in (store.read_bytes(HASHES_FILE) or b"").splitlines():
            try:
                raw = json.loads(line)
                uri, size, stamp, sha = raw["uri"], raw["size"], raw["stamp"], raw["sha256"]
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line costs one hash, nothing else
            if isinstance(uri, str) and type(size) is int and isinstance(stamp, str) and isinstance(sha, str):
                hashes._known[uri] = ((size, stamp), sha)
        return hashes

    def cached(self, stamps: dict[str, Stamp | None]) -> dict[str, str]:
        """The remembered sha256 of each input whose stamp is unchanged."""
        out = {}
        for uri, stamp in stamps.items():
            known = self._known.get(uri)
            if stamp is not None and known is not None and known[0] == stamp:
                out[uri] = known[1]
        return out

    def remember(self, uri: str, stamp: Stamp | None, sha256: str) -> None:
        if stamp is None:
            return
        if self._known.get(uri) != (stamp, sha256):
            self._known[uri] = (stamp, sha256)
            self._changed = True

    def save(self) -> None:
        """Write what changed (once per run: the whole file, one line per input)."""
        if not self._changed or self.store is None:
            return
        lines = (json.dumps({"uri": uri, "size": stamp[0], "stamp": stamp[1], "sha256": sha},
                            separators=(",", ":")) + "\n" for uri, (stamp, sha) in self._known.items())
        self.store.write_bytes(HASHES_FILE, "".join(lines).encode("utf-8"))
        self._changed = False

    def hash_all(self, uris: list[str], workers: int = 8,
                 stamps: dict[str, Stamp | None] | None = None) -> dict[str, str | InputError]:
        """Every input's sha256 (or why it cannot be read): remembered where its stamp is unchanged,
        read and hashed (and remembered) where not. Remote ones concurrently (each waits on the
        network); local ones here, where threads would only queue for the GIL. `stamps`: the inputs'
        stamps, where the caller has them already (`input_stamps`)."""
        stamps = input_stamps(uris) if stamps is None else {uri: stamps.get(uri) for uri in uris}
        out: dict[str, str | InputError] = dict(self.cached(stamps))
        todo = [uri for uri in uris if uri not in out]
        local = [uri for uri in todo if Location.parse(uri).is_local]
        local_set = set(local)
        remote = [uri for uri in todo if uri not in local_set]
        out.update({uri: _safe_hash(uri) for uri in local})
        if remote:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(remote)))) as pool:
                out.update(zip(remote, pool.map(_safe_hash, remote)))
        for uri in todo:
            if isinstance(out[uri], str):
                self.remember(uri, stamps.get(uri), out[uri])
        return out


def input_sha256(uri: str) -> str:
    return hashlib.sha256(fetch_bytes(uri)).hexdigest()


def _safe_hash(uri: str) -> str | InputError:
    try:
        return input_sha256(uri)
    except InputError as exc:
        return exc


def input_stamps(uris: list[str]) -> dict[str, Stamp | None]:
    """Each input's (size, stamp), None where there is none to be had cheaply (HTTP, a chained URL, a
    file that cannot be looked at: it is then read, and says why if it cannot be)."""
    out: dict[str, Stamp | None] = {}
    folders: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for uri in uris:
        location = Location.parse(uri)
        if location.is_local:
            try:
                st = os.stat(location.path)
                out[uri] = (st.st_size, f"mtime_ns:{st.st_mtime_ns}")
            except OSError:
                out[uri] = None
        elif len(location.protocols) != 1 or location.protocols[0] in ("http", "https"):
            out[uri] = None
        else:
            try:
                fs, path = fsspec.core.url_to_fs(uri)
            except Exception:  # noqa: BLE001 - any filesystem may fail as it is made (an FTP one connects):
                out[uri] = None  # no stamp; the job reads the input, and fails alone if it cannot
                continue
            folders[(fs, posixpath.dirname(path))].append((uri, path))
    for (fs, folder), members in folders.items():
        out.update(_listed_stamps(fs, folder, members))
    return out


def _listed_stamps(fs, folder: str, members: list[tuple[str, str]]) -> dict[str, Stamp | None]:
    """One listing of the folder for all its inputs (a request per thousand objects on S3)."""
    try:
        fs.invalidate_cache(folder)
        listed = {info["name"].rstrip("/"): info for info in fs.ls(folder, detail=True)}
    except Exception:  # noqa: BLE001 - no stamp: the inputs are read, and say why if they cannot be
        return {uri: None for uri, _ in members}
    out: dict[str, Stamp | None] = {}
    for uri, path in members:
        info = listed.get(path.rstrip("/"))
        out[uri] = _stamp(info) if info is not None else None
    return out


def _stamp(info: dict) -> Stamp | None:
    size = info.get("size")
    for key in ("VersionId", "ETag", "etag", "generation", "md5Hash", "LastModified", "mtime", "updated"):
        value = info.get(key)
        if value:
            return (size, f"{key}:{value}") if type(size) is int else None
    return None
