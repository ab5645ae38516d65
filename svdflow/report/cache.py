"""Cards rendered by an earlier report, reused: `svdflow report` of a campaign renders only the cards
whose entry or files changed since the last one.

A card's markup depends on its entry (its line of the record, which names its run), the templates and
code that render it, and the files of the folder it shows (outputs, sidecar, master, poster,
thumbnail); not on its place in the index, which the page stamps into it (`page.placed`), so a job
added early in a manifest does not make every later card miss. The cache, `report/cards.cache` in the
output folder, keeps each card's markup and `Shown` under a key made of the first two, with the
modification times of the files; a card is reused when its key is there and none of its files
changed (or appeared, or went).

The markup goes into the pages as it is, and the folder may come from someone else: so every record
carries an HMAC of its content under a secret of this user's (`~/.cache/svdflow/report.key`, made
on first use, readable by the user alone). A record that does not verify, from another machine or
edited by hand, is not used: its card is rendered again from the entry, as without a cache. Without
a usable secret (a read-only home) nothing is cached.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import orjson
from markupsafe import Markup

from svdflow import __version__
from svdflow.outputs.store import FileInfo
from svdflow.report.assets import ASSETS_DIR
from svdflow.report.page import CARD_TEMPLATE, template_source
from svdflow.report.quality import QualityView
from svdflow.report.shown import Shown
from svdflow.settings import user_cache_dir

CACHE_FILE = f"{ASSETS_DIR}/cards.cache"
# A cache bigger than this is not read (a card is a few KiB; 100,000 of them fit well below).
MAX_CACHE_BYTES = 2 << 30
# Bumped when what a card's markup is made of, or a record's layout, changes in a way the templates'
# text does not show (2: no place in the key or the markup; one HMAC over header and content).
CARD_FORMAT = 2


def _secret_path() -> Path:
    return Path(user_cache_dir()) / "report.key"


def _secret() -> bytes | None:
    """This user's key for the caches' HMACs, made on first use; None where it cannot be kept."""
    path = _secret_path()
    try:
        data = path.read_bytes()
        return data if len(data) == 32 else None  # another report is making it: no cache this time
    except FileNotFoundError:
        pass
    except OSError:
        return None
    key = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, key)
        finally:
            os.close(fd)
    except OSError:
        return None
    return key


@cache
def _format_stamp() -> bytes:
    """What the markup of every card is made by: svdflow's version, the card template's text and the
    code that fills it in (so that a changed card is never taken from an older svdflow's cache)."""
    digest = hashlib.sha256(template_source(CARD_TEMPLATE).encode())
    for code in (template_source, QualityView, Shown):  # page.py, quality.py, shown.py
        with open(inspect.getsourcefile(code), "rb") as source:
            digest.update(source.read())
    return f"{CARD_FORMAT}:{__version__}:{digest.hexdigest()}".encode()


@dataclass(frozen=True)
class Cached:
    html: Markup
    shown: Shown
    files: dict[str, float | None]  # name in the folder -> FolderTimes.mtime when rendered


class FolderTimes:
    """What a card's files are now: for a file of the output folder itself (outputs, sidecars), its
    modification time, from the listing loading the record made (a local one reads a name's time, one
    lstat, when first asked for); for one in a folder below (posters, thumbnails, masters), only
    whether it is there, one listing per folder (a poster follows its video's time; a master's content
    is its entry's). `listed` folders are listed at once (the report's own, which it also tidies);
    others when first asked about."""

    def __init__(self, root: str, listing: Mapping[str, FileInfo], listed: tuple[str, ...] = ()):
        self.root = root
        self._top = listing
        self._below: dict[str, float] = {}  # "folder/name" -> 0.0 for each name listed below the top
        self._folders: dict[str, set[str]] = {}
        for folder in listed:
            self._list(folder)

    def mtime(self, name: str) -> float | None:
        """The file's time (0 for a file below the folder's top), None when it is not there."""
        if "/" not in name:
            info = self._top.get(name)
            return info.mtime if info is not None else None
        found = self._below.get(name)
        if found is None:
            folder = name.rpartition("/")[0]
            if folder not in self._folders:
                self._list(folder)
                return self._below.get(name)
        return found

    def names(self, folder: str) -> set[str]:
        """Every name in a folder below the top (links too, which `mtime` counts as not there), as listed."""
        if folder not in self._folders:
            self._list(folder)
        return self._folders[folder]

    def add(self, name: str) -> None:
        """A file this report made below the top (a poster, a thumbnail)."""
        folder, _, base = name.rpartition("/")
        self.names(folder).add(base)
        self._below[name] = 0.0

    def _list(self, folder: str) -> None:
        names, files = set(), []
        try:
            with os.scandir(os.path.join(self.root, folder)) as entries:
                for entry in entries:
                    names.add(entry.name)
                    if not entry.is_symlink():
                        files.append(f"{folder}/{entry.name}")
        except OSError:
            pass
        self._folders[folder] = names
        self._below.update(dict.fromkeys(files, 0.0))


class CardCache:
    """The cache of one output folder's cards: read once, written once (what this report used).

    A record is a header line `<key> <hmac> <meta bytes> <markup bytes>\n`, then the meta (JSON: the
    card's Shown and its files' times) and the markup (UTF-8) as they are, then a newline: a card taken
    from the cache costs the parse of its small meta, not of its markup. The HMAC covers the key, both
    lengths and the content, in one pass over the record's bytes as they lie in the file."""

    def __init__(self, secret: bytes | None):
        self._secret = secret
        self._data = b""
        self._records: dict[str, tuple[int, int, int, int]] = {}  # key -> (start, meta, markup, end)
        self._used: list[bytes | memoryview] = []  # a record taken from the file is a view of it, not a copy
        self._added = False  # a card was put: the file changes

    @classmethod
    def open(cls, root: str) -> CardCache:
        cards = cls(_secret())
        if cards._secret is None:
            return cards
        path = os.path.join(root, CACHE_FILE)
        try:
            if os.path.islink(path) or os.path.getsize(path) > MAX_CACHE_BYTES:
                return cards
            with open(path, "rb") as file:
                cards._data = file.read()
        except OSError:
            return cards
        cards._index()
        return cards

    def _index(self) -> None:
        data, start = self._data, 0
        while start < len(data):
            newline = data.find(b"\n", start)
            parts = data[start:newline].split(b" ") if newline > 0 else []
            if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
                return  # not a cache of this format: the rest is not read
            meta = newline + 1
            markup = meta + int(parts[2])
            end = markup + int(parts[3])
            if end >= len(data) or data[end:end + 1] != b"\n":
                return
            self._records[parts[0].decode("ascii", "replace")] = (start, meta, markup, end)
            start = end + 1

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def key(self, line: bytes) -> str:
        """The key of the card of the job recorded as `line` (its line of the record)."""
        return hashlib.sha256(_format_stamp() + b"\0" + line).hexdigest()

    def get(self, key: str, times: FolderTimes, order: int) -> Cached | None:
        """The card kept under `key`, when its record verifies and none of its files changed since, its
        Shown at `order` (its place in the index now)."""
        where = self._records.get(key)
        if where is None:
            return None
        start, meta, markup, end = where
        data = self._data
        mac = data[start:meta - 1].split(b" ")[1].decode("ascii", "replace")
        if not hmac.compare_digest(mac, self._mac(key, markup - meta, end - markup, memoryview(data)[meta:end])):
            return None
        try:
            info = orjson.loads(memoryview(data)[meta:markup])
            files = info["files"]
            for name, mtime in files.items():
                if times.mtime(name) != mtime:
                    return None
            cached = Cached(Markup(data[markup:end].decode("utf-8")), Shown.from_json(info["shown"], order), files)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        self._used.append(memoryview(data)[start:end + 1])
        return cached

    def put(self, key: str, html: Markup, shown: Shown, files: list[str], times: FolderTimes) -> None:
        if self._secret is None:
            return
        meta = orjson.dumps({"shown": shown.to_json(), "files": {name: times.mtime(name) for name in files}})
        markup = str(html).encode("utf-8")
        header = f"{key} {self._mac(key, len(meta), len(markup), meta + markup)} {len(meta)} {len(markup)}\n"
        self._used.append(header.encode() + meta + markup + b"\n")
        self._added = True

    def contents(self) -> bytes | None:
        """What to keep as CACHE_FILE: the cards this report used (those of jobs no longer recorded
        go); None without a secret, or when the file already holds exactly those cards."""
        if self._secret is None or (not self._added and len(self._used) == len(self._records)):
            return None
        return b"".join(self._used)

    def _mac(self, key: str, meta: int, markup: int, content: bytes | memoryview) -> str:
        """The HMAC of a record: its key, its meta's and markup's lengths, then the two as they lie."""
        return hmac.digest(self._secret, f"{key} {meta} {markup}\n".encode() + content, "sha256").hex()
