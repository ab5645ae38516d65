"""What a job's entry records of its quality (`IndexEntry.quality`, in its sidecar, its line of
index.jsonl and the provenance inside its files): the scores of the frames its files hold, the qc
thresholds they were judged against, the verdict, and every attempt when the job re-rolled.

The kept attempt is the one whose frames the files hold (svdflow.quality.rerolls says which);
`scores` and `failures` are its. A job without a qc block is still scored: `thresholds` and `passed`
are then null. Re-judging recorded scores against new thresholds (svdflow.quality.verdict.judge)
needs nothing else from the entry.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from svdflow.quality.rerolls import Attempt
from svdflow.quality.scores import QualityScores
from svdflow.quality.thresholds import QcThresholds
from svdflow.quality.verdict import ThresholdFailure


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
