"""The output folder, local or any fsspec URL, seen as a flat set of named files.

These are the run's own files (index.json, sidecars, shards): whatever goes wrong reading or
writing them, other than a file that is not there, is the store failing (`OutputStoreError`).
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

from svdflow.locations import Location
from svdflow.outputs.atomic import atomic_write_bytes
from svdflow.outputs.failures import storing


class OutputStore:
    """Reads and atomically writes the files of one output folder."""

    def __init__(self, url: str):
        self.location = Location.parse(url.rstrip("/") if url not in ("/", "") else url)
        self.url = self.location.text  # an absolute local path, or the URL
        self.is_local = self.location.is_local
        self.fs, self.root = self.location.filesystem()

    def path(self, name: str) -> str:
        """Full path or URL of a file in the folder (what writers and the index record)."""
        return self.location.join(name).text

    def makedirs(self) -> None:
        with storing(self.url, "creating it"):
            self.fs.makedirs(self.root, exist_ok=True)

    def exists(self, name: str) -> bool:
        if self.is_local:
            return os.path.exists(os.path.join(self.root, name))
        with storing(self.url, f"looking for {name}"):
            return self.fs.exists(posixpath.join(self.root, name))

    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, or None when it is missing."""
        with storing(self.url, f"reading {name}"):
            try:
                if self.is_local:
                    with open(os.path.join(self.root, name), "rb") as f:
                        return f.read()
                return self.fs.cat_file(posixpath.join(self.root, name))
            except FileNotFoundError:
                return None

    def read_json(self, name: str) -> Any:
        """Parsed JSON, or None when the file is missing or is not valid JSON."""
        data = self.read_bytes(name)
        try:
            return None if data is None else json.loads(data)
        except ValueError:
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        with storing(self.url, f"writing {name}"):
            atomic_write_bytes(self.path(name), data)

    def remove(self, name: str) -> None:
        with storing(self.url, f"removing {name}"):
            try:
                if self.is_local:
                    os.remove(os.path.join(self.root, name))
                else:
                    self.fs.rm(posixpath.join(self.root, name))
            except FileNotFoundError:
                pass

    def size(self, name: str) -> int | None:
        """Bytes of a file, or None when it is missing."""
        with storing(self.url, f"looking at {name}"):
            try:
                if self.is_local:
                    return os.stat(os.path.join(self.root, name)).st_size
                return self.fs.size(posixpath.join(self.root, name))
            except FileNotFoundError:
                return None

    def mtime(self, name: str) -> float | None:
        with storing(self.url, f"looking at {name}"):
            try:
                if self.is_local:
                    return os.stat(os.path.join(self.root, name)).st_mtime
                info = self.fs.info(posixpath.join(self.root, name))
            except FileNotFoundError:
                return None
        value = info.get("mtime") or info.get("LastModified") or info.get("created")
        return value.timestamp() if hasattr(value, "timestamp") else value

    def json_files(self) -> list[str]:
        """Names of the .json files directly in the folder (temp files start with '.' and are skipped)."""
        with storing(self.url, "listing it"):
            try:
                if self.is_local:
                    names = os.listdir(self.root)
                else:
                    names = [posixpath.basename(p) for p in self.fs.ls(self.root, detail=False)]
            except FileNotFoundError:
                return []
        return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))
