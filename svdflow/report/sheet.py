"""`svdflow report`: a static contact sheet of an output folder, for reviewing a campaign by eye.

The page (`index.html`, beside `index.jsonl`) must keep working when the folder is zipped, synced to
a laptop and opened from file://, and must never reach the network: so every asset it shows lives
in the folder (the outputs themselves, plus the thumbnails and posters of `assets`), every link is
relative, and CSS and JS are inline (`page`). This module reads the index and writes the page.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time

from markupsafe import Markup

from svdflow.errors import UsageError
from svdflow.locations import Location
from svdflow.outputs.atomic import atomic_write_bytes, real_folder
from svdflow.outputs.failures import storing
from svdflow.outputs.index import INDEX_FILE, LEGACY_INDEX_FILE, RunIndex
from svdflow.outputs.store import OutputStore
from svdflow.report.assets import ASSET_DIRS, ASSETS_DIR, make_asset_dirs, remove_unused_assets
from svdflow.report.cache import CACHE_FILE, CardCache, FolderTimes
from svdflow.report.cards import DOM_PREFIX, build_cards, card_files
from svdflow.report.page import FIRST_PAGE, PAGES_DIR, render_card, render_pages
from svdflow.report.shown import Shown

REPORT_FILE = FIRST_PAGE


def write_report(output_dir: str) -> str:
    """Write `<output_dir>/index.html`, the first page of the sheet (its other pages, thumbnails and
    posters under `report/`); return the first page's path.

    The folder must be local (a path or file:// URL) and hold the record of a run. A job whose
    input or output cannot be read gets a placeholder that says why; only a missing or unreadable
    index fails the report.
    """
    root = _local_root(output_dir)
    index = _load_index(output_dir, root)
    # The report's own files (thumbnails, posters, the page) failing is the folder failing: exit 3.
    with storing(root, f"writing the report's images in {ASSETS_DIR}/"):
        make_asset_dirs(root)
        cards = CardCache.open(root)
        times = FolderTimes(root, index.listing, ASSET_DIRS)  # the report's own folders, listed once
        shown, html, used = _cards(root, index, cards, times)
        remove_unused_assets(root, {folder: times.names(folder) for folder in ASSET_DIRS}, used)
    pages = render_pages(shown, html, index, generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    with storing(root, f"writing the report's pages in {PAGES_DIR}/"):
        real_folder(root, PAGES_DIR)  # never through a link: its pages are read, replaced and deleted
        for name, page in pages.items():
            if name != REPORT_FILE:
                _write_if_changed(os.path.join(root, name), page.encode("utf-8"))
        _remove_stale_pages(root, set(pages))
        kept = cards.contents()
        if kept is not None:
            _write_whole(os.path.join(root, CACHE_FILE), kept)
    path = os.path.join(root, REPORT_FILE)
    with storing(root, f"writing {REPORT_FILE}"):  # last: its links lead to pages already written
        atomic_write_bytes(path, pages[REPORT_FILE].encode("utf-8"))
    return path


def _cards(root: str, index: RunIndex, cache: CardCache, times: FolderTimes
           ) -> tuple[list[Shown], dict[str, Markup], set[str]]:
    """Every recorded job's card (what the pages need of it, and its markup by id), in index
    order, and the files they show: from the cache where a card's entry and files are unchanged, else
    built and rendered (and cached)."""
    shown: list[Shown] = []
    html: dict[str, Markup] = {}
    used: set[str] = set()
    missed: list[tuple[int, str, str | None]] = []
    for order, job_id in enumerate(index.ids()):
        if not cache.enabled:
            missed.append((order, job_id, None))
            continue
        key = cache.key(index.line(job_id))
        hit = cache.get(key, times, order)
        if hit is None:
            missed.append((order, job_id, key))
            continue
        shown.append(hit.shown)
        html[job_id] = hit.html
        used.update(hit.files)
    used_names = {s.dom_id[len(DOM_PREFIX):] for s in shown}
    entries = [(order, entry, key) for order, job_id, key in missed if (entry := index.get(job_id)) is not None]
    built = build_cards(root, [(order, entry) for order, entry, _ in entries], used_names)
    for card, (_, _, key) in zip(built, entries):
        markup, card_shown = render_card(card)
        made = [name for name in (card.poster, card.input_thumb) if name]
        for name in made:  # made (or found) just now: there, as the cache notes them
            times.add(name)
        files = card_files(card)
        if files is not None and key is not None:
            cache.put(key, markup, card_shown, files, times)
        shown.append(card_shown)
        html[card.id] = markup
        used.update(made)
    if missed:
        shown.sort(key=lambda s: s.order)
    return shown, html, used


def _write_if_changed(path: str, data: bytes) -> None:
    """`_write_whole`, unless the file holds these bytes already: a report after a run that changed a
    few cards rewrites the pages that show them, not the campaign's."""
    try:
        # The file opened is the file looked at (fstat): no link followed, and a FIFO put there is not
        # waited on (O_NONBLOCK) nor read (not a regular file).
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as file:
            status = os.fstat(file.fileno())
            if stat.S_ISREG(status.st_mode) and status.st_size == len(data) and file.read(len(data) + 1) == data:
                return
    except OSError:
        pass
    _write_whole(path, data)


def _write_whole(path: str, data: bytes) -> None:
    """Write a page whole or not at all (a temporary beside it, renamed over it), without the fsyncs
    of atomic_write_bytes: a page is made again by the next `svdflow report`, and a campaign of
    100,000 jobs has 2,000 of them (index.html, written last, is written durably)."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove_stale_pages(root: str, written: set[str]) -> None:
    """Pages of an earlier, bigger report (more pages than now) go, and temporaries of one that was
    interrupted."""
    folder = os.path.join(root, PAGES_DIR)
    for name in os.listdir(folder):
        stale = f"{PAGES_DIR}/{name}" not in written if not name.startswith(".") else name.endswith(".tmp")
        if stale and (name.endswith(".html") or name.endswith(".tmp")):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def _local_root(output_dir: str) -> str:
    location = Location.parse(str(output_dir))
    if not location.is_local:
        raise UsageError(f"{output_dir}: reports are written into local folders only; copy the folder "
                         "to this machine (e.g. with `aws s3 sync` or `gsutil rsync`) and run "
                         "`svdflow report` on the copy")
    return location.path


def _load_index(output_dir: str, root: str) -> RunIndex:
    """The folder's index (with newer sidecars merged, as every reader sees it), or a UsageError."""
    index = RunIndex.load(OutputStore(root))
    path = os.path.join(root, LEGACY_INDEX_FILE if index.unreadable not in (None, "missing") else INDEX_FILE)
    if index.unreadable == "missing":
        raise UsageError(f"{output_dir}: no {INDEX_FILE} here; run `svdflow run MANIFEST` first, "
                         "or pass the output folder of a run")
    if index.unreadable and index.unreadable.startswith("cannot be read"):
        raise UsageError(f"{path}: {index.unreadable}; run `svdflow run MANIFEST` again to rewrite it")
    if index.unreadable:
        raise UsageError(f"{path}: {index.unreadable}; pass the output folder of a run")
    return index
