"""`glob:` entries: the files a pattern matches, listed through fsspec, with ids made from their paths.

An item's id is the match's path below the pattern's fixed leading folders, without its extension,
every character outside the id alphabet (the `/` included) turned into `-`:
`shots/**/*.JPG` matching `shots/products/red shoe.JPG` gives `products-red-shoe`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from svdflow.locations import Location, text_refusal
from svdflow.manifest.schema import ID_PATTERN

_MAGIC = re.compile(r"[*?\[]")
_NOT_ID = re.compile(r"[^A-Za-z0-9._-]")
_ID = re.compile(ID_PATTERN)
MAX_ID_LENGTH = 128
# Filesystems fsspec reads single URLs from but cannot list: a pattern cannot match there.
UNLISTABLE = frozenset({"http", "https"})
LISTABLE_EXAMPLES = ("a local folder, file://, memory://, s3://, gs://, hf://, or a chained URL such as "
                     "simplecache::s3://bucket/...")


@dataclass(frozen=True, slots=True)
class GlobMatch:
    """One matched file: the item it becomes."""

    item_id: str
    image: str  # an absolute local path, or a URL spelled like the pattern (chains kept)
    shown: str  # the match as the pattern is written: products/red shoe.JPG
    pattern: int  # index of the entry's pattern that matched it


@dataclass(frozen=True, slots=True)
class GlobProblem:
    """Something wrong with one pattern of an entry (or with what it matched)."""

    pattern: int
    message: str


def expand(patterns: list[str], base_dir: str | os.PathLike[str], id_prefix: str | None,
           max_matches: int | None = None) -> tuple[list[GlobMatch], list[GlobProblem]]:
    """The entry's matches in sorted order (a file matched by two patterns counts once), and its problems.

    `max_matches`: stop once there are more matches than this (the manifest's job limit is passed:
    the caller says so), without making items of the rest.
    """
    matches: dict[str, GlobMatch] = {}  # by image
    problems: list[GlobProblem] = []
    for index, pattern in enumerate(patterns):
        found, problem = _match(pattern, index, base_dir, id_prefix or "", max_matches)
        if problem:
            problems.append(GlobProblem(index, problem))
        for match in found:
            matches.setdefault(match.image, match)
        if max_matches is not None and len(matches) > max_matches:
            return list(matches.values()), problems
    kept: list[GlobMatch] = []
    by_id: dict[str, GlobMatch] = {}
    for match in sorted(matches.values(), key=lambda m: m.shown):
        first = by_id.setdefault(match.item_id, match)
        if first is not match:
            problems.append(GlobProblem(match.pattern, (
                f"'{first.shown}' and '{match.shown}' both give the item id '{match.item_id}'; rename one "
                "of the files, or narrow the pattern")))
        elif not _ID.match(match.item_id) or len(match.item_id) > MAX_ID_LENGTH:
            problems.append(GlobProblem(match.pattern, _bad_id(match)))
        else:
            kept.append(match)
    return kept, problems


def item_id(relative: str, id_prefix: str = "") -> str:
    """The id a match gets from its path below the pattern's fixed part: `a/red shoe.JPG` -> `a-red-shoe`."""
    stem, _ = os.path.splitext(relative)
    return id_prefix + _NOT_ID.sub("-", stem)


def _bad_id(match: GlobMatch) -> str:
    if len(match.item_id) > MAX_ID_LENGTH:
        return (f"'{match.shown}' gives the item id '{match.item_id[:40]}...', longer than {MAX_ID_LENGTH} "
                "characters; narrow the pattern's fixed folders deeper, or rename the file")
    return (f"'{match.shown}' gives the item id '{match.item_id}', which does not start with a letter or "
            "digit; rename the file, or set id_prefix (e.g. id_prefix: p-)")


def _match(pattern: str, index: int, base_dir: str | os.PathLike[str], id_prefix: str, max_matches: int | None
           ) -> tuple[list[GlobMatch], str | None]:
    if refused := text_refusal(pattern):
        return [], f"glob {refused}"
    location = Location.parse(pattern, base_dir)
    if location.protocol in UNLISTABLE:
        return [], (f"glob '{pattern}': {location.protocol}:// cannot list files, so a pattern cannot match "
                    f"there; use a filesystem that can list ({LISTABLE_EXAMPLES}), or list the images "
                    "one by one, as items or in a table")
    if not location.is_local:
        from svdflow.inputs import missing_extra_for

        if extra := missing_extra_for(location.text):
            return [], (f"glob '{pattern}': listing {location.protocol}:// needs an optional package; install "
                        f"it with: pip install 'svdflow[{extra}]'")
    try:
        fs, path = location.filesystem()
        fixed = _fixed_part(path)
        listed = fs.glob(path, detail=True)
    except Exception as exc:  # noqa: BLE001 (any filesystem's failure: missing bucket, credentials, ...)
        return [], f"glob '{pattern}': cannot list ({type(exc).__name__}: {exc}); check the pattern and access"
    written_fixed = _fixed_part(pattern)
    matches, hidden, folders = [], 0, 0
    for found, info in listed.items():
        if info.get("type") != "file":
            folders += 1
            continue
        relative = found[len(fixed):].lstrip("/")
        if any(part.startswith(".") for part in relative.split("/")):
            hidden += 1
            continue
        shown = f"{written_fixed}/{relative}" if written_fixed else relative
        image = found if location.is_local else shown
        matches.append(GlobMatch(item_id(relative, id_prefix), image, shown, index))
        if max_matches is not None and len(matches) > max_matches:
            break
    if matches:
        return matches, None
    skipped = [f"{n} {what}{'s' * (n != 1)}" for n, what in ((hidden, "hidden file"), (folders, "folder")) if n]
    return [], (f"glob '{pattern}' matches no files" + (f" (skipped {' and '.join(skipped)})" if skipped else "")
                + "; check the pattern (local patterns are read from the manifest's folder)")


def _fixed_part(pattern: str) -> str:
    """The leading folders of a pattern, before the first component with a wildcard (its folder when none)."""
    parts = pattern.split("/")
    first = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), len(parts) - 1)
    return "/".join(parts[:first])
