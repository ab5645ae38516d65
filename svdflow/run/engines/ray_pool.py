"""The actors of one Ray run and the calls in flight to them (svdflow.run.engines.ray drives them).

Each worker is starting, up, restarting or gone. The pool starts them, sends an up worker the calls
the driver asks for (`render` a job, `finish` a rendered one: both may be in flight on one worker),
and turns each finished call into one typed `Outcome` for the driver: a worker set up (`Ready`), a
call answered (`Answered`), a call raised (`Raised`), a worker lost mid-call (`Lost`, Ray restarts
it) or dead for good (`Gone`). Progress events come back through a Ray queue.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from svdflow.manifest.resolve import Job, RunSpec
from svdflow.run.engines.ray_worker import (
    NotSetUp,
    RayRenderWorker,
    RenderDone,
    Reply,
    WorkerEvent,
    WorkerInfo,
)
from svdflow.run.engines.scheduling import CONCURRENT_CALLS, Assignment
from svdflow.run.progress import Reporter

NAMESPACE = "svdflow"  # the run's actors are named svdflow-<run>-worker-<n> in it (`ray list actors`)
REVIVE_AFTER_S = 1.0  # a worker not reachable yet is asked again this much later


@dataclass(frozen=True)
class WorkerShape:
    count: int
    resources: dict[str, Any]  # each actor's Ray resources
    describe: str


# What the pool tells the driver, one per finished call.
@dataclass(frozen=True)
class Ready:
    worker: str
    info: WorkerInfo


@dataclass(frozen=True)
class Answered:
    worker: str
    reply: Reply


@dataclass(frozen=True)
class Raised:
    """The worker's render or finish call raised (an svdflow bug, an interrupt on the worker): the job fails."""

    worker: str
    assignment: Assignment
    reason: str


@dataclass(frozen=True)
class Lost:
    """The worker died (killed, crashed, its node lost) with a job on it; Ray is restarting it and the
    pool sets it up again. A worker lost with two jobs on it gives one for each."""

    worker: str
    assignment: Assignment
    doing: str  # rendering, encoding
    reason: str


@dataclass(frozen=True)
class Gone:
    """The worker is dead for good."""

    worker: str
    reason: str


Outcome = Ready | Answered | Raised | Lost | Gone


@dataclass(frozen=True)
class Call:
    worker: str
    method: str  # setup, render, finish
    assignment: Assignment | None = None  # render's and finish's job


class WorkerPool:
    """The run's actors and the calls in flight to them. Each worker is starting, up, restarting or
    gone; only up ones are given calls (which ones: the driver's scheduler says)."""

    def __init__(self, ray, handles: dict[str, Any], events_queue, work: tuple):
        self.ray = ray
        self.handles = handles
        self._work = work  # setup's arguments: the spec and jobs in the object store, the progress queue, the settings
        self._queue = events_queue
        self._calls: dict[Any, Call] = {}  # ObjectRef -> the call it answers
        self._up: list[str] = []  # set up and not lost, the one longest without a render call first
        self._lost: set[str] = set()  # lost, with calls still in flight: set up again once they are back
        self._gone: set[str] = set()
        self.last_loss = ""  # why the last worker went for good
        self._revive_at: dict[str, float] = {}  # worker -> when to ask it again whether it is back
        for worker in handles:
            self._revive(worker)

    @classmethod
    def start(cls, ray, spec: RunSpec, jobs: list[Job], shape: WorkerShape, env: dict[str, str],
              reporter: Reporter) -> WorkerPool:
        """Start the workers; each sets itself up (its pipeline loaded) at once. `jobs`: the run's jobs
        (the pipeline sizes its compile decision on them), before or after planning."""
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        run = uuid.uuid4().hex[:8]
        # On the driver's node, which lives as long as the run: a lost node must not take the progress
        # with it. num_cpus=0: it never waits for a CPU the workers hold.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        events = Queue(actor_options={"num_cpus": 0, "namespace": NAMESPACE, "name": f"svdflow-{run}-events",
                                      "scheduling_strategy": here})
        # Put once, read by every actor and again after each restart (the pool keeps them).
        work = (ray.put(spec), ray.put(list(jobs)), events, env)
        actor = ray.remote(RayRenderWorker)
        handles = {}
        for number in range(shape.count):
            worker = f"worker-{number}"
            # max_restarts=-1: a killed worker comes back (on another node if its node is gone); the
            # driver resends its job, so Ray itself retries no call (max_task_retries=0).
            handles[worker] = actor.options(
                **shape.resources, max_restarts=-1, max_task_retries=0, max_concurrency=CONCURRENT_CALLS,
                name=f"svdflow-{run}-{worker}", namespace=NAMESPACE,
            ).remote(worker)
            reporter.worker_status(worker, "starting", {})
        return cls(ray, handles, events, work)

    def _call(self, worker: str, method: str, *args, assignment: Assignment | None = None) -> None:
        ref = getattr(self.handles[worker], method).remote(*args)
        self._calls[ref] = Call(worker, method, assignment)

    @property
    def alive(self) -> int:
        return len(self.handles) - len(self._gone)

    def up(self) -> list[str]:
        """The workers set up and not lost, the one longest without a render call first."""
        return list(self._up)

    def render(self, worker: str, assignment: Assignment) -> None:
        self._call(worker, "render", assignment, assignment=assignment)

    def finish(self, worker: str, assignment: Assignment) -> None:
        """Have `worker` write the files of the job it answered RenderDone for."""
        self._call(worker, "finish", assignment, assignment=assignment)

    def _back_of_line(self, worker: str) -> None:
        """`worker` answered a setup or render call: last in the line for the next job."""
        if worker in self._up:
            self._up.remove(worker)
        self._up.append(worker)

    def _revive(self, worker: str) -> None:
        """Set a worker up (new, or restarted by Ray after it was lost); once it answers it is up."""
        self._call(worker, "setup", *self._work)

    def wait(self, timeout: float) -> list[Outcome]:
        now = time.monotonic()
        for worker, when in list(self._revive_at.items()):
            if when <= now:
                del self._revive_at[worker]
                self._revive(worker)
        if not self._calls:
            time.sleep(timeout)
            return []
        # Back as soon as one call is done (a free worker waits for its next job), with any others done too.
        ready, rest = self.ray.wait(list(self._calls), num_returns=1, timeout=timeout)
        if ready and rest:
            ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return [outcome for ref in ready if (outcome := self._outcome(ref)) is not None]

    def _outcome(self, ref) -> Outcome | None:
        call = self._calls.pop(ref)
        outcome = self._result(ref, call)
        worker = call.worker
        if worker in self._lost and not any(other.worker == worker for other in self._calls.values()):
            self._lost.discard(worker)  # every call it had in flight is back: set it up again
            self._revive(worker)
        return outcome

    def _result(self, ref, call: Call) -> Outcome | None:
        from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

        worker = call.worker
        try:
            value = self.ray.get(ref)
        except RayTaskError as exc:  # the call raised past the worker's own handling
            if call.assignment is not None:
                if call.method == "render" and worker not in self._lost:
                    self._back_of_line(worker)
                return Raised(worker, call.assignment, _reason(exc))
            self._gone.add(worker)  # cannot be set up (svdflow missing or different on its node, ...)
            self.ray.kill(self.handles[worker], no_restart=True)
            self.last_loss = _reason(exc)
            return Gone(worker, self.last_loss)
        except RayActorError as exc:
            if call.assignment is not None:
                return self._lose(call, _reason(exc))
            if isinstance(exc, ActorDiedError):  # killed for good: Ray will not restart it
                self._gone.add(worker)
                self.last_loss = _reason(exc)
                return Gone(worker, self.last_loss)
            self._revive_at[worker] = time.monotonic() + REVIVE_AFTER_S  # still restarting: ask again later
            return None
        if call.method == "setup":
            self._back_of_line(worker)
            return Ready(worker, value)
        if isinstance(value, NotSetUp):  # sent as its process was lost: a restarted one answered
            return self._lose(call, "its Ray worker was restarted before the call reached it")
        if worker in self._lost and isinstance(value, RenderDone):  # the frames were in the lost process
            return self._lose(call, "its Ray worker was lost before writing its files")
        if call.method == "render" and worker not in self._lost:
            self._back_of_line(worker)
        return Answered(worker, value)

    def _lose(self, call: Call, reason: str) -> Lost:
        """`call`'s job was on a worker that was lost: the worker takes nothing until every call it had
        in flight is back, then it is set up again (`_outcome`)."""
        self._lost.add(call.worker)
        if call.worker in self._up:
            self._up.remove(call.worker)
        return Lost(call.worker, call.assignment, "rendering" if call.method == "render" else "encoding", reason)

    @property
    def writing(self) -> int:
        """Finish calls in flight: jobs whose files workers are writing."""
        return sum(call.method == "finish" for call in self._calls.values())

    def finishing(self, timeout: float) -> list[Outcome]:
        """Wait up to `timeout` s for the finish calls in flight (files being written), and their outcomes."""
        refs = [ref for ref, call in self._calls.items() if call.method == "finish"]
        if not refs:
            return []
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
        return [outcome for ref in ready if (outcome := self._outcome(ref)) is not None]

    def events(self) -> list[WorkerEvent]:
        """The workers' progress since the last call."""
        size = self._queue.size()
        return self._queue.get_nowait_batch(size) if size else []

    def close(self) -> None:
        """Kill every actor of the run (outstanding work is abandoned) and the progress queue."""
        for handle in self.handles.values():
            self.ray.kill(handle, no_restart=True)
        self._queue.shutdown(force=True)
        self._calls.clear()


def _reason(exc: BaseException) -> str:
    """What went wrong, in a line: the cause a call raised, or the first sentence of Ray's message
    (its full text runs to a page of advice)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {first}".rstrip(": ")
