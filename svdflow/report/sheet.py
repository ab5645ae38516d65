"""`svdflow report`: a static contact sheet of an output folder, for reviewing a campaign by eye.

The page (`index.html`, beside `index.json`) must keep working when the folder is zipped, synced to
a laptop and opened from file://, and must never reach the network: so every asset it shows lives
in the folder (the outputs themselves, plus thumbnails of the inputs and first-frame posters that
this module writes under `report/`), every link is relative, and CSS and JS are inline.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import os
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from PIL import Image

from svdflow.errors import EnvironmentProblem, InputError, UsageError
from svdflow.locations import Location
from svdflow.outputs.atomic import atomic_write_bytes
from svdflow.outputs.index import INDEX_FILE, RunIndex
from svdflow.outputs.store import OutputStore

REPORT_FILE = "index.html"
ASSETS_DIR = "report"  # thumbnails and posters, inside the output folder so the page is self-contained
INPUT_THUMB_SIDE = 320
POSTER_SIDE = 640
# Remote inputs are fetched once per report (then cached by content hash); a slow server should
# cost a placeholder, not a hung report.
FETCH_TIMEOUT_S = 15.0
FETCH_RETRIES = 2

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")
# Shown in every card, in this order: (key, label, tooltip).
_SHOWN_PARAMS = (
    ("fps", "fps", "conditioning fps (playback fps in brackets when it differs)"),
    ("motion_bucket_id", "motion_bucket_id", "amount of motion"),
    ("noise_aug_strength", "noise_aug_strength", "noise added to the conditioning image"),
    ("num_frames", "num_frames", "frames generated"),
    ("num_inference_steps", "steps", "num_inference_steps"),
    ("guidance", "guidance", "min_guidance_scale - max_guidance_scale"),
    ("size", "size", "width x height, resize policy"),
)
# The sort select: (value, label). Values name a card's data-s-<value> attribute.
_SORT_KEYS = (
    ("order", "index order"), ("id", "id"), ("status", "status"), ("seed", "seed"), ("fps", "fps"),
    ("motion_bucket_id", "motion_bucket_id"), ("noise_aug_strength", "noise_aug_strength"),
    ("num_frames", "num_frames"), ("num_inference_steps", "steps"),
    ("min_guidance_scale", "min_guidance_scale"), ("max_guidance_scale", "max_guidance_scale"),
    ("pixels", "size (pixels)"), ("finished", "finished at"), ("total_s", "render time"),
)
_PLAYABLE_AS_IMAGE = ("webp", "gif")  # animated images any browser shows without a video decoder


# ---------------------------------------------------------------------------------------------
# Public API


def write_report(output_dir: str) -> str:
    """Write `<output_dir>/index.html` (and its thumbnails under `report/`); return the page's path.

    The folder must be local (a path or file:// URL) and hold the index.json of a run. A job whose
    input or output cannot be read gets a placeholder that says why; only a missing or unreadable
    index fails the report.
    """
    root = _local_root(output_dir)
    document = _read_index(output_dir, root)
    entries = [e.model_dump(mode="json", by_alias=True) for e in RunIndex.load(OutputStore(root)).entries.values()]
    try:
        cards = _build_cards(root, entries)
    except OSError as exc:  # the report's own folder: thumbnails and posters
        raise EnvironmentProblem(f"{os.path.join(root, ASSETS_DIR)}: could not write the report's images "
                                 f"({exc.strerror or exc}); check that the folder is writable") from exc
    page = render_page(cards, document, generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path = os.path.join(root, REPORT_FILE)
    try:
        atomic_write_bytes(path, page.encode("utf-8"))
    except OSError as exc:
        raise EnvironmentProblem(f"{path}: could not write the report ({exc.strerror or exc}); check that "
                                 "the folder is writable") from exc
    return path


# ---------------------------------------------------------------------------------------------
# The index


def _local_root(output_dir: str) -> str:
    if not Location.parse(str(output_dir)).is_local:
        raise UsageError(f"{output_dir}: reports are written into local folders only; copy the folder "
                         "to this machine (e.g. with `aws s3 sync` or `gsutil rsync`) and run "
                         "`svdflow report` on the copy")
    return Location.parse(str(output_dir)).path


def _read_index(output_dir: str, root: str) -> dict[str, Any]:
    path = os.path.join(root, INDEX_FILE)
    if not os.path.isfile(path):
        raise UsageError(f"{output_dir}: no index.json here; run `svdflow run MANIFEST` first, "
                         "or pass the output folder of a run")
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot be read as JSON ({exc}); run `svdflow run MANIFEST` again "
                         "to rewrite it") from exc
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        raise UsageError(f"{path}: not an svdflow index (no \"jobs\" list); pass the output folder of a run")
    return document


# ---------------------------------------------------------------------------------------------
# Cards: what the page shows of each job


@dataclass
class Card:
    """One job as the page shows it; every path is relative to the output folder."""

    entry: dict[str, Any]
    order: int
    asset_name: str  # file-name-safe stem for this job's poster
    outputs: list[dict[str, Any]] = field(default_factory=list)  # the entry's outputs that exist here
    output_notes: list[str] = field(default_factory=list)
    poster: str | None = None
    poster_note: str | None = None
    input_thumb: str | None = None
    input_note: str | None = None  # why there is no thumbnail, or a warning about it
    sidecar: str | None = None  # the job's own <id>.json, when it is there

    @property
    def id(self) -> str:
        return str(self.entry.get("id"))

    @property
    def params(self) -> dict[str, Any]:
        params = self.entry.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def sweep(self) -> dict[str, Any]:
        sweep = self.entry.get("sweep")
        return sweep if isinstance(sweep, dict) else {}

    def output(self, fmt: str) -> dict[str, Any] | None:
        return next((o for o in self.outputs if o.get("format") == fmt), None)


def _build_cards(root: str, entries: list[dict[str, Any]]) -> list[Card]:
    cards = []
    used_names: set[str] = set()
    for order, entry in enumerate(entries):
        card = Card(entry, order, _asset_name(str(entry.get("id")), used_names))
        card.outputs, card.output_notes = _existing_outputs(root, entry)
        sidecar = _safe_relative(f"{card.id}.json")
        if sidecar and os.path.isfile(os.path.join(root, sidecar)):
            card.sidecar = sidecar
        cards.append(card)
    os.makedirs(os.path.join(root, ASSETS_DIR, "posters"), exist_ok=True)
    os.makedirs(os.path.join(root, ASSETS_DIR, "inputs"), exist_ok=True)
    inputs: dict[tuple[str, str | None], list[Card]] = {}
    for card in cards:
        entry_input = card.entry.get("input") if isinstance(card.entry.get("input"), dict) else {}
        uri, sha = entry_input.get("uri"), entry_input.get("sha256")
        if isinstance(uri, str) and uri:
            inputs.setdefault((uri, sha if isinstance(sha, str) else None), []).append(card)
        else:
            card.input_note = "no input recorded for this job"
    # Fetching inputs (possibly remote) and decoding first frames are independent and I/O bound.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="svdflow-report") as pool:
        input_futures = {key: pool.submit(_input_thumbnail, root, *key) for key in inputs}
        poster_futures = [(card, pool.submit(_poster, root, card)) for card in cards]
        for key, future in input_futures.items():
            thumb, note = future.result()
            for card in inputs[key]:
                card.input_thumb, card.input_note = thumb, note
        for card, future in poster_futures:
            card.poster, card.poster_note = future.result()
    _remove_unused_assets(root, cards)
    return cards


def _asset_name(job_id: str, used: set[str]) -> str:
    # Ids from a manifest are already file-name safe; an index edited by hand may hold anything.
    name = job_id if _SAFE_NAME.match(job_id) else "job-" + hashlib.sha256(job_id.encode()).hexdigest()[:16]
    while name in used:
        name += "_"
    used.add(name)
    return name


def _safe_relative(name: Any) -> str | None:
    """`name` if it is a plain relative path inside the output folder, else None."""
    if not isinstance(name, str) or not name or "\\" in name or "://" in name or "\0" in name:
        return None
    if name.startswith("/") or os.path.isabs(name):
        return None
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return name


def _existing_outputs(root: str, entry: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    outputs, notes = [], []
    for output in entry.get("outputs") or []:
        if not isinstance(output, dict):
            continue
        name = _safe_relative(output.get("file"))
        if name is None:
            notes.append(f"output {output.get('file')!r} is not a file inside this folder; not shown")
        elif not os.path.exists(os.path.join(root, name)):
            notes.append(f"{name} is missing from this folder")
        else:
            outputs.append(output)
    return outputs, notes


# ---------------------------------------------------------------------------------------------
# Thumbnails and posters


def _input_thumbnail(root: str, uri: str, recorded_sha: str | None) -> tuple[str | None, str | None]:
    """(relative path of the input's thumbnail, note), or (None, why there is none)."""
    from svdflow.inputs import decode_image, fetch_bytes

    folder = os.path.join(root, ASSETS_DIR, "inputs")
    # Thumbnails are named by the input's content hash, so a recorded hash finds its thumbnail
    # without fetching the input again: rerunning the report on a big remote campaign is cheap.
    if recorded_sha and re.fullmatch(r"[0-9a-f]{64}", recorded_sha):
        cached = f"{recorded_sha[:20]}.jpg"
        if os.path.isfile(os.path.join(folder, cached)):
            return f"{ASSETS_DIR}/inputs/{cached}", None
    try:
        data = fetch_bytes(uri, timeout_s=FETCH_TIMEOUT_S, retries=FETCH_RETRIES)
        image = decode_image(data, uri)
    except InputError as exc:
        return None, str(exc)
    except Exception as exc:  # a broken input is shown as a placeholder, never fails the report
        return None, f"{uri}: could not be read ({type(exc).__name__}: {exc})"
    sha = hashlib.sha256(data).hexdigest()
    name = f"{sha[:20]}.jpg"
    _write_jpeg(os.path.join(folder, name), image, INPUT_THUMB_SIDE)
    note = None
    if recorded_sha and sha != recorded_sha:
        note = "the input has changed since this job was rendered; this is the current image"
    return f"{ASSETS_DIR}/inputs/{name}", note


def _poster(root: str, card: Card) -> tuple[str | None, str | None]:
    """(relative path of the job's first-frame poster, None), or (None, why there is none)."""
    # Cheapest source first: a PNG needs no video decoder, an animated image only Pillow.
    sources = [card.output(fmt) for fmt in ("frames", "webp", "gif", "mp4")]
    sources = [s for s in sources if s is not None]
    if not sources:
        return None, None
    name = f"{card.asset_name}.jpg"
    path = os.path.join(root, ASSETS_DIR, "posters", name)
    reasons = []
    for source in sources:
        source_path = os.path.join(root, source["file"])
        if _is_fresh(path, source_path):
            return f"{ASSETS_DIR}/posters/{name}", None
        try:
            frame = _first_frame(source_path, source.get("format"))
        except Exception as exc:
            reasons.append(f"{source['file']}: {type(exc).__name__}: {exc}")
            continue
        _write_jpeg(path, frame, POSTER_SIDE)
        return f"{ASSETS_DIR}/posters/{name}", None
    return None, "no first frame could be read (" + "; ".join(reasons) + ")"


def _is_fresh(derived: str, source: str) -> bool:
    try:
        return os.stat(derived).st_mtime >= os.stat(source).st_mtime
    except OSError:
        return False


def _first_frame(path: str, fmt: str | None) -> Image.Image:
    if fmt == "frames":
        names = sorted(n for n in os.listdir(path) if n.endswith(".png") and not n.startswith("."))
        if not names:
            raise FileNotFoundError("no PNG frames in the folder")
        with Image.open(os.path.join(path, names[0])) as image:
            return image.convert("RGB")
    if fmt == "mp4":
        import imageio_ffmpeg

        frames = imageio_ffmpeg.read_frames(path)
        try:
            meta = next(frames)
            first = next(frames)
        finally:
            frames.close()  # stops ffmpeg: only the first frame is needed
        return Image.frombytes("RGB", tuple(meta["size"]), first)
    with Image.open(path) as image:
        image.seek(0)
        return image.convert("RGB")


def _write_jpeg(path: str, image: Image.Image, side: int) -> None:
    image = image.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, optimize=True)
    atomic_write_bytes(path, buffer.getvalue())


def _remove_unused_assets(root: str, cards: list[Card]) -> None:
    """Drop thumbnails and posters no job refers to any more (jobs removed from the index)."""
    used = {c.poster for c in cards} | {c.input_thumb for c in cards}
    for sub in ("posters", "inputs"):
        folder = os.path.join(root, ASSETS_DIR, sub)
        for name in os.listdir(folder):
            if name.endswith(".jpg") and not name.startswith(".") and f"{ASSETS_DIR}/{sub}/{name}" not in used:
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass


# ---------------------------------------------------------------------------------------------
# HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _href(relative: str) -> str:
    """A relative path as an escaped attribute value (percent-encoded, so '#', '?' and '%' stay literal)."""
    return _e(quote(relative, safe="/"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _sort_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def _param_text(params: dict[str, Any], key: str) -> str | None:
    if key == "guidance":
        lo, hi = params.get("min_guidance_scale"), params.get("max_guidance_scale")
        if lo is None and hi is None:
            return None
        return f"{_fmt(lo)}–{_fmt(hi)}"
    if key == "size":
        w, h = params.get("width"), params.get("height")
        if w is None or h is None:
            return None
        resize = params.get("resize")
        return f"{w}×{h}" + (f" {resize}" if resize else "")
    if key == "fps":
        fps, playback = params.get("fps"), params.get("playback_fps")
        if fps is None:
            return None
        if playback is not None and float(playback) != float(fps):
            return f"{_fmt(fps)} ({_fmt(playback)})"
        return _fmt(fps)
    value = params.get(key)
    return None if value is None else _fmt(value)


def _card_html(card: Card, position: tuple[int, int] | None = None) -> str:
    entry, params = card.entry, card.params
    status = str(entry.get("status") or "unknown")
    timings = entry.get("timings") if isinstance(entry.get("timings"), dict) else {}
    width, height = params.get("width"), params.get("height")
    sort_attrs = {
        "order": card.order, "id": card.id, "status": status, "seed": entry.get("seed"),
        **{k: params.get(k) for k in ("fps", "motion_bucket_id", "noise_aug_strength", "num_frames",
                                      "num_inference_steps", "min_guidance_scale", "max_guidance_scale")},
        "pixels": width * height if isinstance(width, int) and isinstance(height, int) else None,
        "finished": entry.get("finished_unix"), "total_s": timings.get("total_s"),
    }
    attrs = " ".join(f'data-s-{k}="{_e(_sort_value(v))}"' for k, v in sort_attrs.items())
    style = f' style="grid-row:{position[0]};grid-column:{position[1]}"' if position else ""
    aspect = (f' style="aspect-ratio:{width}/{height}"'
              if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0 else "")
    status_class = status if status in ("done", "failed") else "other"
    parts = [f'<article class="card st-{status_class}" id="job-{_e(card.asset_name)}" data-status="{_e(status)}" '
             f'{attrs}{style}>',
             f'<div class="media"{aspect}>{_media_html(card, status)}</div>',
             f'<header><h3 title="{_e(card.id)}">{_e(card.id)}</h3>'
             f'<span class="badge st-{status_class}">{_e(status)}</span></header>']
    if card.sweep:
        label = ", ".join(f"{k}={_fmt(v)}" for k, v in card.sweep.items())
        parts.append(f'<p class="swept">{_e(label)}</p>')
    parts.append('<div class="row">')
    parts.append(_input_html(card))
    rows = [f'<dt>seed</dt><dd>{_e(entry.get("seed"))}</dd>']
    for key, label, tooltip in _SHOWN_PARAMS:
        text = _param_text(params, key)
        if text is not None:
            swept = key in card.sweep or (key == "guidance" and {"min_guidance_scale", "max_guidance_scale"} & set(
                card.sweep)) or (key == "size" and {"width", "height"} & set(card.sweep))
            cls = ' class="swept-param"' if swept else ""
            rows.append(f'<dt title="{_e(tooltip)}">{_e(label)}</dt><dd{cls}>{_e(text)}</dd>')
    parts.append(f'<dl class="params">{"".join(rows)}</dl></div>')
    error = entry.get("error")
    if isinstance(error, dict) and error.get("message"):
        where = _e(error.get("type") or "error") + (f" at {_e(error['stage'])}" if error.get("stage") else "")
        parts.append(f'<div class="error"><b>{where}</b><pre>{_e(error.get("message"))}</pre></div>')
    notes = [*card.output_notes, *([card.poster_note] if card.poster_note else [])]
    if card.input_thumb and card.input_note:
        notes.append(card.input_note)
    parts.extend(f'<p class="note">{_e(note)}</p>' for note in notes)
    uri = (entry.get("input") or {}).get("uri") if isinstance(entry.get("input"), dict) else None
    if uri:
        parts.append(f'<p class="uri" title="{_e(uri)}">input: {_e(uri)}</p>')
    links = [f'<a href="{_href(o["file"])}">{_e(o.get("format") or o["file"])}</a>' for o in card.outputs]
    if card.sidecar:
        links.append(f'<a href="{_href(card.sidecar)}">json</a>')
    meta = []
    if isinstance(entry.get("finished_at"), str):
        finished = entry["finished_at"]
        meta.append(f'<time datetime="{_e(finished)}" title="finished {_e(finished)}">'
                    f'{_e(finished[:16].replace("T", " "))}</time>')
    if isinstance(timings.get("total_s"), (int, float)):
        meta.append(f"{timings['total_s']:.1f} s")
    parts.append(f'<p class="files"><span>{" · ".join(links)}</span><span>{" · ".join(meta)}</span></p>')
    parts.append("</article>")
    return "".join(parts)


def _media_html(card: Card, status: str) -> str:
    poster = f' poster="{_href(card.poster)}"' if card.poster else ""
    mp4 = card.output("mp4")
    animated = next((card.output(f) for f in _PLAYABLE_AS_IMAGE if card.output(f)), None)
    if mp4:
        fallback = f' data-fallback="{_href(animated["file"])}"' if animated else ""
        return (f'<video src="{_href(mp4["file"])}"{poster} muted loop playsinline preload="metadata"'
                f'{fallback}></video>')
    if animated:
        return f'<img class="anim" src="{_href(animated["file"])}" alt="{_e(card.id)}">'
    if card.poster:
        return f'<img src="{_href(card.poster)}" alt="first frame of {_e(card.id)}">'
    text = "no video: the job failed" if status == "failed" else "no playable output in this folder"
    return f'<div class="placeholder">{_e(text)}</div>'


def _input_html(card: Card) -> str:
    if card.input_thumb:
        return f'<figure class="input"><img src="{_href(card.input_thumb)}" alt="input"><figcaption>input</figcaption></figure>'
    reason = card.input_note or "input not available"
    return (f'<figure class="input missing"><div class="placeholder" title="{_e(reason)}">input unavailable</div>'
            f'<figcaption title="{_e(reason)}">{_e(reason)}</figcaption></figure>')


def _sweep_key(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def sweep_layout(cards: list[Card]) -> dict[int, tuple[int, int]]:
    """Grid (row, column), 1-based, of each card of one item's sweep, keyed by `Card.order`.

    The last swept parameter runs along the columns and every combination of the others gets a row,
    so a two-parameter sweep reads as a matrix; missing combinations leave their cell empty.
    """
    keys: list[str] = []
    for card in cards:
        keys.extend(k for k in card.sweep if k not in keys)
    if not keys:
        return {card.order: (1, i + 1) for i, card in enumerate(cards)}
    column_key, row_keys = keys[-1], keys[:-1]
    columns = sorted({_sweep_key(c.sweep.get(column_key)) for c in cards})
    rows = sorted({tuple(_sweep_key(c.sweep.get(k)) for k in row_keys) for c in cards})
    layout: dict[int, tuple[int, int]] = {}
    taken: set[tuple[int, int]] = set()
    for card in cards:
        cell = (rows.index(tuple(_sweep_key(card.sweep.get(k)) for k in row_keys)) + 1,
                columns.index(_sweep_key(card.sweep.get(column_key))) + 1)
        while cell in taken:  # two jobs with the same swept values (an index edited by hand)
            cell = (cell[0], cell[1] + len(columns))
        taken.add(cell)
        layout[card.order] = cell
    return layout


def _units(cards: Iterable[Card]) -> list[str]:
    """Page units in index order: a single card, or the sweep grid of one item where it first appears."""
    groups: dict[str, list[Card]] = {}
    for card in cards:
        if card.sweep:
            groups.setdefault(str(card.entry.get("item_id") or card.id), []).append(card)
    units, emitted = [], set()
    for card in cards:
        if not card.sweep:
            units.append(_card_html(card))
            continue
        item = str(card.entry.get("item_id") or card.id)
        if item in emitted:
            continue
        emitted.add(item)
        members = groups[item]
        layout = sweep_layout(members)
        keys = []
        for member in members:
            keys.extend(k for k in member.sweep if k not in keys)
        columns = max(col for _, col in layout.values())
        body = "".join(_card_html(m, layout[m.order]) for m in members)
        units.append(f'<section class="sweep" data-item="{_e(item)}"><h2>{_e(item)} '
                     f'<small>sweep: {_e(" × ".join(keys))} · {len(members)} jobs</small></h2>'
                     f'<div class="grid" style="grid-template-columns:repeat({columns},var(--card))">{body}</div>'
                     f'</section>')
    return units


def render_page(cards: list[Card], document: dict[str, Any], generated_at: str) -> str:
    """The whole page as one string."""
    name = document.get("name") or "svdflow run"
    counts = {s: sum(1 for c in cards if c.entry.get("status") == s) for s in ("done", "failed")}
    filters = "".join(
        f'<button type="button" data-filter="{value}" aria-pressed="{"true" if value == "all" else "false"}">'
        f'{value} <span>{count}</span></button>'
        for value, count in (("all", len(cards)), ("done", counts["done"]), ("failed", counts["failed"])))
    sorts = "".join(f'<option value="{k}">{_e(label)}</option>' for k, label in _SORT_KEYS)
    facts = [f"{len(cards)} jobs", f"{counts['done']} done", f"{counts['failed']} failed"]
    if document.get("manifest"):
        facts.append(f"manifest {_e(document['manifest'])}")
    if document.get("updated_at"):
        facts.append(f"index updated {_e(document['updated_at'])}")
    facts.append(f"page written {_e(generated_at)}")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # The page loads nothing but files of its own folder; this also keeps a hand-edited index
        # from making it reach the network.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'self' file:; "
        "img-src 'self' file: data:; media-src 'self' file:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; connect-src 'none'\">"
        f"<title>{_e(name)} · svdflow report</title><style>{_CSS}</style></head><body>"
        f'<header class="top"><h1>{_e(name)}</h1><p class="facts">{" · ".join(facts)}</p>'
        f'<div class="controls"><div class="filters" role="group" aria-label="status">{filters}</div>'
        f'<label>sort by <select id="sort">{sorts}</select></label>'
        '<label><input type="checkbox" id="desc"> descending</label>'
        '<span class="hint">hover a video to play it</span></div></header>'
        f'<main id="sheet">{"".join(_units(cards))}</main>'
        f'<p id="empty"{" hidden" if cards else ""}>{"no job matches this filter" if cards else _NO_JOBS}</p>'
        f'<script>{_JS}</script></body></html>\n'
    )


_NO_JOBS = "index.json records no job yet; run the manifest, then write the report again"

_CSS = """
:root{--card:320px;font:14px/1.4 system-ui,sans-serif;color:#1d1f23;background:#eef0f3}
body{margin:0}
.top{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #d5d9df;padding:10px 18px}
h1{font-size:20px;margin:0}
.facts{margin:2px 0 8px;color:#5b6270;font-size:12px;overflow-wrap:anywhere}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center}
.filters button{font:inherit;border:1px solid #b9c0ca;background:#f7f8fa;padding:3px 10px;cursor:pointer}
.filters button:first-child{border-radius:4px 0 0 4px}.filters button:last-child{border-radius:0 4px 4px 0}
.filters button[aria-pressed=true]{background:#24539c;color:#fff;border-color:#24539c}
.filters span{opacity:.75}
.hint{color:#5b6270;font-size:12px}
#sheet{display:flex;flex-wrap:wrap;gap:14px;padding:14px 18px;align-items:flex-start}
.card{width:var(--card);box-sizing:border-box;background:#fff;border:1px solid #d5d9df;border-radius:6px;
overflow:hidden;display:flex;flex-direction:column}
.card.st-failed{border-color:#c93c3c;box-shadow:0 0 0 1px #c93c3c}
.media{background:#20232a;aspect-ratio:16/9;display:flex;align-items:center;justify-content:center}
.media video,.media img{width:100%;height:100%;object-fit:contain;display:block}
.placeholder{color:#9aa3b0;font-size:12px;text-align:center;padding:8px}
.card header{display:flex;justify-content:space-between;align-items:center;gap:6px;padding:6px 8px 0}
h3{font-size:14px;margin:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.badge{font-size:11px;padding:1px 7px;border-radius:9px;background:#e2e5ea}
.badge.st-done{background:#d7f0dc;color:#1d6b30}.badge.st-failed{background:#f8d7d7;color:#9b1c1c}
.swept{margin:2px 8px 0;font-weight:600;color:#24539c;font-size:12px}
.row{display:flex;gap:8px;padding:6px 8px;align-items:flex-start}
.input{margin:0;width:96px;flex:none}
.input img{width:96px;height:72px;object-fit:cover;display:block;border-radius:3px;background:#20232a}
.input .placeholder{width:96px;height:72px;box-sizing:border-box;background:#f1f2f4;border:1px dashed #b9c0ca;
border-radius:3px;display:flex;align-items:center;justify-content:center;color:#5b6270}
.input figcaption{font-size:10px;color:#5b6270;overflow-wrap:anywhere}
.input.missing figcaption{color:#9b1c1c;display:-webkit-box;-webkit-line-clamp:5;-webkit-box-orient:vertical;
overflow:hidden}
.params{display:grid;grid-template-columns:auto 1fr;gap:0 6px;margin:0;font-size:11px;line-height:1.3;min-width:0}
.params dt{color:#5b6270}.params dd{margin:0;overflow-wrap:anywhere}
.params dd.swept-param{font-weight:700;color:#24539c}
.error{margin:0 8px 6px;padding:6px;background:#fdf0f0;border:1px solid #efc1c1;border-radius:4px;color:#7d1717;
font-size:12px}
.error pre{margin:4px 0 0;white-space:pre-wrap;overflow-wrap:anywhere;font-size:11px;max-height:9em;overflow:auto}
.note{margin:0 8px 4px;font-size:11px;color:#8a5a00}
.uri{margin:0 8px;font-size:11px;color:#5b6270;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.files{margin:4px 8px 8px;font-size:12px;display:flex;justify-content:space-between;gap:6px;flex-wrap:wrap}
.files span+span{color:#5b6270}
.sweep{flex-basis:100%;background:#e3e7ed;border-radius:8px;padding:8px 10px 10px;overflow-x:auto}
.sweep h2{font-size:15px;margin:0 0 8px}.sweep h2 small{font-weight:400;color:#5b6270}
.grid{display:grid;gap:10px;align-items:start}
[hidden],.card.off{display:none!important}
.grid .card.off{display:flex!important;visibility:hidden}
#empty{padding:0 18px;color:#5b6270}
"""

# Plain ES2017, no modules and no fetch(): works from file:// in any current browser.
_JS = """
(function(){
var sheet=document.getElementById('sheet'),sortSel=document.getElementById('sort'),
desc=document.getElementById('desc'),empty=document.getElementById('empty'),status='all';
var units=Array.prototype.slice.call(sheet.children);
function cards(u){return u.classList.contains('card')?[u]:Array.prototype.slice.call(u.querySelectorAll('.card'));}
function val(c,k){var v=c.getAttribute('data-s-'+k);if(v===null||v==='')return null;
var n=Number(v);return isFinite(n)&&/^[-+0-9.eE]+$/.test(v)?n:v;}
function unitVal(u,k){var vs=cards(u).filter(function(c){return !c.classList.contains('off');})
.map(function(c){return val(c,k);}).filter(function(v){return v!==null;});
if(!vs.length)return null;if(typeof vs[0]==='number')return Math.min.apply(null,vs.filter(function(v){return typeof v==='number';}));
return vs.sort()[0];}
function cmp(a,b){if(a===b)return 0;if(a===null)return 1;if(b===null)return -1;
if(typeof a==='number'&&typeof b==='number')return a-b;
return String(a).localeCompare(String(b),undefined,{numeric:true});}
function apply(){
  var shown=0;
  units.forEach(function(u){var any=false;cards(u).forEach(function(c){
    var on=status==='all'||c.getAttribute('data-status')===status;c.classList.toggle('off',!on);if(on)any=true;});
    u.hidden=!any;if(any)shown++;});
  if(units.length)empty.hidden=shown>0;
  var k=sortSel.value,sign=desc.checked?-1:1;
  units.slice().sort(function(a,b){var r=cmp(unitVal(a,k),unitVal(b,k));
    if(r===0)r=cmp(unitVal(a,'order'),unitVal(b,'order'));else if(unitVal(a,k)!==null&&unitVal(b,k)!==null)r*=sign;return r;})
  .forEach(function(u){sheet.appendChild(u);});
}
Array.prototype.forEach.call(document.querySelectorAll('[data-filter]'),function(b){
  b.addEventListener('click',function(){status=b.getAttribute('data-filter');
    Array.prototype.forEach.call(document.querySelectorAll('[data-filter]'),function(o){o.setAttribute('aria-pressed',String(o===b));});
    apply();});});
sortSel.addEventListener('change',apply);desc.addEventListener('change',apply);
var canH264=document.createElement('video').canPlayType('video/mp4; codecs="avc1.64001F"')!=='';
function fallback(v){var f=v.getAttribute('data-fallback'),img=document.createElement('img');
  img.src=f||v.getAttribute('poster')||'';img.alt=f?'animated fallback':'first frame (this browser cannot play the mp4)';
  if(!img.src){var p=document.createElement('div');p.className='placeholder';p.textContent='this browser cannot play the mp4';v.replaceWith(p);return;}
  v.replaceWith(img);}
Array.prototype.forEach.call(document.querySelectorAll('video'),function(v){
  if(!canH264&&v.getAttribute('data-fallback')){fallback(v);return;}
  v.addEventListener('error',function(){fallback(v);});
  var card=v.closest('.card');
  card.addEventListener('mouseenter',function(){var p=v.play();if(p)p.catch(function(){});});
  card.addEventListener('mouseleave',function(){v.pause();});
  v.addEventListener('click',function(){if(v.paused){v.play();}else{v.pause();}});});
})();
"""
