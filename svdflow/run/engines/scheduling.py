"""Which job a free worker takes next, for engines whose workers come and go (svdflow.run.engines.ray).

Longest first (`Job.cost()`): the long jobs start early and the short ones fill the gaps at the
end, so the last worker to finish is not the one that drew a long job last. A job whose worker was
lost goes back into the queue at its place by cost and runs again on the next free worker; a job
that was on a lost worker `max_attempts` times is given up (it may be what kills them).

A worker renders one job at a time, and encodes a rendered job while it renders the next (as a
local run's writer thread does): a job is `take`n to render, `rendered` when its frames are done
and its files are being written, and `done` when the worker answered for it. A worker with more
than `MAX_ENCODING` jobs still encoding takes no more until one is done, so no worker piles up frames
(and a worker needs MAX_ENCODING + 1 calls at once: `CONCURRENT_CALLS`).
No Ray here: the driver's loop asks, this answers.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from svdflow.run.planning import PlannedJob

DEFAULT_MAX_ATTEMPTS = 3
MAX_ENCODING = 1  # jobs a worker may be encoding while it renders another
CONCURRENT_CALLS = MAX_ENCODING + 1  # one render, and the encodes of the jobs before it


@dataclass(frozen=True)
class Assignment:
    """One attempt at a job, on one worker: what the driver sends a worker to render."""

    planned: PlannedJob
    attempt: int  # 1 for the first try, 2 after its first worker was lost, ...

    @property
    def job_id(self) -> str:
        return self.planned.job.id


@dataclass(frozen=True)
class Loss:
    """What became of a job whose worker was lost."""

    assignment: Assignment
    requeued: bool  # False: it was on lost workers max_attempts times and is given up


class Scheduler:
    """The pending jobs, longest first, and which worker renders or encodes which job now. The
    driver's loop is its only user (one thread)."""

    def __init__(self, planned: Sequence[PlannedJob], max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self.max_attempts = max_attempts
        self._order = {p.job.id: number for number, p in enumerate(planned)}  # ties: manifest order
        self._queue: list[tuple[float, int, Assignment]] = []
        self._rendering: dict[str, Assignment] = {}  # worker -> the job it renders
        self._encoding: dict[str, list[Assignment]] = {}  # worker -> the rendered jobs it is writing
        for p in planned:
            self._push(Assignment(p, 1))

    def _push(self, assignment: Assignment) -> None:
        job = assignment.planned.job
        heapq.heappush(self._queue, (-job.cost(), self._order[job.id], assignment))

    def can_take(self, worker: str) -> bool:
        """Whether `worker` is free to render: not rendering, and not too many jobs behind on encoding."""
        return worker not in self._rendering and len(self._encoding.get(worker, ())) <= MAX_ENCODING

    def take(self, worker: str) -> Assignment | None:
        """The next job for a free `worker`, or None when none is waiting."""
        if not self.can_take(worker):
            raise ValueError(f"{worker} is not free to render a job")
        if not self._queue:
            return None
        assignment = heapq.heappop(self._queue)[2]
        self._rendering[worker] = assignment
        return assignment

    def rendered(self, worker: str) -> Assignment:
        """`worker` has the frames of the job it rendered and is writing its files: it is free to render."""
        assignment = self._rendering.pop(worker)
        self._encoding.setdefault(worker, []).append(assignment)
        return assignment

    def holds(self, worker: str, job_id: str, attempt: int) -> bool:
        """Whether this attempt at the job is `worker`'s now (news of a lost or recorded one is late)."""
        return any((a.job_id, a.attempt) == (job_id, attempt) for a in self._jobs_of(worker))

    def done(self, worker: str, job_id: str) -> Assignment:
        """`worker` answered for the job (done or failed): the job leaves the run."""
        return self._remove(worker, job_id)

    def lost(self, worker: str, job_id: str) -> Loss:
        """`worker` died or its node was lost with the job on it: the job goes back to the queue, or is
        given up after `max_attempts` tries."""
        assignment = self._remove(worker, job_id)
        if assignment.attempt >= self.max_attempts:
            return Loss(assignment, requeued=False)
        self._push(Assignment(assignment.planned, assignment.attempt + 1))
        return Loss(assignment, requeued=True)

    def _jobs_of(self, worker: str) -> list[Assignment]:
        rendering = self._rendering.get(worker)
        return [*self._encoding.get(worker, ()), *([rendering] if rendering else [])]

    def _remove(self, worker: str, job_id: str) -> Assignment:
        rendering = self._rendering.get(worker)
        if rendering is not None and rendering.job_id == job_id:
            return self._rendering.pop(worker)
        encoding = self._encoding.get(worker, [])
        for number, assignment in enumerate(encoding):
            if assignment.job_id == job_id:
                del encoding[number]
                if not encoding:
                    del self._encoding[worker]
                return assignment
        raise ValueError(f"{worker} has no job {job_id}")

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        """Jobs on workers, rendering or encoding."""
        return len(self._rendering) + sum(len(jobs) for jobs in self._encoding.values())

    @property
    def finished(self) -> bool:
        return not self._queue and not self.busy
