"""Cards: each index entry with what this folder holds of it (its files, poster, input thumbnail).

An index may have been edited by hand or copied without all its files, so nothing an entry says
about files is trusted: only plain relative paths inside the folder that exist are shown.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from svdflow.locations import is_url
from svdflow.manifest.schema import JobParams
from svdflow.outputs.entry import IndexEntry, MasterRecord, OutputFile
from svdflow.outputs.masters import MASTERS_DIR
from svdflow.report.assets import input_thumbnail, poster

DOM_PREFIX = "job-"  # a card's element id: this and its asset name
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


@dataclass
class Card:
    """One job as the page shows it; every path is relative to the output folder."""

    entry: IndexEntry
    order: int  # position in the index
    asset_name: str  # file-name-safe stem for this job's poster and its element id
    outputs: list[OutputFile] = field(default_factory=list)  # the entry's outputs that exist here
    output_notes: list[str] = field(default_factory=list)
    poster: str | None = None
    poster_note: str | None = None
    input_thumb: str | None = None
    input_note: str | None = None  # why there is no thumbnail, or a warning about it
    sidecar: str | None = None  # the job's own <id>.json, when it is there
    master: MasterRecord | None = None  # the entry's lossless master, when it is in the folder
    master_note: str | None = None  # why a recorded master is not shown

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def params(self) -> JobParams:  # type: ignore[valid-type]
        return self.entry.params

    @property
    def sweep(self) -> dict[str, int | float | str]:
        return self.entry.sweep

    @property
    def item(self) -> str:
        """The item whose sweep this card belongs to."""
        return self.entry.item_id or self.entry.id

    def output(self, fmt: str) -> OutputFile | None:
        for output in self.outputs:
            if output.format == fmt:
                return output
        return None


def build_cards(root: str, entries: Iterable[tuple[int, IndexEntry]], used_names: set[str]) -> list[Card]:
    """A card per (position in the index, entry), with its images written under `report/` (whose
    folders `assets.make_asset_dirs` made). `used_names` are the asset names other cards of the page
    hold (this adds its own)."""
    cards = []
    for order, entry in entries:
        card = Card(entry, order, _asset_name(entry.id, used_names))
        card.outputs, card.output_notes = _existing_outputs(root, entry)
        if os.path.isfile(os.path.join(root, f"{card.id}.json")):  # ids match ID_PATTERN: no slashes
            card.sidecar = f"{card.id}.json"
        card.master, card.master_note = _existing_master(root, entry)
        cards.append(card)
    inputs: dict[tuple[str, str | None], list[Card]] = {}
    for card in cards:
        if card.entry.input.uri:
            inputs.setdefault((card.entry.input.uri, card.entry.input.sha256), []).append(card)
        else:
            card.input_note = "no input recorded for this job"
    # Fetching inputs (possibly remote) and decoding first frames are independent and I/O bound.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="svdflow-report") as pool:
        input_futures = {key: pool.submit(input_thumbnail, root, *key) for key in inputs}
        poster_futures = [(card, pool.submit(poster, root, card.outputs, card.asset_name)) for card in cards]
        for key, future in input_futures.items():
            thumb, note = future.result()
            for card in inputs[key]:
                card.input_thumb, card.input_note = thumb, note
        for card, future in poster_futures:
            card.poster, card.poster_note = future.result()
    return cards


def card_files(card: Card) -> list[str] | None:
    """The files of the folder a card's markup depends on (its outputs, present or missing, its
    sidecar, master, poster and input thumbnail), or None when the card is not to be reused: a poster
    or thumbnail that could not be made is tried again by the next report."""
    if card.poster_note or (card.input_thumb is None and card.entry.input.uri):
        return None
    files = [name for output in card.entry.outputs if (name := safe_relative(output.file))]
    files.append(f"{card.id}.json")
    if card.entry.master is not None and (name := safe_relative(card.entry.master.file)):
        files.append(name)
    files.extend(name for name in (card.poster, card.input_thumb) if name)
    return files


def safe_relative(name: str) -> str | None:
    """`name` if it is a plain relative path inside the output folder, else None."""
    # Every URL names its protocol before a colon: a name without one is a path (is_url is not free,
    # and a report of 100,000 jobs asks it for every file).
    if not name or "\\" in name or "\0" in name or (":" in name and is_url(name)):
        return None
    if name.startswith("/") or os.path.isabs(name):
        return None
    if any(part in ("", ".", "..") for part in name.split("/")):
        return None
    return name


def _asset_name(job_id: str, used: set[str]) -> str:
    # Ids match ID_PATTERN, so they are file-name safe, but nothing caps an index entry's length.
    name = job_id if _SAFE_NAME.match(job_id) else "job-" + hashlib.sha256(job_id.encode()).hexdigest()[:16]
    while name in used:
        name += "_"
    used.add(name)
    return name


# svdflow's own files (masters) are never offered as a job's outputs, whatever an index says.
_OWN_DIR = MASTERS_DIR.split("/")[0] + "/"


def _existing_outputs(root: str, entry: IndexEntry) -> tuple[list[OutputFile], list[str]]:
    outputs, notes = [], []
    for output in entry.outputs:
        name = safe_relative(output.file)
        if name is None:
            notes.append(f"output {output.file!r} is not a file inside this folder; not shown")
        elif name.startswith(_OWN_DIR):
            notes.append(f"output {name!r} is in svdflow's own folder {_OWN_DIR}, not an output; not shown")
        elif not os.path.exists(os.path.join(root, name)):
            notes.append(f"{name} is missing from this folder")
        else:
            outputs.append(output)
    return outputs, notes


def _existing_master(root: str, entry: IndexEntry) -> tuple[MasterRecord | None, str | None]:
    """The entry's master when it is where masters live and in the folder, else why not (None: none recorded)."""
    master = entry.master
    if master is None:
        return None, None
    name = safe_relative(master.file)
    if name is None or not name.startswith(MASTERS_DIR + "/"):
        return None, f"master {master.file!r} is not in {MASTERS_DIR}/; not shown"
    if not os.path.isfile(os.path.join(root, name)):
        return None, f"master {name} is missing from this folder"
    return master, None
