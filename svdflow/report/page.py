"""The page: what each card shows, rendered through the Jinja2 templates in `templates/`.

This module decides what the page says (which parameters, which file plays, what a missing input
reads as); the templates decide the markup. Autoescaping is on for every template, so nothing an
index holds (ids, errors, URIs) can become markup; links are percent-encoded relative paths. The
CSS and JS are inlined, so the page is one file that works from file:// and loads nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from svdflow.outputs.clip import clip_shape
from svdflow.outputs.entry import ErrorRecord
from svdflow.outputs.index import RunIndex
from svdflow.report.cards import DOM_PREFIX, Card
from svdflow.report.layout import SweepUnit, page_units
from svdflow.report.quality import SHOWN_SCORES, QualityView, best_variants, quality_view
from svdflow.report.shown import Shown
from svdflow.report.views import RANKED_CARDS, View, view_units, views_written
from svdflow.views import human_bytes

# Between a number and its unit ("1.14 s", "8 frames"): the unit never wraps onto a line of its own.
NBSP = "\u00a0"
# Shown in every card, in this order: (key, label, tooltip).
SHOWN_PARAMS = (
    ("fps", "fps", "conditioning fps (playback fps in brackets when it differs)"),
    ("motion_bucket_id", "motion_bucket_id", "amount of motion"),
    ("noise_aug_strength", "noise_aug_strength", "noise added to the conditioning image"),
    ("num_frames", "num_frames", "frames generated (per segment)"),
    ("clip", "clip", "frames and seconds of the written files, after segments, loop and interpolate"),
    ("num_inference_steps", "steps", "num_inference_steps"),
    ("guidance", "guidance", "min_guidance_scale - max_guidance_scale"),
    ("size", "size", "width x height, resize policy"),
)
# A shown row that stands for several parameters is marked swept when any of them is.
_ROW_PARAMS = {"guidance": {"min_guidance_scale", "max_guidance_scale"}, "size": {"width", "height"},
               "clip": {"num_frames", "segments", "loop", "loop_frames", "interpolate", "playback_fps"}}
# Shown only where they are not at their defaults: (key, label, tooltip).
SHOWN_IF_SET = (
    ("segments", "segments", "clips chained, each from the previous one's last frame"),
    ("loop", "loop", "how the clip loops (crossfade: over loop_frames frames)"),
    ("interpolate", "interpolate", "motion-interpolated frames: N-1 between each pair"),
)
# The sort select: (value, label). Values name a card's data-s-<value> attribute.
SORT_KEYS = (
    ("order", "index order"), ("id", "id"), ("status", "status"), ("seed", "seed"), ("fps", "fps"),
    ("motion_bucket_id", "motion_bucket_id"), ("noise_aug_strength", "noise_aug_strength"),
    ("num_frames", "num_frames"), ("frames", "frames written"), ("duration_s", "duration"),
    ("num_inference_steps", "steps"),
    ("min_guidance_scale", "min_guidance_scale"), ("max_guidance_scale", "max_guidance_scale"),
    ("pixels", "size (pixels)"), ("finished", "finished at"), ("total_s", "render time"),
    *((key, f"{label} (score)") for key, _, label, *_ in SHOWN_SCORES), ("passed", "qc passed"),
)
_SORTED_PARAMS = ("fps", "motion_bucket_id", "noise_aug_strength", "num_frames", "num_inference_steps",
                  "min_guidance_scale", "max_guidance_scale")
PLAYABLE_AS_IMAGE = ("webp", "gif")  # animated images any browser shows without a video decoder
# The videos a card offers its <video>, in order of preference: the browser plays the first it can
# decode (H.265 where it has a decoder, Safari first; VP9; H.264 nearly everywhere), and falls back to
# the next when one fails. ProRes (.mov) is for editors: linked, not played.
VIDEO_SOURCES = (
    ("hevc", 'video/mp4; codecs="hvc1"'),
    ("webm", 'video/webm; codecs="vp9"'),
    ("mp4", 'video/mp4; codecs="avc1.64001F"'),
)
LINK_TEXT = {"hevc": "hevc", "prores": "prores (.mov)", "frames": "frames (PNG folder)"}
NO_JOBS = "index.jsonl records no job yet; run the manifest, then write the report again"
FIRST_PAGE = "index.html"
PAGES_DIR = "report/pages"
# Cards per page: the first page is what a browser loads at once (a poster per card; videos are
# preload=none), whatever the campaign's size. An item's sweep is never split, so a page holding a
# big sweep is bigger.
PAGE_CARDS = 100
PAGER_SPAN = 2  # pages linked on each side of the current one


@dataclass(frozen=True)
class ParamRow:
    label: str
    text: str
    tooltip: str | None
    swept: bool


@dataclass(frozen=True)
class Link:
    file: str  # relative to the output folder
    text: str


@dataclass(frozen=True)
class VideoSource:
    file: str  # relative to the output folder
    type: str  # MIME type with codecs, for the browser's canPlayType


@dataclass(frozen=True)
class CardView:
    """Everything the card template shows of one job; paths are relative to the output folder."""

    id: str
    dom_id: str
    status: str
    sort_attributes: Markup  # ' data-s-<key>="<value>"' for each value the page's script sorts by
    aspect: str  # "width/height" of the video (the index allows no size below 64)
    sources: list[VideoSource]  # hevc, webm, mp4: what the <video> offers, in order
    animated: str | None  # a webp or gif: the video's fallback, or the media itself without a video
    poster: str | None
    placeholder: str  # what the media box says when there is nothing to show
    swept: str | None  # "motion_bucket_id=60, ..."
    input_thumb: str | None
    input_reason: str  # why there is no thumbnail
    params: list[ParamRow]
    error: ErrorRecord | None
    notes: list[str]
    uri: str
    links: list[Link]
    finished_at: str
    total: str | None
    reencoded: bool  # the files were encoded again from the master (an output-only change)
    details: list[tuple[str, str]]  # (label, text): keys, master, segments; shown folded
    qc: QualityView  # its scores and verdict (the views filter and rank by them)


@dataclass(frozen=True)
class PageLink:
    """A link of the pager or of the status filters, relative to the page it is on."""

    text: str
    href: str | None  # relative to the output folder; None: this page (or no such page)
    current: bool = False
    key: str = ""  # a view's key (the view picker)
    count: int | None = None  # a filter's cards


# Where a card's markup says whether it is the best variant of its sweep: filled in per report, so the
# markup of a card (cached, report.cache) does not depend on its sweep's other cards.
BEST_MARK = Markup("<!--svdflow:best-->")
# A card's place in the index (the page's "index order" sort), stamped in per report by `placed`: the
# markup of a card does not depend on where its job is, so a job added early in a manifest does not
# make every later card's cached markup useless. The first data attribute of the card's tag; what an
# index holds is escaped (no raw '"'), so nothing before it in the markup can look like it.
_ORDER_SLOT = ' data-s-order="?"'


CARD_TEMPLATE = "card.html.j2"


def render_card(card: Card) -> tuple[Markup, Shown]:
    """A card's markup, the same on every page that shows it (without its place: `placed`), and what
    the pages need of it."""
    view = _card_view(card)
    return _card_macro()(view), Shown.of(card, view.dom_id, view.qc)


def placed(markup: Markup, order: int) -> Markup:
    """A card's markup (render_card's) stamped with its place in the index."""
    # str.replace: Markup's own would escape the attribute
    return Markup(str.replace(markup, _ORDER_SLOT, f' data-s-order="{order}"', 1))


def template_source(name: str) -> str:
    """The text of a template of `templates/`."""
    environment = _environment()
    return environment.loader.get_source(environment, name)[0]


def render_pages(shown: list[Shown], html: dict[str, Markup], index: RunIndex, generated_at: str) -> dict[str, str]:
    """Every page of the sheet, by path relative to the output folder: index.html (the first page of
    all jobs), then `report/pages/<view>-<n>.html` for the rest of all jobs and for each other view
    (`svdflow.report.views`: the status and qc filters, the rankings by score). `shown` are the cards in
    index order, `html` their markup (render_card's) by id, stamped here with each card's place. A page holds about PAGE_CARDS cards (an
    item's sweep stays whole on one page), so the first page weighs the same for 100 jobs as for 100,000.

    Every page resolves its links against the output folder (the pages under report/pages/ say so
    with <base>), so each card is rendered once, whichever pages show it."""
    counts = {s: sum(1 for c in shown if c.status == s) for s in ("done", "failed")}
    facts = [f"{len(shown)} jobs", f"{counts['done']} done", f"{counts['failed']} failed"]
    scored = sum(1 for c in shown if c.values)
    if scored:
        facts.append(f"{scored} scored")
    if index.manifest:
        facts.append(f"manifest {index.manifest}")
    if index.updated_at:
        facts.append(f"index updated {index.updated_at}")
    # Only the first page says when it was written: the others are rewritten only when they change (a
    # time on each would change them all on every report).
    written = [*facts, f"page written {generated_at}"]
    environment = _environment()
    macros = environment.get_template(CARD_TEMPLATE).module
    best = best_variants((c.item, c.variant) for c in shown if c.variant is not None)
    badge = str(macros.best_badge())
    markup = {s.id: placed(html[s.id], s.order) for s in shown}  # each card stamped with its place
    for job_id in best:
        if job_id in markup:  # str.replace: Markup's own would escape the badge
            markup[job_id] = Markup(str.replace(markup[job_id], BEST_MARK, badge, 1))
    units = page_units(shown)
    sweeps: dict[int, Markup] = {}  # a sweep shown whole by several views is rendered once

    def rendered(unit) -> Markup:
        if not isinstance(unit, SweepUnit):
            return markup[unit.id]
        grid = sweeps.get(id(unit))
        if grid is None:
            grid = sweeps[id(unit)] = macros.sweep(unit, [(unit.cells[c.order], markup[c.id]) for c in unit.cards])
        return grid

    template = environment.get_template("index.html.j2")
    views = views_written(scored > 0)
    selected = {view.key: view_units(view, units, _cards_of, best) for view in views}
    totals = {key: sum(len(_cards_of(unit)) for unit in chosen) for key, chosen in selected.items()}
    pages = {}
    for view in views:
        paged = _paged(selected[view.key])
        for number, on_page in enumerate(paged, start=1):
            path = page_path(view.key, number)
            pages[path] = template.render(
                name=index.name or "svdflow run", facts=written if path == FIRST_PAGE else facts,
                skipped=index.skipped,
                base=_root_of(path), sort_keys=SORT_KEYS, body=_joined(rendered(unit) for unit in on_page),
                filters=_picker(views, "status", view, totals), qc_filters=_picker(views, "qc", view, totals),
                rankings=_picker(views, "ranking", view, totals), unscored=not scored,
                pager=_pager(view.key, number, len(paged)), no_jobs=view.empty if shown else NO_JOBS,
                note=_ranking_note(view, len(shown)))
    return pages


def _ranking_note(view: View, jobs: int) -> str | None:
    """What a ranking that holds fewer cards than the campaign says of it."""
    if view.kind != "ranking" or jobs <= RANKED_CARDS:
        return None
    return (f"{view.label}: the first {RANKED_CARDS:,} of {jobs:,} jobs (index.jsonl has every job's scores; "
            f"the opposite ranking shows the other end)")


def _joined(units) -> Markup:
    """Rendered units as one piece of markup (one value for the template, not one per card: a campaign's
    pages hold every card several times over)."""
    return Markup("\n".join(units))


def _cards_of(unit) -> list[Shown]:
    return unit.cards if isinstance(unit, SweepUnit) else [unit]


def _picker(views: tuple[View, ...], kind: str, current: View, totals: dict[str, int]) -> list[PageLink]:
    """The links of the view picker to the views of one kind (counts for the filters)."""
    return [PageLink(view.label, _href(page_path(view.key, 1)), view is current, view.key,
                     totals[view.key] if kind != "ranking" else None) for view in views if view.kind == kind]


def page_path(view: str, number: int) -> str:
    """Where page `number` (1-based) of view `view` lives, relative to the output folder."""
    return FIRST_PAGE if (view, number) == ("all", 1) else f"{PAGES_DIR}/{view}-{number}.html"


def _root_of(path: str) -> str:
    """The way from a page back to the output folder ("" for index.html)."""
    return "../" * path.count("/")


def _paged(units: list) -> list[list]:
    """Units split into pages of about PAGE_CARDS cards; a sweep is never split. At least one page
    (an empty set says so)."""
    pages: list[list] = [[]]
    size = 0
    for unit in units:
        count = len(unit.cards) if isinstance(unit, SweepUnit) else 1
        if pages[-1] and size + count > PAGE_CARDS:
            pages.append([])
            size = 0
        pages[-1].append(unit)
        size += count
    return pages


def _pager(view: str, number: int, count: int) -> list[PageLink]:
    """The pager of page `number` of `count`: previous, the first, a few around this one, the last,
    next; a fixed number of links however many pages there are."""
    if count <= 1:
        return []

    def link(n: int, text: str | None = None) -> PageLink:
        return PageLink(text or str(n), None if n == number else _href(page_path(view, n)), n == number)

    numbers = sorted({1, count, *range(max(1, number - PAGER_SPAN), min(count, number + PAGER_SPAN) + 1)})
    links = [link(number - 1, "‹ previous") if number > 1 else PageLink("‹ previous", None)]
    for before, n in zip([0, *numbers], numbers):
        if n - before > 1:
            links.append(PageLink("…", None))
        links.append(link(n))
    links.append(link(number + 1, "next ›") if number < count else PageLink("next ›", None))
    return links


def _card_view(card: Card) -> CardView:
    entry, params = card.entry, card.params
    sources = [VideoSource(o.file, kind) for fmt, kind in VIDEO_SOURCES if (o := card.output(fmt))]
    animated = next((o for o in (card.output(f) for f in PLAYABLE_AS_IMAGE) if o), None)
    width, height = params.width, params.height
    clip = clip_shape(params)
    qc = quality_view(entry)
    sort = {
        "id": card.id, "status": entry.status, "seed": entry.seed,
        **{key: getattr(params, key) for key in _SORTED_PARAMS},
        "frames": clip.frames, "duration_s": round(clip.duration_s, 4),
        "pixels": width * height, "finished": entry.finished_unix, "total_s": entry.timings.total_s,
        **qc.values, "passed": None if qc.passed is None else int(qc.passed),
    }
    notes = [*card.output_notes, *([card.poster_note] if card.poster_note else [])]
    if card.master_note:
        notes.append(card.master_note)
    if card.input_thumb and card.input_note:
        notes.append(card.input_note)
    links = [Link(o.file, LINK_TEXT.get(o.format, o.format or o.file)) for o in card.outputs]
    if card.sidecar:
        links.append(Link(card.sidecar, "json"))
    total = entry.timings.total_s
    return CardView(
        id=card.id, dom_id=DOM_PREFIX + card.asset_name, status=entry.status,
        sort_attributes=Markup(_ORDER_SLOT) + _data_attributes(sort),
        aspect=f"{width}/{height}",
        sources=sources, animated=animated.file if animated else None, poster=card.poster,
        placeholder="no video: the job failed" if entry.status == "failed" else "no playable output in this folder",
        swept=", ".join(f"{k}={_fmt(v)}" for k, v in card.sweep.items()) or None,
        input_thumb=card.input_thumb, input_reason=card.input_note or "input not available",
        params=_param_rows(card), error=entry.error if entry.error and entry.error.message else None,
        notes=notes, uri=entry.input.uri, links=links, finished_at=entry.finished_at,
        total=f"{total:.1f}{NBSP}s" if total is not None else None,
        reencoded=entry.status == "done" and entry.encoded_from == "master", details=_details(card), qc=qc,
    )


def _details(card: Card) -> list[tuple[str, str]]:
    """What a card shows folded: how its files were made and what they are keyed by."""
    entry = card.entry
    clip = clip_shape(entry.params)
    rows = []
    if entry.status == "done":
        rows.append(("frames", f"{clip.rendered} rendered, {clip.frames} written at {_fmt(clip.fps)}{NBSP}fps"))
    for segment in entry.segments:
        rows.append((f"segment {segment.index + 1}", f"seed {segment.seed}, {segment.render_s:.1f}{NBSP}s"))
    if card.master is not None:
        rows.append(("master", f"{card.master.file} ({human_bytes(card.master.bytes)}, lossless "
                               f"{card.master.codec.upper()})"))
    if entry.status == "done":
        rows.append(("encoded from", "the master (an output-only change)" if entry.encoded_from == "master"
                     else "the render"))
    for label, key in (("render key", entry.render_key), ("output key", entry.output_key)):
        if key:
            rows.append((label, key))
    return rows


def _param_rows(card: Card) -> list[ParamRow]:
    rows = [ParamRow("seed", str(card.entry.seed), None, False)]
    for key, label, tooltip in SHOWN_PARAMS:
        swept = bool(_ROW_PARAMS.get(key, {key}) & set(card.sweep))
        rows.append(ParamRow(label, _param_text(card, key), tooltip, swept))
    defaults = type(card.params).model_fields
    for key, label, tooltip in SHOWN_IF_SET:
        if getattr(card.params, key) != defaults[key].default:
            swept = key in card.sweep or (key == "loop" and "loop_frames" in card.sweep)
            rows.append(ParamRow(label, _param_text(card, key), tooltip, swept))
    return rows


def _param_text(card: Card, key: str) -> str:
    params = card.params
    if key == "guidance":
        return f"{_fmt(params.min_guidance_scale)}–{_fmt(params.max_guidance_scale)}"
    if key == "size":
        return f"{params.width}×{params.height} {params.resize}"
    if key == "fps" and float(params.playback_fps) != float(params.fps):
        return f"{_fmt(params.fps)} ({_fmt(params.playback_fps)})"
    if key == "clip":
        clip = clip_shape(params)
        return f"{clip.frames}{NBSP}frames · {clip.duration_s:.2f}{NBSP}s"
    if key == "loop" and params.loop == "crossfade":
        clip = clip_shape(params)
        return f"crossfade over {clip.rendered - clip.looped} frames"
    if key == "interpolate":
        return f"×{params.interpolate}"
    return _fmt(getattr(params, key))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _data_attributes(sort: dict[str, object]) -> Markup:
    """The card's sort values as data-s-* attributes, escaped here in one go: a campaign's report
    renders 100,000 cards, and the template escaping each of the 16 values costs a third of its time
    (numbers need no escaping: only strings go through markupsafe)."""
    return Markup("".join(f' data-s-{key}="{_sort_value(value)}"' for key, value in sort.items()))


def _sort_value(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ""
    return str(escape(value))


def _href(relative: str) -> str:
    """A relative path as a URL path: percent-encoded, so '#', '?' and '%' stay part of the name."""
    return quote(relative, safe="/")


@cache
def _card_macro():
    """The card macro, looked up once (get_template checks the template's file on every call)."""
    return _environment().get_template(CARD_TEMPLATE).module.card


@cache
def _environment() -> Environment:
    loader = PackageLoader("svdflow.report", "templates")
    environment = Environment(
        loader=loader, autoescape=select_autoescape(enabled_extensions=("html.j2",), default=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)

    @cache
    def inline(name: str) -> Markup:
        """A CSS or JS file of `templates/` as it is: inlined into the page, not parsed as a template."""
        return Markup(loader.get_source(environment, name)[0])

    environment.filters["href"] = _href
    environment.globals["inline"] = inline
    return environment
