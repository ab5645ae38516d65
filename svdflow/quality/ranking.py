"""The ranking of a sweep's variants (the jobs one item expands to), best first.

1. Variants that passed their qc thresholds before those that did not; among those that did not, fewer
   failed thresholds first, then the smaller summed shortfall (as the kept re-roll attempt is chosen).
   A variant without thresholds counts as passed.
2. Then a rank sum over four scores, each variant's rank on a score being how many variants are
   strictly better on it: more motion (motion.mean), less flicker (flicker.residual), less drift
   (fidelity.last_ssim) and more sharpness (exposure.min_sharpness). Ranks rather than values, so no
   score's units outweigh another's; motion pulls against drift and flicker, so the most moving
   variant wins only when it holds together.
3. Then the job id, so that ties always break the same way.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from svdflow.quality.scores import QualityScores
from svdflow.quality.verdict import Verdict, score_value

# (score, True where higher is better)
RANKED_SCORES = (
    ("motion.mean", True),
    ("flicker.residual", False),
    ("fidelity.last_ssim", True),
    ("exposure.min_sharpness", True),
)


class Variant(BaseModel):
    """One job of a sweep, as the ranking sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="The job's id.")
    scores: QualityScores = Field(description="The job's kept scores.")
    verdict: Verdict | None = Field(None, description="Its qc verdict; None when it has no thresholds.")


def rank_sums(variants: Sequence[Variant]) -> list[int]:
    """Each variant's summed rank over RANKED_SCORES (0 is best on every score)."""
    sums = [0] * len(variants)
    for path, higher_is_better in RANKED_SCORES:
        values = [score_value(variant.scores, path) for variant in variants]
        ordered = sorted(values)
        for index, value in enumerate(values):
            better = len(ordered) - bisect_right(ordered, value) if higher_is_better else bisect_left(ordered, value)
            sums[index] += better
    return sums


def rank_variants(variants: Sequence[Variant]) -> list[str]:
    """The variants' ids, best first, by the module's rule."""
    sums = rank_sums(variants)

    def key(index: int) -> tuple:
        verdict = variants[index].verdict
        failed, count, shortfall = (False, 0, 0.0) if verdict is None else (
            not verdict.passed, len(verdict.failures), verdict.shortfall)
        return failed, count, shortfall, sums[index], variants[index].id

    return [variants[index].id for index in sorted(range(len(variants)), key=key)]
