"""What the pages need of a card once its markup is rendered: where it goes (order, item, sweep), what
the views filter and rank it by (status, scores, verdict), and what the best-variant ranking reads.
Small and plain, so that it is cached beside the card's markup (`report.cache`) and a card read from
the cache needs no validated entry. Its place in the index is not cached with it: it is the report's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svdflow.report.cards import Card
from svdflow.report.quality import QualityView


@dataclass
class Shown:
    id: str
    dom_id: str
    order: int  # position in the index
    item: str
    status: str
    sweep: dict[str, int | float | str]
    values: dict[str, float] = field(default_factory=dict)  # quality.SHOWN_SCORES' keys -> score, when scored
    passed: bool | None = None  # the qc verdict; None: no thresholds, or not scored
    variant: dict | None = None  # a scored variant of a sweep: quality.ranking.Variant's JSON (validated once,
    # by quality.best_variants, which reads cached ones too)

    @classmethod
    def of(cls, card: Card, dom_id: str, qc: QualityView) -> Shown:
        """What the pages need of `card`, whose quality is `qc` (quality.quality_view of its entry)."""
        entry = card.entry
        variant = None
        if card.sweep and entry.status == "done" and entry.quality is not None:
            quality = entry.quality
            verdict = None if quality.passed is None else {
                "passed": quality.passed, "failures": [failure.model_dump(mode="json") for failure in quality.failures]}
            variant = {"id": entry.id, "scores": quality.scores.model_dump(mode="json"), "verdict": verdict}
        return cls(id=card.id, dom_id=dom_id, order=card.order, item=card.item, status=entry.status,
                   sweep=dict(card.sweep), values=qc.values, passed=qc.passed, variant=variant)

    def to_json(self) -> dict:
        """Its JSON, without its place (`from_json` is given that)."""
        data = dict(vars(self))  # its values are JSON's types already (asdict would copy them deeply)
        del data["order"]
        return data

    @classmethod
    def from_json(cls, data: dict, order: int) -> Shown:
        return cls(order=order, **data)
