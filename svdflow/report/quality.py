"""What a card says of its job's quality (the entry's `quality`), and which variant of each sweep is best.

A card shows the four scores a reviewer sorts by (motion, the flicker left after motion compensation,
first- and last-frame SSIM against the input), its qc verdict with each failed threshold, and, for a
job that re-rolled, how many attempts it took and the seed of the one kept. The best variant of an
item's sweep is the first of `svdflow.quality.ranking.rank_variants` over its scored variants (the
README's "The qc rules" gives the rule); an item with fewer than two scored variants has none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from svdflow.outputs.entry import IndexEntry
from svdflow.quality.ranking import Variant, rank_variants
from svdflow.quality.verdict import score_value

NBSP = "\u00a0"
# What a card shows and the views rank by: (key, score path, label, unit, tooltip).
SHOWN_SCORES = (
    ("motion", "motion.mean", "motion", f"{NBSP}px/f",
     "mean optical-flow motion, pixels per frame on a frame 1024 px wide (motion.mean)"),
    ("flicker", "flicker.residual", "flicker", "",
     "change left after motion compensation, mean absolute luma 0-255 (flicker.residual)"),
    ("first_ssim", "fidelity.first_ssim", "SSIM first", "",
     "SSIM of the first frame against the input image (fidelity.first_ssim)"),
    ("last_ssim", "fidelity.last_ssim", "SSIM last", "",
     "SSIM of the last frame against the input image: lower is more drift (fidelity.last_ssim)"),
)

QcState = Literal["passed", "not-passed", "scored", "unscored"]


@dataclass(frozen=True)
class ScoreRow:
    key: str
    label: str
    text: str
    tooltip: str
    failed: bool  # a threshold on this score was not met


@dataclass(frozen=True)
class QualityView:
    """A card's quality: its state, score rows, failed thresholds, attempts; `values` for the views."""

    state: QcState
    rows: list[ScoreRow] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "min_motion: 1.2 < 2"
    attempts: str | None = None  # "3 attempts; kept #2, seed 123"
    values: dict[str, float] = field(default_factory=dict)  # SHOWN_SCORES' keys -> value, when scored

    @property
    def passed(self) -> bool | None:
        return {"passed": True, "not-passed": False}.get(self.state)


UNSCORED = QualityView("unscored")


def quality_view(entry: IndexEntry) -> QualityView:
    quality = entry.quality
    if quality is None:
        return UNSCORED
    failed_scores = {failure.score for failure in quality.failures}
    values = {key: score_value(quality.scores, path) for key, path, *_ in SHOWN_SCORES}
    rows = [ScoreRow(key, label, f"{_number(values[key])}{unit}", tooltip, path in failed_scores)
            for key, path, label, unit, tooltip in SHOWN_SCORES]
    failures = [f"{f.threshold}: {_number(f.value)} {'<' if f.value < f.limit else '>'} {_number(f.limit)}"
                for f in quality.failures]
    attempts = None
    if quality.attempts:
        kept = next((a for a in quality.attempts if a.attempt == quality.kept), None)
        attempts = (f"{len(quality.attempts)} attempts; kept #{quality.kept + 1}"
                    + (f", seed {kept.seed}" if kept is not None else ""))
    state: QcState = "scored" if quality.passed is None else "passed" if quality.passed else "not-passed"
    return QualityView(state, rows, failures, attempts, values)


def best_variants(variants: Iterable[tuple[str, dict]]) -> set[str]:
    """The id of the best variant of each item's sweep: `variants` are (item, Variant's JSON) of the done,
    scored jobs of sweeps; an item needs two of them (of one scores version) to have a best."""
    sweeps: dict[str, list[Variant]] = {}
    for item, variant in variants:
        sweeps.setdefault(item, []).append(Variant.model_validate(variant))
    best = set()
    for members in sweeps.values():
        # Scores of different definitions do not compare: rank the variants of the newest only.
        newest = max(v.scores.version for v in members)
        comparable = [v for v in members if v.scores.version == newest]
        if len(comparable) >= 2:
            best.add(rank_variants(comparable)[0])
    return best


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
