"""Which job a free worker takes next, for engines whose workers come and go (svdflow.run.engines.ray).

Longest first (`Job.cost()`): the long jobs start early and the short ones fill the gaps at the
end, so the last worker to finish is not the one that drew a long job last. A job whose worker was
lost goes back into the queue at its place by cost and runs again on the next free worker; a job
that was on a lost worker `max_attempts` times is given up (it may be what kills them).
No Ray here: the driver's loop asks, this answers.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from svdflow.run.planning import PlannedJob

DEFAULT_MAX_ATTEMPTS = 3


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
    """What became of the job a lost worker was rendering."""

    assignment: Assignment
    requeued: bool  # False: it was on lost workers max_attempts times and is given up


class Scheduler:
    """The pending jobs, longest first, and which worker runs which job now. The driver's loop is
    its only user (one thread)."""

    def __init__(self, planned: Sequence[PlannedJob], max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self.max_attempts = max_attempts
        self._order = {p.job.id: number for number, p in enumerate(planned)}  # ties: manifest order
        self._queue: list[tuple[float, int, Assignment]] = []
        self._running: dict[str, Assignment] = {}  # worker -> its job
        for p in planned:
            self._push(Assignment(p, 1))

    def _push(self, assignment: Assignment) -> None:
        job = assignment.planned.job
        heapq.heappush(self._queue, (-job.cost(), self._order[job.id], assignment))

    def take(self, worker: str) -> Assignment | None:
        """The next job for an idle `worker`, or None when none is waiting."""
        if worker in self._running:
            raise ValueError(f"{worker} is already rendering {self._running[worker].job_id}")
        if not self._queue:
            return None
        assignment = heapq.heappop(self._queue)[2]
        self._running[worker] = assignment
        return assignment

    def running(self, worker: str) -> Assignment | None:
        return self._running.get(worker)

    def done(self, worker: str) -> Assignment:
        """`worker` answered for its job (done or failed): the job leaves the run."""
        return self._running.pop(worker)

    def lost(self, worker: str) -> Loss:
        """`worker` died or its node was lost while rendering: its job goes back to the queue, or is
        given up after `max_attempts` tries."""
        assignment = self._running.pop(worker)
        if assignment.attempt >= self.max_attempts:
            return Loss(assignment, requeued=False)
        self._push(Assignment(assignment.planned, assignment.attempt + 1))
        return Loss(assignment, requeued=True)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def finished(self) -> bool:
        return not self._queue and not self._running
