"""Re-rolls: the seeds a failing job tries next, and which attempt is kept.

Attempt 0 is the job's own seed; attempt n (n >= 1) renders with the first 8 bytes of
sha256("svdflow-reroll-seed:{seed}:{n}"), big-endian, masked to 63 bits (the manifest's seed range).
The sequence depends on the seed alone, as every svdflow seed does: a rerun, another process or
another machine tries the same seeds in the same order, and a sweep's variants, which share a seed,
re-roll through the same noise.

The kept attempt is the first that passes. When none does, it is the one with the fewest failed
thresholds, then the smallest summed shortfall (svdflow.quality.verdict), then the earliest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from svdflow.quality.scores import QualityScores
from svdflow.quality.verdict import Verdict

# The manifest's MAX_SEED: not imported, because the manifest's schema imports this package.
SEED_MASK = 2**63 - 1


def reroll_seed(seed: int, attempt: int) -> int:
    """The seed of re-roll `attempt` of a job seeded `seed`: the job's own for attempt 0."""
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    if attempt == 0:
        return seed
    digest = hashlib.sha256(f"svdflow-reroll-seed:{seed}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & SEED_MASK


def reroll_seeds(seed: int, rerolls: int) -> list[int]:
    """Every seed a job with `rerolls` re-rolls may try, in order."""
    return [reroll_seed(seed, attempt) for attempt in range(rerolls + 1)]


class Attempt(BaseModel):
    """One render of a job under qc: its seed, scores and verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempt: int = Field(ge=0, description="0 for the job's own seed, n for its n-th re-roll.")
    seed: int = Field(description="The seed this attempt rendered with: reroll_seed(job seed, attempt).")
    scores: QualityScores = Field(description="The attempt's quality scores.")
    verdict: Verdict = Field(description="The attempt's scores against the job's qc thresholds.")


def attempt_rank(verdict: Verdict, attempt: int) -> tuple[int, float, int]:
    """The module's rule as a sort key, lowest best: fewest failed thresholds (a pass has none), then the
    smallest summed shortfall, then the earliest attempt."""
    return len(verdict.failures), verdict.shortfall, attempt


def kept_attempt(verdicts: Sequence[Verdict]) -> int:
    """The index of the attempt to keep: the first that passed, else the best by the module's rule."""
    if not verdicts:
        raise ValueError("no attempts to choose from")
    return min(range(len(verdicts)), key=lambda i: attempt_rank(verdicts[i], i))
