"""How fast a run goes and how long it has left: throughput in videos per hour, and the time remaining
estimated from the jobs' costs (frames x steps x pixels, `Job.cost`), not from how many jobs are left.

A campaign mixes jobs of very different sizes (a 4-step 512x288 draft and a 50-step 1024x576 final
differ 40-fold): counting jobs would promise the end too early while the long ones wait, or too late.
The meter measures the pace as the cost of the jobs rendered so far over the time they took, and
divides the cost still waiting by it. Jobs found up to date leave the waiting cost without adding
to the rendered one (they took no render time); re-encoded and failed jobs do too (their render
cost was not paid). The time runs from the meter's start, which is the run's: the model load and
the first compile are part of what the remaining jobs are measured against, so early estimates are
cautious and settle as the run goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Pace:
    """A run's progress at one moment: what the live display shows and every --json `job_finished`
    event carries."""

    finished: int  # jobs finished, whatever their status
    jobs: int  # jobs in the run
    videos: int  # jobs that wrote videos this run (rendered or re-encoded)
    elapsed_s: float  # since the run started
    videos_per_hour: float | None  # None until a video is written
    eta_s: float | None  # seconds left at the cost-weighted pace; None until a job is rendered

    def to_json(self) -> dict[str, Any]:
        rounded = lambda v: None if v is None else round(v, 1)  # noqa: E731
        return {"finished": self.finished, "jobs": self.jobs, "videos": self.videos,
                "elapsed_s": round(self.elapsed_s, 1), "videos_per_hour": rounded(self.videos_per_hour),
                "eta_s": rounded(self.eta_s)}


class PaceMeter:
    """Counts the run's finished jobs by cost. Thread-safe: the writer thread and the render loop
    both finish jobs."""

    def __init__(self, costs: Mapping[str, float], clock: Callable[[], float] = time.monotonic):
        """`costs`: every job of the run (id -> `Job.cost()`); `clock`: seconds, monotonic."""
        self._costs = dict(costs)
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._waiting = float(sum(self._costs.values()))  # cost of the jobs not finished yet
        self._rendered = 0.0  # cost of the jobs rendered so far
        self._finished: set[str] = set()
        self._videos = 0

    def finished(self, job_id: str, status: str) -> Pace:
        """`job_id` ended with `status` (done, re-encoded, failed, up to date); the pace now. A job
        finished twice (a lost Ray worker's job answered again) counts once."""
        with self._lock:
            if job_id not in self._finished:
                self._finished.add(job_id)
                cost = self._costs.get(job_id, 0.0)
                self._waiting = max(0.0, self._waiting - cost)
                if status == "done":
                    self._rendered += cost
                if status in ("done", "re-encoded"):
                    self._videos += 1
            return self._pace()

    def pace(self) -> Pace:
        with self._lock:
            return self._pace()

    def _pace(self) -> Pace:
        elapsed = max(self._clock() - self._started, 0.0)
        per_hour = self._videos * SECONDS_PER_HOUR / elapsed if self._videos and elapsed > 0 else None
        if not self._waiting:
            eta: float | None = 0.0
        elif self._rendered:
            eta = self._waiting * elapsed / self._rendered
        else:
            eta = None
        return Pace(len(self._finished), len(self._costs), self._videos, elapsed, per_hour, eta)


def duration_text(seconds: float | None) -> str:
    """3725 -> "1:02:05"; a day or more -> "2d 03:04"; None -> "?"."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}:{minutes:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}"


def pace_text(pace: Pace) -> str:
    """"12.5 videos/h, 1:02:05 left" (the live display's and the plain lines' words)."""
    rate = "? videos/h" if pace.videos_per_hour is None else f"{pace.videos_per_hour:,.1f} videos/h"
    return f"{rate}, {duration_text(pace.eta_s)} left"
