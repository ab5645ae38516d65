"""The Ray engine: one driver, a pool of Ray actors rendering one manifest across a cluster.

The driver (this process) holds the output folder's lock, plans the run (`plan_run`), and is the
only writer of the record (a `Recorder`, on a writer thread of its own: recording a job, which
writes its sidecar and now and then a part of the record, never holds up handing out the next). Each worker (svdflow.run.engines.ray_worker)
is an actor with one pipeline: one per GPU (num_gpus=1), or on CPUs one per `cpus_per_worker`
CPUs. A free worker takes the longest job still waiting (svdflow.run.engines.scheduling), writes
its files to the output store itself (while it renders its next job) and answers with the job's entry.

Failures: a worker killed mid-job or on a lost node is restarted by Ray and its job goes back to the
queue for the next free worker; the job is recorded once, when a worker answers for it. A job that
fails (bad input, pipeline error) fails alone. Ctrl-C, SIGTERM and --fail-fast kill every actor of
the run, once the files they are writing are written (or failed: no temporary is left); so does the
output store failing (disk full, read-only, gone), on a worker or here: what finished is recorded
and the run exits 3. If the driver dies its actors die with it (they are owned
by it); the next run resumes from the index like any other.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

from svdflow.errors import EnvironmentProblem, InputError, JobError, OutputStoreError, RenderError, UsageError
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import IndexEntry, InputRecord, Timings
from svdflow.outputs.index import RunIndex
from svdflow.outputs.lock import claim_output_dir
from svdflow.outputs.store import OutputStore
from svdflow.pipeline.process_state import ProcessChanges
from svdflow.run.engines.ray_pool import Answered, Gone, Lost, Outcome, Raised, Ready, WorkerPool, WorkerShape
from svdflow.run.engines.ray_worker import (
    JobAnswer,
    NoteEvent,
    RenderDone,
    StageEvent,
    StepEvent,
    WorkerBroken,
    WorkerEvent,
)
from svdflow.run.engines.scheduling import Assignment, Scheduler
from svdflow.run.entries import EntryContext
from svdflow.run.executor import RunOptions, RunResult
from svdflow.run.input_hashes import InputHashes
from svdflow.run.interrupts import sigterm_as_interrupt
from svdflow.run.messages import Failed, Finished, Reencode, Rejudged, UpToDate
from svdflow.run.planning import PlannedJob, plan_run
from svdflow.run.progress import Reporter
from svdflow.run.tickets import fetch_failed, fetch_input, make_ticket
from svdflow.run.writer import Recorder, WriterThread
from svdflow.settings import Settings, load_settings

RAY_EXTRA = "svdflow[ray]"
POLL_S = 0.1  # how often the driver looks at its workers' answers and progress
SETTLE_S = 120.0  # how long a stopping run waits for the files its workers are writing
CONNECT_TIMEOUT_S = 10.0
HOST_PORT = re.compile(r"\[?(?P<host>[\w.:-]+?)\]?:(?P<port>\d+)")  # node0:6379, 10.0.0.5:6379, [::1]:6379


@dataclass(frozen=True)
class RayOptions:
    """How `svdflow run --engine ray` reaches its cluster and sizes its workers."""

    address: str | None = None  # auto, HOST:PORT, ray://...; None: RAY_ADDRESS, else a new local instance
    cpus_per_worker: int | None = None  # on CPUs; None: SVDFLOW_CPU_THREADS (1 unless set)


def import_ray():
    """Ray, or exit 3 naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise EnvironmentProblem(f"--engine ray needs Ray, which is not installed here ({exc}); install it with "
                                 f"pip install \"{RAY_EXTRA}\"") from None
    return ray


def run_ray(spec: RunSpec, jobs: list[Job], store: OutputStore, options: RunOptions, reporter: Reporter,
            ray_options: RayOptions | None = None) -> RunResult:
    ray = import_ray()
    settings = load_settings()  # a bad SVDFLOW_* value stops the run here, not in every worker
    ray_options = ray_options or RayOptions()
    if ray_options.cpus_per_worker is not None and ray_options.cpus_per_worker < 1:
        raise UsageError(f"--cpus-per-worker {ray_options.cpus_per_worker}: must be 1 or more")
    if ray_options.address:
        check_reachable(ray_options.address, "--address")  # before planning: a typo is said at once
        if ray.is_initialized():
            raise UsageError(f"--address {ray_options.address}: this process is already connected to a Ray "
                             "cluster (ray.init); leave the address out to run on that one")
    elif os.environ.get("RAY_ADDRESS"):
        check_reachable(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    lock = claim_output_dir(store)
    if warning := lock.takeover_warning():
        reporter.note(warning)
    try:
        result = Driver(ray, spec, jobs, store, options, reporter, ray_options, settings, lock.check).execute()
    finally:
        lock.release()
    if result.stopped is not None:
        raise result.store_failure()
    return result


def worker_environment(settings: Settings) -> dict[str, str]:
    """The driver's SVDFLOW_* settings, for every worker: CPU frames depend on the thread count, so
    a worker must not take its node's own value. The crash-test knob stays with its process."""
    return {name: value for name, value in settings.environment().items() if name != "SVDFLOW_CRASH_AT"}


def check_reachable(address: str, given_by: str) -> None:
    """A HOST:PORT nobody listens on makes ray.init wait for minutes: say so at once instead
    (`auto` finds no cluster quickly by itself)."""
    match = HOST_PORT.fullmatch(address.strip())
    if match is None:
        return
    try:
        socket.create_connection((match["host"], int(match["port"])), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise EnvironmentProblem(f"{_given(given_by, address)}: no Ray cluster answers there ({exc}); start its head "
                                 "with `ray start --head`, or leave --address out to start a local Ray instance") \
            from None


def _given(given_by: str, address: str) -> str:
    return f"--address {address}" if given_by == "--address" else f"RAY_ADDRESS={address}"


class Driver:
    """One Ray run, from the plan to the last entry."""

    def __init__(self, ray, spec: RunSpec, jobs: list[Job], store: OutputStore, options: RunOptions,
                 reporter: Reporter, ray_options: RayOptions, settings: Settings,
                 guard: Callable[[], None] | None = None):
        """`guard`: raises OutputStoreError when the output folder is no longer the one this run locked
        (checked before each job is handed out)."""
        self.ray, self.spec, self.jobs, self.store = ray, spec, jobs, store
        self.guard = guard
        self.options, self.reporter, self.ray_options, self.settings = options, reporter, ray_options, settings
        index = RunIndex.load(store)
        index.name, index.manifest = spec.name, str(spec.manifest_path)
        self.recorder = Recorder(index, reporter, {job.id: job.cost() for job in jobs})
        self.context = EntryContext.of(spec)
        # Entries only (the workers wrote the files): unbounded, so that handing one over never waits.
        self.writer = WriterThread(self.recorder, self.context, queue_size=0)
        self.hashes = InputHashes.load(store)  # saved once the run has ended, as a local run does
        self._started = 0  # jobs handed to workers so far (job_started's number)
        self._stop = False  # --fail-fast saw a failure

    def execute(self) -> RunResult:
        started = time.perf_counter()
        result = RunResult(self.spec)
        self.reporter.run_started(self.spec.name, len(self.jobs), self.spec.output_dir)
        self.writer.start()
        try:
            with sigterm_as_interrupt():
                try:
                    self._run()
                    self._check_writer()
                except KeyboardInterrupt:
                    result.interrupted = True
                except OutputStoreError as exc:  # a worker's or this process's write: every worker is stopped
                    result.stopped = exc
        finally:
            self.writer.close()
            result.stopped = result.stopped or self.writer.stopped
            result.statuses, result.errors = self.recorder.statuses, self.recorder.errors
            result.qc_failed = self.recorder.qc_failed
            if result.stopped is None:
                try:
                    self.hashes.save()
                except OutputStoreError as exc:
                    result.stopped = exc
            try:
                result.orphans = self.recorder.close([job.id for job in self.spec.jobs], result.stopped)
            except OutputStoreError as exc:  # the final index write: the sidecars hold the record
                result.stopped = exc
            result.masters_bytes = self.recorder.index.masters_bytes()
            result.seconds = time.perf_counter() - started
            self.reporter.run_finished(result.summary())
        if result.interrupted:
            raise result.interruption(self.store)
        return result

    def _plan(self) -> list[PlannedJob]:
        """Record what needs no worker (up to date, unreadable input); the rest is pending."""
        pending = []
        planned_jobs = plan_run(self.spec, only=self.options.only, force=self.options.force, hashes=self.hashes)
        for planned in planned_jobs:
            if planned.status == "input error":
                self._record(self.context.failed(fetch_failed(planned.job, InputError(planned.reason), None)))
            elif planned.would_render:
                pending.append(planned)
            elif planned.would_reencode:
                self._reencode(planned)
            elif planned.would_rejudge:
                self.writer.put(Rejudged(planned.prior.rejudged_entry()))
            else:
                self.writer.put(UpToDate(planned.job, planned.qc_passed))
            if self._stopping():
                return []
        return pending

    def _stopping(self) -> bool:
        """--fail-fast saw a failure (a re-encode's is seen on the writer thread), or the store failed."""
        return self._stop or (self.options.fail_fast and self.writer.encode_failed) or self.writer.stopped is not None

    def _check_writer(self) -> None:
        if self.writer.stopped is not None:
            raise self.writer.stopped

    def _reencode(self, planned: PlannedJob) -> None:
        """Only the files change: encoded again here from the master, as a local run does (no worker,
        no pipeline); the input is read for its record as a local run reads it."""
        job = planned.job
        try:
            loaded, fetch_s = fetch_input(job)
        except JobError as exc:
            self._record(self.context.failed(fetch_failed(job, exc, None)))
            return
        ticket = make_ticket(planned, loaded, Timings(fetch_s=fetch_s))
        self.reporter.job_stage(job.id, "re-encode")
        self.writer.put(Reencode(ticket, self.recorder.index.get(job.id)))

    def _record(self, entry: IndexEntry, worker: str | None = None, rejudged: bool = False) -> None:
        """To the writer thread: the driver goes on handing out jobs while it is recorded."""
        self.writer.put(Finished(entry, worker, rejudged))
        if entry.status == "failed" and self.options.fail_fast:
            self._stop = True

    def _run(self) -> None:
        """Plan, then render what is pending. When some job will render whatever the plan says (the
        record has no finished entry for it), the workers are started first: each loads its pipeline
        while this process hashes the inputs and plans, so the first jobs do not wait for a model
        load. A rerun of a finished campaign plans first and starts no worker unless one is needed."""
        changes = ProcessChanges()
        # Ray prints its workers' deaths and its own warnings on the driver's stdout; stdout is for
        # --json's events (whose reporter holds the real stream): Ray's lines go to stderr.
        changes.set_attr(sys, "stdout", sys.stderr)
        try:
            with ExitStack() as stack:
                pool = self._start_workers(stack, len(self.jobs)) if self._surely_renders() else None
                pending = self._plan()
                if pending and not self._stopping():
                    self._drive(Scheduler(pending), pool or self._start_workers(stack, len(pending)))
        finally:
            changes.restore()

    def _surely_renders(self) -> bool:
        """Some selected job has no finished entry in the record: it renders (or fails), whatever else
        the plan finds."""
        index = self.recorder.index
        return any((entry := index.summary(job.id)) is None or entry.status != "done" for job in self.jobs)

    def _start_workers(self, stack: ExitStack, most: int) -> WorkerPool:
        """Connect, start at most `most` workers (each sets its pipeline up at once), and have `stack`
        stop them when the run ends: once the files they are writing are written, then Ray."""
        stack.enter_context(self._connected())
        pool = WorkerPool.start(self.ray, self._worker_spec(), self.jobs, self._worker_shape(most),
                                worker_environment(self.settings), self.reporter)

        def stop() -> None:
            try:
                self._settle(pool)
            finally:
                pool.close()

        stack.callback(stop)
        return pool

    def _settle(self, pool: WorkerPool) -> None:
        """Before the workers are stopped (the run is done, interrupted, failed fast or its store
        failed): let the files they are writing be finished or fail, so that no temporary is left
        behind and a job whose files were written is recorded. Jobs still rendering are abandoned."""
        if not pool.writing:
            return
        self.reporter.note(f"stopping: waiting for the files of {pool.writing} job{'s' * (pool.writing != 1)} being "
                           "written (Ctrl-C again to abandon them)")
        for outcome in pool.finishing(SETTLE_S):
            if isinstance(outcome, Answered) and isinstance(outcome.reply, JobAnswer):
                # (if the store failed, the writer drops it: the next run renders what is not recorded)
                self.writer.put(Finished(outcome.reply.entry, outcome.worker, outcome.reply.rejudged))

    def _worker_spec(self) -> RunSpec:
        """The spec the workers render with: the manifest's, less overlap_decode, which needs a next
        job on the same pipeline (a worker is handed one job to render at a time). The frames are the
        same; the entries then record what was used."""
        if not self.spec.hardware.overlap_decode:
            return self.spec
        self.reporter.note("ray: hardware.overlap_decode is off on Ray workers: each renders one job at a time, "
                           "so no next job's denoising can hide its decode (the frames are the same)")
        return replace(self.spec, hardware=self.spec.hardware.model_copy(update={"overlap_decode": False}))

    @contextmanager
    def _connected(self) -> Iterator[None]:
        ray = self.ray
        if ray.is_initialized():  # called from a program that already joined a cluster: use it, leave it
            yield
            return
        given_by = "--address" if self.ray_options.address else "RAY_ADDRESS"
        address = self.ray_options.address or os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=False)
        except ConnectionError as exc:
            hint = "" if os.environ.get("RAY_AUTH_MODE") else (
                " (a cluster with token authentication, Ray's default, also needs RAY_AUTH_MODE=token and "
                "its token in RAY_AUTH_TOKEN: `ray get-auth-token` on the head)")
            raise EnvironmentProblem(f"{_given(given_by, address)}: {exc}{hint}; start a cluster with `ray start --head`, "
                                     "or leave --address out to start a local Ray instance") from None
        try:
            yield
        finally:
            ray.shutdown()

    def _worker_shape(self, most: int) -> WorkerShape:
        resources = self.ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        hardware = self.spec.hardware
        on_cpu = hardware.profile == "cpu" or hardware.device == "cpu"
        nodes = sum(1 for node in self.ray.nodes() if node.get("Alive"))
        if nodes > 1 and self.store.is_local:
            self.reporter.note(f"ray: the output folder {self.spec.output_dir} is a local path: every node must see "
                               "it at that path (a shared filesystem), or use an fsspec URL")
        if gpus and not on_cpu:
            shape = WorkerShape(min(gpus, most), {"num_gpus": 1, "num_cpus": 1}, "1 GPU per worker")
        else:
            per = self.ray_options.cpus_per_worker or self.settings.cpu_threads
            if cpus < per:
                raise EnvironmentProblem(f"the Ray cluster has {cpus} CPU{'s' * (cpus != 1)} and no GPU for this "
                                         f"manifest; a worker needs {per} (--cpus-per-worker); add nodes or lower it")
            shape = WorkerShape(min(cpus // per, most), {"num_cpus": per}, f"{per} CPU{'s' * (per != 1)} per worker")
        self.reporter.note(f"ray: {shape.count} worker{'s' * (shape.count != 1)} ({shape.describe}) on "
                           f"{nodes} node{'s' * (nodes != 1)}")
        return shape

    def _drive(self, scheduler: Scheduler, pool: WorkerPool) -> None:
        while not scheduler.finished and not self._stopping():
            self._check_writer()
            for worker in pool.up():
                if not scheduler.can_take(worker):
                    continue
                if self.guard is not None:
                    self.guard()
                assignment = scheduler.take(worker)
                if assignment is None:
                    break
                pool.render(worker, assignment)
                self._started += 1
                self.reporter.job_started(assignment.job_id, self._started, len(self.jobs), worker=worker)
            if not pool.alive and not scheduler.finished:
                raise EnvironmentProblem(f"every Ray worker of this run is gone (last: {pool.last_loss}); "
                                         f"{scheduler.waiting + scheduler.busy} jobs were not rendered; run again "
                                         "to render them")
            outcomes = pool.wait(POLL_S)
            # A worker sends a job's progress before it answers for the job: the progress first, while
            # the job is still the worker's (news of a job already answered for is dropped as late).
            for event in pool.events():
                self._forward(event, scheduler)
            for outcome in outcomes:
                self._handle(outcome, scheduler, pool)

    def _handle(self, outcome: Outcome, scheduler: Scheduler, pool: WorkerPool) -> None:
        worker = outcome.worker
        if isinstance(outcome, Ready):
            info = outcome.info
            self.reporter.worker_status(worker, "ready", {"pid": info.pid, "host": info.host, "node": info.node})
        elif isinstance(outcome, Answered):
            reply = outcome.reply
            if isinstance(reply, WorkerBroken):
                raise reply.error
            if isinstance(reply, RenderDone):  # its files are written while the worker renders its next job
                pool.finish(worker, scheduler.rendered(worker))
                return
            scheduler.done(worker, reply.entry.id)
            self._record(reply.entry, worker, reply.rejudged)
        elif isinstance(outcome, Raised):
            assignment = scheduler.done(worker, outcome.assignment.job_id)
            self._record(self._failed(assignment, f"job '{assignment.job_id}': the Ray worker failed: {outcome.reason}"),
                         worker)
        elif isinstance(outcome, Lost):
            loss = scheduler.lost(worker, outcome.assignment.job_id)
            self.reporter.worker_status(worker, "lost", {"job": loss.assignment.job_id, "error": outcome.reason})
            if loss.requeued:
                self.reporter.note(f"{worker} was lost while {outcome.doing} {loss.assignment.job_id} "
                                   f"({outcome.reason}); the job will run again on the next free worker")
            else:
                self._record(self._failed(loss.assignment, (
                    f"job '{loss.assignment.job_id}': its Ray worker was lost {loss.assignment.attempt} times while "
                    f"working on it (last: {outcome.reason}); look at the Ray worker logs for why (a crash, the OOM "
                    "killer), then run again")), worker)
            self.reporter.worker_status(worker, "restarting", {})
        elif isinstance(outcome, Gone):
            self.reporter.worker_status(worker, "gone", {"error": outcome.reason})
            self.reporter.note(f"{worker} is gone ({outcome.reason})")

    def _failed(self, assignment: Assignment, message: str) -> IndexEntry:
        """The entry of a job that no worker answered for."""
        job = assignment.planned.job
        record = InputRecord(uri=job.image, sha256=assignment.planned.input_sha256, source_size=None)
        return self.context.failed(Failed(job, assignment.planned, record, RenderError(message), "render", None, None,
                                          Timings()))

    def _forward(self, event: WorkerEvent, scheduler: Scheduler) -> None:
        if isinstance(event, NoteEvent):
            self.reporter.note(f"{event.worker}: {event.text}")
            return
        if not scheduler.holds(event.worker, event.job_id, event.attempt):
            return  # late news of a job that was lost or already recorded
        if isinstance(event, StepEvent):
            self.reporter.job_step(event.job_id, event.step, event.steps, worker=event.worker)
        elif isinstance(event, StageEvent):
            self.reporter.job_stage(event.job_id, event.stage, worker=event.worker)
