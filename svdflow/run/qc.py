"""qc on the writer side: each rendered attempt of a job is scored from its frames in memory, judged
against the job's thresholds, and either kept (its files are written) or answered with the job's next
re-roll (`svdflow.quality.rerolls`: seeds, and which attempt is kept).

Memory stays bounded: of a job whose re-rolls are under way only the best attempt so far is held
(its frames, until a better one comes or the job is kept); the others are dropped once scored. The
best so far is chosen by `kept_attempt`'s rule, one attempt at a time, so the one kept at the end is
the one `kept_attempt` picks over all of them. A job re-rolling after a re-judge (its thresholds
changed, `svdflow.run.planning`) starts with its recorded files as the best so far: when no new
attempt beats them, they stay, recorded with the new verdicts.

Every engine uses one `AttemptKeeper`: the local writer thread (a re-roll goes back to the render
loop's queue), a Ray worker and each torchrun rank (the worker renders its re-rolls itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from svdflow.manifest.resolve import Job
from svdflow.quality.record import QualityRecord
from svdflow.quality.rerolls import Attempt, attempt_rank, reroll_seed
from svdflow.quality.scores import QualityScores
from svdflow.quality.thresholds import QcThresholds
from svdflow.quality.verdict import judge
from svdflow.run.messages import Rejudged, Rendered, Ticket
from svdflow.run.planning import Prior


@dataclass(frozen=True)
class Keep:
    """Write these frames' files; `quality` is the entry's (None: they could not be scored)."""

    rendered: Rendered
    quality: QualityRecord | None


@dataclass
class _Open:
    """A job whose re-rolls are under way."""

    attempts: list[Attempt]  # every attempt so far, in order from 0
    best: int  # the index of the best so far in `attempts`
    frames: Rendered | None  # the best so far's frames; None: the recorded files (a re-roll after a re-judge)
    prior: Prior | None  # the record a re-roll after a re-judge goes on from

    def outcome(self, thresholds: QcThresholds) -> Keep | Rejudged:
        quality = QualityRecord.of_attempts(self.attempts, self.best, thresholds)
        if self.frames is None:  # the recorded files are still the best
            return Rejudged(self.prior.rejudged_entry(quality))
        return Keep(self.frames, quality)


def attempt_ticket(ticket: Ticket, attempt: int) -> Ticket:
    """The ticket of re-roll `attempt` of the job: the requested job with that attempt's seed."""
    requested = ticket.planned.job
    params = requested.params.model_copy(update={"seed": reroll_seed(requested.seed, attempt)})
    return replace(ticket, job=replace(requested, params=params), attempt=attempt)


def first_ticket(ticket: Ticket) -> Ticket:
    """A job's first ticket: attempt 0, or a re-roll after a re-judge, which goes on from the record."""
    prior = ticket.planned.prior
    if prior is None:
        return ticket
    return attempt_ticket(replace(ticket, prior=prior), prior.next_attempt)


def scores_of(message: Rendered) -> QualityScores:
    """Scores of a rendered attempt against its input as conditioned; raises what the scoring raises."""
    ticket = message.ticket
    if ticket.image is None:
        raise ValueError("the input image as conditioned did not come with the frames")
    image = np.asarray(ticket.image.convert("RGB"), dtype=np.uint8)
    # Imported when a clip is first scored: scikit-image and SciPy take seconds to import, which a
    # rerun of a finished campaign (and every Ray actor and torchrun rank before its first job) skips.
    from svdflow.quality.score import score_clip

    return score_clip(message.frames, image, fps=ticket.job.params.fps)


def _rank(attempt: Attempt) -> tuple[int, float, int]:
    return attempt_rank(attempt.verdict, attempt.attempt)


class AttemptKeeper:
    """The attempts of the jobs under qc, owned by one writer (or one worker)."""

    def __init__(self, warn: Callable[[str], None]):
        """`warn`: where a job whose frames could not be scored is said (its files are written unscored)."""
        self.warn = warn
        self._open: dict[str, _Open] = {}

    def take(self, message: Rendered) -> Keep | Ticket | Rejudged:
        """What to do with a rendered attempt: keep it (or, after a re-judge, the recorded files), or
        render the ticket returned next."""
        ticket = message.ticket
        job = ticket.planned.job
        try:
            scores = scores_of(message)
        except Exception as exc:  # noqa: BLE001 - a scoring failure never loses the video
            self.warn(f"job '{job.id}': attempt {ticket.attempt} (seed {ticket.job.seed}) was not scored: "
                      f"{type(exc).__name__}: {exc}; its files are written without scores")
            return self._unscored(message)
        if job.qc is None:
            return Keep(message, QualityRecord.unjudged(scores))
        attempt = Attempt(attempt=ticket.attempt, seed=ticket.job.seed, scores=scores,
                          verdict=judge(scores, job.qc))
        state = self._open.pop(job.id, None)
        if state is None:
            state = self._opened(ticket)
        state.attempts.append(attempt)
        if state.best < 0 or _rank(attempt) < _rank(state.attempts[state.best]):
            state.best, state.frames = len(state.attempts) - 1, message
        best = state.attempts[state.best]
        if not best.verdict.passed and ticket.attempt < job.qc.rerolls:
            self._open[job.id] = state
            return attempt_ticket(ticket, ticket.attempt + 1)
        return state.outcome(job.qc)

    def _opened(self, ticket: Ticket) -> _Open:
        prior = ticket.prior
        if prior is None:
            return _Open([], -1, None, None)
        attempts = list(prior.quality.every_attempt(prior.entry.seed))
        kept = next(i for i, a in enumerate(attempts) if a.attempt == prior.quality.kept)
        return _Open(attempts, kept, None, prior)

    def _unscored(self, message: Rendered) -> Keep | Rejudged:
        """An attempt that could not be scored ends its job's re-rolls: the best scored attempt so far (or
        the recorded files a re-roll after a re-judge started from) is kept when there is one, else
        this one, unscored."""
        job = message.ticket.planned.job
        state = self._open.pop(job.id, None) or self._opened(message.ticket)
        if state.best < 0:
            return Keep(message, None)
        return state.outcome(job.qc)

    def abandon(self, job: Job, error: str) -> Keep | Rejudged | None:
        """A re-roll that failed to render: the best attempt so far is kept (None: the job had none)."""
        state = self._open.pop(job.id, None)
        if state is None:
            return None
        self.warn(f"job '{job.id}': re-roll {len(state.attempts)} failed ({error}); attempt "
                  f"{state.attempts[state.best].attempt}, the best so far, is kept")
        return state.outcome(job.qc)
