"""The output folder, local or any fsspec URL, seen as a flat set of named files.

These are the run's own files (index.json, sidecars, shards): whatever goes wrong reading or
writing them, other than a file that is not there, is the store failing (`OutputStoreError`).
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any, NoReturn

from svdflow.locations import Location
from svdflow.outputs.atomic import atomic_write_bytes
from svdflow.outputs.failures import store_failure


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

    def _failed(self, exc: Exception, doing: str) -> NoReturn:
        # A plain try/except in each method rather than a context manager: plans of 100,000 recorded
        # jobs look at a few hundred thousand files.
        failure = store_failure(exc, self.url, doing, every=True)
        if failure is None:  # not a file system's failure (a bug): as it is
            raise exc
        raise failure from exc

    def makedirs(self) -> None:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except Exception as exc:
            self._failed(exc, "creating it")

    def exists(self, name: str) -> bool:
        if self.is_local:
            return os.path.exists(os.path.join(self.root, name))
        try:
            return self.fs.exists(posixpath.join(self.root, name))
        except Exception as exc:
            self._failed(exc, f"looking for {name}")

    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, or None when it is missing."""
        try:
            if self.is_local:
                with open(os.path.join(self.root, name), "rb") as f:
                    return f.read()
            return self.fs.cat_file(posixpath.join(self.root, name))
        except FileNotFoundError:
            return None
        except Exception as exc:
            self._failed(exc, f"reading {name}")

    def read_json(self, name: str) -> Any:
        """Parsed JSON, or None when the file is missing or is not valid JSON."""
        data = self.read_bytes(name)
        try:
            return None if data is None else json.loads(data)
        except ValueError:
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        try:
            atomic_write_bytes(self.path(name), data)
        except Exception as exc:
            self._failed(exc, f"writing {name}")

    def remove(self, name: str) -> None:
        try:
            if self.is_local:
                os.remove(os.path.join(self.root, name))
            else:
                self.fs.rm(posixpath.join(self.root, name))
        except FileNotFoundError:
            pass
        except Exception as exc:
            self._failed(exc, f"removing {name}")

    def size(self, name: str) -> int | None:
        """Bytes of a file, or None when it is missing."""
        try:
            if self.is_local:
                return os.stat(os.path.join(self.root, name)).st_size
            return self.fs.size(posixpath.join(self.root, name))
        except FileNotFoundError:
            return None
        except Exception as exc:
            self._failed(exc, f"looking at {name}")

    def mtime(self, name: str) -> float | None:
        try:
            if self.is_local:
                return os.stat(os.path.join(self.root, name)).st_mtime
            info = self.fs.info(posixpath.join(self.root, name))
        except FileNotFoundError:
            return None
        except Exception as exc:
            self._failed(exc, f"looking at {name}")
        value = info.get("mtime") or info.get("LastModified") or info.get("created")
        return value.timestamp() if hasattr(value, "timestamp") else value

    def json_files(self) -> list[str]:
        """Names of the .json files directly in the folder (temp files start with '.' and are skipped)."""
        try:
            if self.is_local:
                names = os.listdir(self.root)
            else:
                names = [posixpath.basename(p) for p in self.fs.ls(self.root, detail=False)]
        except FileNotFoundError:
            return []
        except Exception as exc:
            self._failed(exc, "listing it")
        return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))
