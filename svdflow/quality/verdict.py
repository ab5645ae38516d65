"""The qc verdict on one clip's scores: pure, so it runs again on recorded scores without a frame.

A failed threshold's shortfall is how far the score is on the wrong side, divided by the threshold
(by 1 where the threshold is 0), so that thresholds in different units add up when attempts or
variants are compared: a motion of 1.5 against min_motion 2 falls short by 0.25, an end SSIM of 0.4
against min_end_similarity 0.5 by 0.2.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from svdflow.quality.scores import QualityScores
from svdflow.quality.thresholds import CHECKS, QcThresholds


class ThresholdFailure(BaseModel):
    """One threshold a clip did not meet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: str = Field(description="The qc threshold's name, e.g. min_motion.")
    score: str = Field(description="The score it applies to, a path into the scores, e.g. motion.mean.")
    limit: float = Field(description="The threshold's value.")
    value: float = Field(description="The clip's score.")
    shortfall: float = Field(description="|value - limit| / |limit| (/ 1 where the limit is 0): how far off, "
                                         "comparable across thresholds.")


class Verdict(BaseModel):
    """Whether a clip's scores meet its qc thresholds, and which they do not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    passed: bool = Field(description="True when every threshold that is set is met.")
    failures: tuple[ThresholdFailure, ...] = Field(description="The thresholds not met, in the order of the "
                                                               "qc block's fields.")

    @property
    def shortfall(self) -> float:
        """The failures' shortfalls added up: 0 for a clip that passed."""
        return sum(failure.shortfall for failure in self.failures)


def score_value(scores: QualityScores, path: str) -> float:
    value = scores
    for part in path.split("."):
        value = getattr(value, part)
    return float(value)


def judge(scores: QualityScores, thresholds: QcThresholds) -> Verdict:
    """The verdict of `thresholds` on `scores`."""
    failures = []
    for name, limit in thresholds.set_thresholds().items():
        check = CHECKS[name]
        value = score_value(scores, check.score)
        if value < limit if check.side == "min" else value > limit:
            shortfall = abs(value - limit) / (abs(limit) or 1.0)
            failures.append(ThresholdFailure(threshold=name, score=check.score, limit=limit, value=value,
                                             shortfall=round(shortfall, 4)))
    return Verdict(passed=not failures, failures=tuple(failures))
