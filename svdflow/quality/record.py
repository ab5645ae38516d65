"""What a job's entry records of its quality (`IndexEntry.quality`, in its sidecar, its line of
index.jsonl and the provenance inside its files): the scores of the frames its files hold, the qc
thresholds they were judged against, the verdict, and every attempt when the job re-rolled.

The kept attempt is the one whose frames the files hold (svdflow.quality.rerolls says which);
`scores` and `failures` are its. A job without a qc block is still scored: `thresholds` and `passed`
are then null. Re-judging recorded scores against new thresholds (svdflow.quality.verdict.judge)
needs nothing else from the entry.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from svdflow.quality.rerolls import Attempt
from svdflow.quality.scores import QualityScores
from svdflow.quality.thresholds import QcThresholds
from svdflow.quality.verdict import ThresholdFailure, Verdict, judge


class QualityRecord(BaseModel):
    """A job's quality scores and qc verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scores: QualityScores = Field(description="The scores of the frames the job's files hold (its kept attempt).")
    thresholds: QcThresholds | None = Field(description="The qc block the job was judged against, as resolved from "
                                                        "defaults and its item; null when it had none (scored only).")
    passed: bool | None = Field(description="Whether the kept attempt met every threshold; null without a qc block.")
    failures: tuple[ThresholdFailure, ...] = Field(description="The thresholds the kept attempt did not meet, in the "
                                                               "qc block's order; empty when it passed.")
    kept: int = Field(ge=0, description="The attempt the files hold: 0 for the job's own seed, n for its n-th re-roll "
                                        "(the entry's seed is that attempt's).")
    attempts: tuple[Attempt, ...] = Field(default=(), description=(
        "Every attempt in the order rendered, each with its seed, scores and verdict, when the job re-rolled; "
        "empty when it rendered once (then `scores` are its only attempt's)."))

    @classmethod
    def of_attempts(cls, attempts: Sequence[Attempt], kept: int, thresholds: QcThresholds | None) -> QualityRecord:
        """The record of a job whose files hold attempt `kept` (an index into `attempts`, every attempt of
        the job in order from 0). One attempt records none: its scores are the record's."""
        chosen = attempts[kept]
        return cls(scores=chosen.scores, thresholds=thresholds, passed=chosen.verdict.passed if thresholds else None,
                   failures=chosen.verdict.failures if thresholds else (), kept=chosen.attempt,
                   attempts=tuple(attempts) if len(attempts) > 1 else ())

    @classmethod
    def unjudged(cls, scores: QualityScores) -> QualityRecord:
        """A job without a qc block: scored, not judged."""
        return cls(scores=scores, thresholds=None, passed=None, failures=(), kept=0)

    def every_attempt(self, seed: int) -> tuple[Attempt, ...]:
        """Every attempt, the one of a job that rendered once included (`seed`: its entry's)."""
        if self.attempts:
            return self.attempts
        verdict = Verdict(passed=not self.failures, failures=self.failures)
        return (Attempt(attempt=self.kept, seed=seed, scores=self.scores, verdict=verdict),)

    def rejudged(self, thresholds: QcThresholds | None, seed: int) -> QualityRecord:
        """The same attempts judged against `thresholds` (the kept one stays kept: its frames are the files')."""
        if thresholds is None:  # scored only; the attempts keep the verdicts they were chosen by
            return self.model_copy(update={"thresholds": None, "passed": None, "failures": ()})
        attempts = tuple(a.model_copy(update={"verdict": judge(a.scores, thresholds)})
                         for a in self.every_attempt(seed))
        kept = next(i for i, a in enumerate(attempts) if a.attempt == self.kept)
        return QualityRecord.of_attempts(attempts, kept, thresholds)
