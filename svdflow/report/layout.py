"""Where cards go on the page: alone, or with the rest of their item's sweep as one grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Card(Protocol):
    """What placing a card needs of it (a report.cards.Card, or the report.shown.Shown of a cached one)."""

    @property
    def order(self) -> int: ...  # its position in the index
    @property
    def item(self) -> str: ...
    @property
    def sweep(self) -> dict[str, int | float | str]: ...


@dataclass(frozen=True)
class SweepUnit:
    """The jobs of one item's sweep, shown together; `cells` maps `Card.order` to (row, column)."""

    item: str
    keys: list[str]  # the swept parameters, in the order they first appear
    cards: list[Card]
    cells: dict[int, tuple[int, int]]

    @property
    def columns(self) -> int:
        return max(column for _, column in self.cells.values())


def page_units(cards: list[Card]) -> list[Card | SweepUnit]:
    """Page units in index order: a card, or the sweep of one item where its first job appears."""
    groups: dict[str, list[Card]] = {}
    for card in cards:
        if card.sweep:
            groups.setdefault(card.item, []).append(card)
    units: list[Card | SweepUnit] = []
    emitted: set[str] = set()
    for card in cards:
        if not card.sweep:
            units.append(card)
        elif card.item not in emitted:
            emitted.add(card.item)
            members = groups[card.item]
            units.append(SweepUnit(card.item, _swept_keys(members), members, sweep_layout(members)))
    return units


def sweep_layout(cards: list[Card]) -> dict[int, tuple[int, int]]:
    """Grid (row, column), 1-based, of each card of one item's sweep, keyed by `Card.order`.

    The last swept parameter runs along the columns and every combination of the others gets a row,
    so a two-parameter sweep reads as a matrix; missing combinations leave their cell empty.
    """
    keys = _swept_keys(cards)
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


def _swept_keys(cards: list[Card]) -> list[str]:
    keys: list[str] = []
    for card in cards:
        keys.extend(k for k in card.sweep if k not in keys)
    return keys


def _sweep_key(value: int | float | str | None) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))
