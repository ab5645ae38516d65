"""One worker of a Ray run: a process with one pipeline, loaded once with the manifest's hardware,
rendering the jobs the driver hands it one at a time.

Each job goes the way it goes locally: its input fetched (`fetch_input`), rendered with
`render_job`, its files written to the output store by `finish_rendered`. Two calls: `render`
answers `RenderDone` once the frames are in memory, and `finish` writes the files while the driver
hands the worker its next job to render, as a local run's writer thread encodes one job while the
next denoises. The worker never touches index.json: `finish` answers with the job's `IndexEntry`
and the driver records it. Progress (stages, denoising steps, the session's notes) goes to the
driver as typed events through `events`.

Plain Python: the driver makes it a Ray actor (svdflow.run.engines.ray), and tests can drive it
without Ray.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from svdflow.errors import JobError, OutputStoreError, SvdflowError
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import IndexEntry, Timings
from svdflow.pipeline.process_state import ProcessChanges
from svdflow.pipeline.session import PipelineSession, render_job
from svdflow.run.engines.scheduling import Assignment
from svdflow.run.entries import EntryContext, finish_rendered
from svdflow.run.messages import Rejudged, Rendered, Ticket
from svdflow.run.qc import AttemptKeeper
from svdflow.run.tickets import fetch_failed, fetch_input, make_ticket, rekeyed, render_failed

STEP_NEWS_EVERY_S = 0.25  # the most often a worker sends the driver its denoising step


@dataclass(frozen=True)
class WorkerInfo:
    """Where a worker runs: its answer to `ready()`."""

    worker: str
    pid: int
    host: str
    node: str | None = None  # the Ray node id, on a cluster


@dataclass(frozen=True)
class StageEvent:
    worker: str
    job_id: str
    attempt: int
    stage: str  # fetch, load model, segment k of n, denoise, decode, encode


@dataclass(frozen=True)
class StepEvent:
    worker: str
    job_id: str
    attempt: int
    step: int
    steps: int


@dataclass(frozen=True)
class NoteEvent:
    worker: str
    text: str  # what the session chose or retried (hardware picked, out-of-memory retries)


WorkerEvent = StageEvent | StepEvent | NoteEvent


@dataclass(frozen=True)
class JobAnswer:
    """A job's outcome, done or failed, with its entry; its files are already in the output store."""

    worker: str
    attempt: int
    entry: IndexEntry
    rejudged: bool = False  # re-rolls after a re-judge kept the recorded files: nothing was written


@dataclass(frozen=True)
class RenderDone:
    """The job's frames are rendered and held by the worker: `finish` writes its files."""

    worker: str
    attempt: int
    job_id: str


@dataclass(frozen=True)
class WorkerBroken:
    """The worker cannot render anything (the model does not load, the device is unusable) or write
    anything (the output store failed): the run ends with this error, as a local run would."""

    worker: str
    error: SvdflowError


@dataclass(frozen=True)
class NotSetUp:
    """A render or finish call reached a worker Ray restarted (its process was lost) before the driver
    set it up again: the job goes back to the queue."""

    worker: str


Reply = JobAnswer | RenderDone | WorkerBroken | NotSetUp


class EventSink(Protocol):
    """Where a worker's events go (a ray.util.queue.Queue on a cluster)."""

    def put_nowait(self, item: WorkerEvent) -> None: ...


class RenderWorker:
    """One pipeline session and the jobs it renders. `jobs` are the run's pending jobs: the session
    sizes its compile decision on them, whichever of them this worker gets. `env`: the driver's
    SVDFLOW_* settings, set in this process before anything reads them (`close` puts back what was)."""

    def __init__(self, name: str, spec: RunSpec, jobs: Sequence[Job], events: EventSink,
                 env: Mapping[str, str] | None = None):
        self.name, self.spec, self.events = name, spec, events
        self._changes = ProcessChanges()
        for variable, value in (env or {}).items():
            self._changes.setenv(variable, value)
        self.context = EntryContext.of(spec)  # this machine's versions go into the entries it renders
        self.session = PipelineSession(spec, jobs, self._note)
        # Rendered jobs whose files are not written yet, by (job, attempt). `render` adds, `finish`
        # takes; on Ray they run in two threads, and a dict's one-key set and pop hold the GIL.
        self._rendered: dict[tuple[str, int], Rendered] = {}
        # A job's re-rolls are rendered by `finish`, in the worker's own loop: the entry comes out as a
        # local run's (svdflow.run.qc decides alike), and the driver never holds frames.
        self.keeper = AttemptKeeper(lambda text: self._note(f"warning: {text}"))
        # One render at a time on the session: `finish` renders a job's re-rolls in the thread Ray gave it,
        # while `render` may already be rendering the next job in the other.
        self._rendering = threading.Lock()
        self._step_sent = 0.0  # when the last step's news went (time.monotonic)
        self._broken: SvdflowError | None = None  # why `prepare` could not build the pipeline

    def ready(self) -> WorkerInfo:
        return WorkerInfo(self.name, os.getpid(), socket.gethostname())

    def prepare(self) -> None:
        """Build the pipeline now, before any job comes (on Ray: while the driver plans). A model that
        does not load, or a device that is unusable, is said by the first job's answer (`WorkerBroken`),
        as when the first job loads it."""
        try:
            self.session.load()
        except SvdflowError as exc:
            self._broken = exc

    def render(self, assignment: Assignment) -> Reply:
        """Fetch and render one job: `RenderDone` (then `finish` it), its entry if it failed, or
        `WorkerBroken`."""
        if self._broken is not None:
            return WorkerBroken(self.name, self._broken)
        planned = assignment.planned
        job = planned.job
        self._emit(StageEvent(self.name, job.id, assignment.attempt, "fetch"))
        try:
            loaded, fetch_s = fetch_input(job)
        except JobError as exc:
            return self._answer(assignment, self.context.failed(fetch_failed(job, exc, self.session)))
        ticket = make_ticket(rekeyed(planned, loaded.sha256, self.spec), loaded, Timings(fetch_s=fetch_s))
        stage = "denoise" if self.session.loaded else "load model"
        self._emit(StageEvent(self.name, job.id, assignment.attempt, stage))
        if ticket.attempt:
            self._emit(StageEvent(self.name, job.id, assignment.attempt,
                                  f"re-roll {ticket.attempt} (seed {ticket.job.seed})"))
        try:
            result = self._render(assignment, ticket)
        except JobError as exc:
            return self._answer(assignment, self.context.failed(render_failed(ticket, exc, self.session)))
        except SvdflowError as exc:  # the model or the device, not this job
            return WorkerBroken(self.name, exc)
        except Exception as exc:  # a pipeline error fails this job only, as in a local run
            return self._answer(assignment, self.context.failed(render_failed(ticket, exc, self.session)))
        self._rendered[job.id, assignment.attempt] = result
        return RenderDone(self.name, assignment.attempt, job.id)

    def _render(self, assignment: Assignment, ticket: Ticket) -> Rendered:
        job = ticket.job
        with self._rendering:
            result = render_job(self.session, job, ticket.image,
                                lambda done, total: self._step(assignment, done, total),
                                lambda number, count: self._emit(StageEvent(self.name, job.id, assignment.attempt,
                                                                            f"segment {number} of {count}")))
        return Rendered(ticket, result.frames, result.hardware, self.session.resolved_revision, result.render_s,
                        result.decode_s, result.segments)

    def finish(self, assignment: Assignment) -> JobAnswer | WorkerBroken:
        """Score a job `render` answered `RenderDone` for; render its re-rolls while it fails its qc
        thresholds and has some left; write the kept attempt's files; its entry."""
        rendered = self._rendered.pop((assignment.job_id, assignment.attempt))
        try:
            while isinstance(outcome := self.keeper.take(rendered), Ticket):
                self._emit(StageEvent(self.name, assignment.job_id, assignment.attempt,
                                      f"re-roll {outcome.attempt} (seed {outcome.job.seed})"))
                try:
                    rendered = self._render(assignment, outcome)
                except SvdflowError as exc:
                    if not isinstance(exc, JobError):  # the model or the device, not this job
                        return WorkerBroken(self.name, exc)
                    outcome = self.keeper.abandon(outcome.job, str(exc))
                    break
                except Exception as exc:  # noqa: BLE001 - a pipeline error ends the re-rolls, as in a local run
                    outcome = self.keeper.abandon(outcome.job, f"{type(exc).__name__}: {exc}")
                    break
            if isinstance(outcome, Rejudged):
                return JobAnswer(self.name, assignment.attempt, outcome.entry, rejudged=True)
            self._emit(StageEvent(self.name, assignment.job_id, assignment.attempt, "encode"))
            return self._answer(assignment, finish_rendered(outcome.rendered, self.context, outcome.quality))
        except OutputStoreError as exc:  # the output folder, not this job: the run stops
            return WorkerBroken(self.name, exc)

    def close(self) -> None:
        """Put back the process-wide settings the pipeline and `env` changed: for a worker inside
        another program (an actor's process just ends)."""
        self.session.close()
        self._changes.restore()

    def _answer(self, assignment: Assignment, entry: IndexEntry) -> JobAnswer:
        return JobAnswer(self.name, assignment.attempt, entry)

    def _step(self, assignment: Assignment, done: int, total: int) -> None:
        # Each event is a call to the driver's progress queue (a Ray actor): on fast steps (small or
        # CPU jobs) one per step cost the workers ~15% of their time. A job's first and last steps
        # always go; between them at most one every STEP_NEWS_EVERY_S (a GPU step of SVD-XT is longer).
        now = time.monotonic()
        if done in (1, total) or now - self._step_sent >= STEP_NEWS_EVERY_S:
            self._step_sent = now
            self._emit(StepEvent(self.name, assignment.job_id, assignment.attempt, done, total))
        if done == total:
            self._emit(StageEvent(self.name, assignment.job_id, assignment.attempt, "decode"))

    def _note(self, text: str) -> None:
        self._emit(NoteEvent(self.name, text))

    def _emit(self, event: WorkerEvent) -> None:
        try:
            self.events.put_nowait(event)
        except Exception:  # progress is for show: a driver gone or a full queue must not fail the job
            pass


class RayRenderWorker:
    """The actor Ray runs, around a RenderWorker. What it works on comes with `setup`, not with the
    constructor: Ray restarts a crashed actor by running its constructor again, and constructor
    arguments held in the object store (the spec, the job list, the progress queue) may be gone by
    then (ray-project/ray#53727). The driver calls `setup` again after every restart."""

    def __init__(self, name: str):
        self.name = name
        self.worker: RenderWorker | None = None

    def setup(self, spec: RunSpec, jobs: Sequence[Job], events, env: Mapping[str, str]) -> WorkerInfo:
        """Build the worker and its pipeline; answers once the model is loaded, so the first job does not
        wait for it (the driver starts the workers before it plans). `events`: the driver's
        ray.util.queue.Queue. `env`: the driver's SVDFLOW_* settings, which the worker sets before it
        builds anything. Not as the actor's runtime_env: an actor with env_vars of its own needs a new
        worker process started for it, where one without takes one of the processes Ray keeps started
        (each worker ready 0.6-0.8 s sooner on a 2-CPU machine: benchmarks/results/2026-12-07-cpu-engines-2.txt)."""
        import ray

        worker = RenderWorker(self.name, spec, jobs, _Unawaited(events), env)
        worker.prepare()
        self.worker = worker  # only now: a render call that arrives sooner answers NotSetUp
        return replace(worker.ready(), node=ray.get_runtime_context().get_node_id())

    def render(self, assignment: Assignment) -> Reply:
        if self.worker is None:
            return NotSetUp(self.name)
        return self.worker.render(assignment)

    def finish(self, assignment: Assignment) -> Reply:
        if self.worker is None:  # the frames were in the process that was lost
            return NotSetUp(self.name)
        return self.worker.finish(assignment)


class _Unawaited:
    """Puts events on a ray.util.queue.Queue without waiting for the queue's answer (Queue.put_nowait
    would): a denoising step never waits on the driver. One caller's calls to an actor run in the
    order they were made, so the driver still sees a job's events in order."""

    def __init__(self, queue):
        self.actor = queue.actor

    def put_nowait(self, item: WorkerEvent) -> None:
        self.actor.put_nowait.remote(item)
