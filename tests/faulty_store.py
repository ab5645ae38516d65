"""A remote output store that stops answering mid-run: an fsspec memory file system under the test
protocol `faulty://`. Once a write touches a path containing `FaultyMemoryFileSystem.down_at`, every
call raises what a network store's client raises when its endpoint is gone (not an OSError, as
botocore's or aiohttp's errors are not), until a test brings it back (`up()`).

Importing this module registers the protocol in the importing process.
"""

from __future__ import annotations

import fsspec
from fsspec.implementations.memory import MemoryFileSystem


class EndpointDown(Exception):
    """As botocore's EndpointConnectionError: the store does not answer."""


class FaultyMemoryFileSystem(MemoryFileSystem):
    protocol = ("faulty",)
    store: dict = {}  # its own files, not memory://'s
    pseudo_dirs = [""]
    down_at: str | None = None  # the store goes down at the first write of a path containing this
    down = False

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str) and path.startswith("faulty://"):  # memory:// is all the parent strips
            path = "memory://" + path[len("faulty://"):]
        return super()._strip_protocol(path)

    @classmethod
    def up(cls) -> None:
        cls.down_at, cls.down = None, False

    def _answer(self, path, writing: bool) -> None:
        cls = type(self)
        if cls.down or (writing and cls.down_at is not None and cls.down_at in str(path)):
            cls.down = True
            raise EndpointDown("Could not connect to the endpoint URL")

    # Writes.
    def _open(self, path, mode="rb", **kwargs):
        self._answer(path, writing="r" not in mode)
        return super()._open(path, mode, **kwargs)

    def pipe_file(self, path, value, *args, **kwargs):
        self._answer(path, writing=True)
        return super().pipe_file(path, value, *args, **kwargs)

    def mkdir(self, path, *args, **kwargs):
        self._answer(path, writing=True)
        return super().mkdir(path, *args, **kwargs)

    def makedirs(self, path, exist_ok=False):
        self._answer(path, writing=True)
        return super().makedirs(path, exist_ok=exist_ok)

    def cp_file(self, path1, path2, **kwargs):
        self._answer(path2, writing=True)
        return super().cp_file(path1, path2, **kwargs)

    def rm_file(self, path):
        self._answer(path, writing=True)
        return super().rm_file(path)

    # Reads.
    def cat_file(self, path, *args, **kwargs):
        self._answer(path, writing=False)
        return super().cat_file(path, *args, **kwargs)

    def info(self, path, **kwargs):
        self._answer(path, writing=False)
        return super().info(path, **kwargs)

    def ls(self, path, detail=True, **kwargs):
        self._answer(path, writing=False)
        return super().ls(path, detail=detail, **kwargs)


fsspec.register_implementation("faulty", FaultyMemoryFileSystem, clobber=True)
