"""Where a file or folder is: a local path, or an fsspec URL. One answer for every room (inputs,
the output folder, its lock, the report), chained URLs included.

- `scheme://...` is a URL (`file://` and `local://` ones name local paths);
- `a::b::scheme://...` is a chained fsspec URL when every link before the last is a protocol
  fsspec knows (`simplecache::s3://bucket/key` caches a bucket's files on this machine);
- anything else is a local path: relative ones are resolved against a base folder (the manifest's),
  `~` is expanded. A local file named `notes::draft.png` stays a local file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LOCAL_SCHEMES = ("file", "local")


@cache
def _known_protocols() -> frozenset[str]:
    import fsspec

    return frozenset(fsspec.available_protocols())


def _chain(text: str) -> list[str] | None:
    """The protocols of a URL, outermost first, or None when `text` is not a URL."""
    links = text.split("::")
    last = _SCHEME.match(links[-1])
    if last is None:
        return None
    before = links[:-1]
    if before and not all(link in _known_protocols() for link in before):
        return None
    return [*before, last.group(1).lower()]


@dataclass(frozen=True)
class Location:
    """A local path (absolute, normalised) or a URL (as written)."""

    text: str
    protocols: tuple[str, ...]  # outermost first; ("file",) for a local path

    @classmethod
    def parse(cls, text: str, base: str | os.PathLike[str] | None = None) -> Location:
        chain = _chain(text)
        if chain is None:
            path = os.path.expanduser(text)
            if base is not None and not os.path.isabs(path):
                path = os.path.join(os.fspath(base), path)
            return cls(os.path.abspath(path), ("file",))
        if len(chain) == 1 and chain[0] in _LOCAL_SCHEMES:
            return cls(os.path.abspath(text.split("://", 1)[1] or "/"), ("file",))
        return cls(text, tuple(chain))

    @property
    def is_local(self) -> bool:
        return self.protocols == ("file",)

    @property
    def protocol(self) -> str:
        """The innermost protocol: where the bytes live (s3 for simplecache::s3://...)."""
        return self.protocols[-1]

    @property
    def path(self) -> str:
        """The OS path of a local location."""
        if not self.is_local:
            raise ValueError(f"{self.text!r} is a URL, not a local path")
        return self.text

    @property
    def parent(self) -> Location:
        """The folder this location is in."""
        if self.is_local:
            return Location(os.path.dirname(self.text), self.protocols)
        return Location(self.text.rsplit("/", 1)[0], self.protocols)

    def join(self, name: str) -> Location:
        if self.is_local:
            return Location(os.path.join(self.text, name), self.protocols)
        separator = "" if self.text.endswith("/") else "/"
        return Location(f"{self.text}{separator}{name}", self.protocols)

    def filesystem(self):
        """(fsspec filesystem, path within it)."""
        import fsspec

        if self.is_local:
            return fsspec.filesystem("file"), self.text
        return fsspec.core.url_to_fs(self.text)

    def __str__(self) -> str:
        return self.text


def is_url(text: str) -> bool:
    """Whether `text` names something through fsspec rather than a local path."""
    return not Location.parse(text).is_local
