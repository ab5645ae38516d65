"""The sheet's views: which cards each set of pages shows, in which order.

A campaign of 100,000 jobs cannot be sorted or filtered in the browser without loading every card,
so each view is written as pages of its own (`report/pages/<view>-<n>.html`), from cards rendered
once: the status filters (all, done, failed), the qc filters (did not pass, the best variant of each
sweep) and the rankings (most and least motion, most flicker, most drift). A filter keeps an item's
sweep together as its grid; a ranking and the best variants list cards one by one. A ranking puts the
jobs without scores last, in index order; ties keep index order too. The qc views are written only
when some job is scored.

A ranking holds its first RANKED_CARDS cards: a reviewer looks at the ends of a ranking (the most
and the least motion are two views), and every card of a campaign written four more times over
would make the sheet of 100,000 jobs ~5 times as heavy to write; the whole order is one sort of
index.jsonl away (jq, pandas), and a filter (did not pass) always holds every card it selects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from svdflow.report.shown import Shown


@dataclass(frozen=True)
class View:
    key: str  # its pages' file stem
    label: str
    kind: str  # "status", "qc" (filters) or "ranking"
    empty: str  # what its page says when no card is in it
    score: str | None = None  # a ranking's score (quality.SHOWN_SCORES' key)
    descending: bool = False


VIEWS = (
    View("all", "all", "status", "no job is recorded"),
    View("done", "done", "status", "no job is done"),
    View("failed", "failed", "status", "no job failed"),
    View("not-passed", "did not pass", "qc", "every scored job passed its qc thresholds (or had none)"),
    View("best", "best of each sweep", "qc", "no sweep has two scored variants"),
    View("motion-most", "most motion", "ranking", "", "motion", True),
    View("motion-least", "least motion", "ranking", "", "motion", False),
    View("flicker-most", "most flicker", "ranking", "", "flicker", True),
    View("drift-most", "most drift", "ranking", "", "last_ssim", False),  # the lowest last-frame SSIM
)
BY_KEY = {view.key: view for view in VIEWS}
RANKED_CARDS = 1000  # 10 pages


def views_written(scored: bool) -> tuple[View, ...]:
    """The views a sheet has: the qc filters and rankings only when some job is scored."""
    return VIEWS if scored else tuple(view for view in VIEWS if view.kind == "status")


def view_units(view: View, units: list, cards_of: Callable[[object], list[Shown]], best: set[str]) -> list:
    """The units (cards, or sweeps with their cards) `view` shows, in its order. `cards_of(unit)` is a
    unit's cards (a card's is itself); `best` the ids of the best variants."""
    if view.key == "all":
        return units
    if view.key in ("done", "failed"):
        return _filtered(units, cards_of, lambda card: card.status == view.key)
    if view.key == "not-passed":
        return _filtered(units, cards_of, lambda card: card.passed is False)
    cards = [card for unit in units for card in cards_of(unit)]
    if view.key == "best":
        return [card for card in cards if card.id in best]
    scored = [card for card in cards if view.score in card.values]
    # sorted() is stable with reverse=True as well: equal scores keep index order either way.
    scored.sort(key=lambda card: card.values[view.score], reverse=view.descending)
    return (scored + [card for card in cards if view.score not in card.values])[:RANKED_CARDS]


def _filtered(units: list, cards_of: Callable[[object], list], keep: Callable[[Shown], bool]) -> list:
    """The units whose cards `keep`: a sweep keeps its grid, with its kept cards in their own cells."""
    shown = []
    for unit in units:
        cards = cards_of(unit)
        kept = [card for card in cards if keep(card)]
        if kept and len(kept) == len(cards):
            shown.append(unit)
        elif kept:
            shown.append(replace(unit, cards=kept))
    return shown
