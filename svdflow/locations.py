"""Where a file or folder is: a local path, or an fsspec URL. One answer for every room (inputs,
the output folder, its lock, the report), chained URLs included.

- `scheme://...` is a URL (`file://` and `local://` ones name local paths);
- `a::b::scheme://...` is a chained fsspec URL when every link before the last is a protocol
  fsspec knows (`simplecache::s3://bucket/key` caches a bucket's files on this machine);
- anything else is a local path: relative ones are resolved against a base folder (the manifest's),
  `~` is expanded. A local file named `notes::draft.png` stays a local file.

Which protocols svdflow opens is decided here too (`refusal`), for every room: a manifest, a table or
an index written by someone else names them, and fsspec knows protocols that reach far past a file
(`reference::` renders URL templates from the document it reads, `github::` calls an API, `data::`
decodes the URL itself). Only the protocols a content pipeline uses are opened, plus those the
user adds with SVDFLOW_EXTRA_PROTOCOLS.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LOCAL_SCHEMES = ("file", "local")
# Where bytes live: local files, web servers, the object stores, the hub, and memory (tests, notebooks).
ALLOWED_PROTOCOLS = ("file", "http", "https", "s3", "gs", "gcs", "az", "abfs", "hf", "memory")
# Caches on this machine of one of the above (`simplecache::s3://...`): allowed as outer links only.
CACHING_PROTOCOLS = ("simplecache", "filecache", "blockcache")
PROTOCOLS_SETTING = "SVDFLOW_EXTRA_PROTOCOLS"
# C0 and C1 control characters and DEL: no file name or URL a person means holds them, and they
# can drive a terminal (ESC) or cut a path short (NUL).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


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

    def refusal(self) -> str | None:
        """Why svdflow does not open this location, or None: a protocol off the allow-list, in any
        link of a chained URL ("uses the protocol reference, which ...")."""
        if self.is_local:
            return None
        # Here, not at the top: pydantic-settings takes a quarter of a second to import, which every
        # command would pay, and only a URL needs the setting.
        from svdflow.settings import extra_protocols

        extra = extra_protocols()
        *wrappers, inner = self.protocols
        for protocol in wrappers:
            if protocol not in CACHING_PROTOCOLS and protocol not in extra:
                return _refused(protocol)
        if inner not in ALLOWED_PROTOCOLS and inner not in extra:
            return _refused(inner)
        return None

    def filesystem(self):
        """(fsspec filesystem, path within it)."""
        import fsspec

        if self.is_local:
            return fsspec.filesystem("file"), self.text
        return fsspec.core.url_to_fs(self.text)

    def __str__(self) -> str:
        return self.text


def _refused(protocol: str) -> str:
    return (f"uses the protocol {protocol}, which svdflow does not open; use a local path or a "
            f"{', '.join(ALLOWED_PROTOCOLS[:-1])} or {ALLOWED_PROTOCOLS[-1]} URL ({', '.join(CACHING_PROTOCOLS[:-1])} "
            f"or {CACHING_PROTOCOLS[-1]} may wrap one: simplecache::s3://...), or, if you trust every manifest, table "
            f"and index you run, add {protocol} to {PROTOCOLS_SETTING}")


def control_character(text: str) -> str | None:
    """The first control character in `text`, written as an escape (\\x00, \\x1b), or None."""
    match = _CONTROL.search(text)
    return None if match is None else repr(match.group())[1:-1]


def text_refusal(text: str) -> str | None:
    """Why the path or URL `text` (as written in a manifest, table or index) is not opened, or None:
    a control character in it, or a protocol off the allow-list. The text starts with the value,
    quoted: "'ftp://h/x.png' uses the protocol ftp, which ..."."""
    if (char := control_character(text)) is not None:
        return f"{_shown(text)} holds the control character {char}; no file name or URL needs one, remove it"
    return protocol_refusal(text)


def protocol_refusal(text: str) -> str | None:
    """Why svdflow does not open the path or URL `text`, whatever wrote it, or None: its protocol
    (any link's) is off the allow-list. A file a glob found may have any name it has on the disk."""
    if "://" not in text:  # a local path (100,000 items are checked: the common case is kept cheap)
        return None
    refused = Location.parse(text).refusal()
    return None if refused is None else f"{_shown(text)} {refused}"


def _shown(text: str, width: int = 120) -> str:
    shown = repr(text)
    return shown if len(shown) <= width else shown[:width - 4] + "...'"


def is_url(text: str) -> bool:
    """Whether `text` names something through fsspec rather than a local path."""
    return not Location.parse(text).is_local
