"""The output folder, local or any fsspec URL, seen as a flat set of named files.

These are the run's own files (the record, sidecars, masters): whatever goes wrong reading or
writing them, other than a file that is not there, is the store failing (`OutputStoreError`).

A plan of 100,000 recorded jobs must not look at each file on its own (on an object store that is a
request per file): `listing` gives a folder's names, sizes and times in one listing (a request per
thousand names on S3), and the record and the plan read sizes from it. A local listing reads the names
(and which are links or folders) at once and a file's size and time when first asked for: a folder of
300,000 names is listed in a tenth of a second, where an lstat of each would take seconds, and loading
the record of a cleanly finished campaign asks for none of its sidecars' times.
"""

from __future__ import annotations

import json
import os
import posixpath
import weakref
from collections.abc import Iterator, Mapping
from stat import S_ISDIR, S_ISLNK
from typing import Any, NamedTuple, NoReturn

from svdflow.locations import Location
from svdflow.outputs.atomic import atomic_write_bytes
from svdflow.outputs.failures import store_failure


class FileInfo(NamedTuple):
    """A name in a folder listing: a file's size and modification time (seconds since the epoch; on
    object stores the upload's, to the second), or a folder (`size` None)."""

    size: int | None
    mtime: float


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

    def read_bytes(self, name: str, limit: int | None = None) -> bytes | None:
        """The file's bytes (its first `limit` bytes), or None when it is missing."""
        try:
            if self.is_local:
                with open(os.path.join(self.root, name), "rb") as f:
                    return f.read() if limit is None else f.read(limit)
            return self._cat(posixpath.join(self.root, name), limit)
        except FileNotFoundError:
            return None
        except Exception as exc:
            self._failed(exc, f"reading {name}")

    def _cat(self, path: str, limit: int | None) -> bytes:
        """One GET: asked for a whole object, s3fs and gcsfs first ask its size (a HEAD: twice the
        requests for every file read), to split a big one into concurrent ranges; a range from byte 0
        is one request. S3 refuses any range of an empty object: that one is read as a whole."""
        try:
            return self.fs.cat_file(path, start=0, end=limit)
        except FileNotFoundError:
            raise
        except OSError:
            data = self.fs.cat_file(path)
            return data if limit is None else data[:limit]

    def read_json(self, name: str) -> Any:
        """Parsed JSON, or None when the file is missing or is not valid JSON."""
        data = self.read_bytes(name)
        try:
            return None if data is None else json.loads(data)
        except ValueError:
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a file atomically (its folder in the output folder made first where needed)."""
        try:
            if self.is_local and "/" in name:
                os.makedirs(os.path.join(self.root, posixpath.dirname(name)), exist_ok=True)
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

    def listing(self, folder: str = "") -> Mapping[str, FileInfo]:
        """Every name directly in `folder` (relative to the output folder; "" for itself), with its
        size and time; {} when the folder is missing. Symlinks are left out: svdflow follows none in
        its folder. One listing, never a request per file."""
        try:
            if self.is_local:
                return LocalListing(os.path.join(self.root, folder) if folder else self.root)
            path = posixpath.join(self.root, folder) if folder else self.root
            self.fs.invalidate_cache(path)  # s3fs and others cache listings: what is there now
            try:
                infos = self.fs.ls(path, detail=True)
            finally:
                # ... and not kept there (nor the parent's, which s3fs lists for an empty folder): a
                # later exists() would answer from it, and s3fs's copy of 200,000 names (~100 MB)
                # would be held all run.
                self.fs.invalidate_cache(path)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except Exception as exc:
            self._failed(exc, f"listing {folder or 'it'}")
        out = {}
        for info in infos:
            name = posixpath.basename(info["name"].rstrip("/"))
            if info.get("islink"):
                continue
            is_dir = info.get("type") == "directory"
            out[name] = FileInfo(None if is_dir else info.get("size"), _info_time(info) or 0.0)
        return out


def _info_time(info: dict) -> float | None:
    value = info.get("mtime") or info.get("LastModified") or info.get("created")
    return value.timestamp() if hasattr(value, "timestamp") else value


class LocalListing(Mapping[str, FileInfo]):
    """A local folder's names as listed (symlinks left out: svdflow follows none in its folder), each
    name's size and time read (one lstat) when first asked for and kept. `name in listing` says what
    the listing saw; a file removed since is missing when its size is asked for (`get` gives None).

    The folder stays open while the listing lives, and names are looked at relative to it: the folder
    listed is the folder read, even if its path is made to point elsewhere since, and an lstat by name in
    an open folder is a third cheaper than by path (200,000 of them in a plan of 100,000 jobs)."""

    def __init__(self, folder: str):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        weakref.finalize(self, os.close, fd)
        self._fd = fd
        with os.scandir(fd) as entries:
            # is_symlink: from the folder's entry where the file system gives the type (no lstat)
            self._names: dict[str, FileInfo | None] = {entry.name: None for entry in entries if not _is_link(entry)}

    def __getitem__(self, name: str) -> FileInfo:
        info = self._names[name]
        if info is None:
            try:
                st = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                raise KeyError(name) from None
            if S_ISLNK(st.st_mode):  # replaced by a link since it was listed
                raise KeyError(name)
            info = self._names[name] = FileInfo(None if S_ISDIR(st.st_mode) else st.st_size, st.st_mtime)
        return info

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def items(self) -> Iterator[tuple[str, FileInfo]]:  # type: ignore[override]
        """Every name with its size and time (an lstat each not read yet); those removed since left out."""
        for name in list(self._names):
            try:
                yield name, self[name]
            except KeyError:
                continue


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:  # removed while listed (where telling needed an lstat): left out
        return True
