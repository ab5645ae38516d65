"""The render loop of one process: prefetch inputs, decide, render, hand each job to the writer.

Threads, and why:
- the main thread renders (one pipeline, loaded once, only if some job needs rendering);
- a small pool fetches and decodes the next jobs' inputs so the accelerator never waits on I/O (only
  the jobs that have work: an input whose remembered hash says its job is up to date is never read,
  and at most the prefetch window of decoded inputs is held);
- one writer thread (svdflow.run.writer) encodes finished frames and records index entries while
  the next job denoises. It owns the index and every job's status; the render loop only sends it
  typed messages (svdflow.run.messages).

When the output store fails (disk full, read-only, gone: `OutputStoreError`), on the writer thread or
here, the render loop stops before its next job: rendering what cannot be written only costs
accelerator time. What finished is recorded, and the run's result carries the error (`stopped`).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from svdflow.collector import gc_paused
from svdflow.errors import (
    EXIT_ENVIRONMENT,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    EXIT_QC_FAILED,
    InternalError,
    Interrupted,
    JobError,
    OutputStoreError,
    SvdflowError,
    describe_bug,
)
from svdflow.faults import crash_point
from svdflow.hardware import shape_groups
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import Timings
from svdflow.outputs.index import INDEX_FILE, RunIndex
from svdflow.outputs.store import OutputStore
from svdflow.pipeline.renderers import Renderer, make_renderer
from svdflow.pipeline.session import PipelineSession, RenderedFrames
from svdflow.run.entries import EntryContext
from svdflow.run.input_hashes import InputHashes, input_stamps
from svdflow.run.interrupts import sigterm_as_interrupt
from svdflow.run.messages import Failed, Reencode, Rejudged, Rendered, Ticket, UpToDateRun
from svdflow.run.planning import PlannedJob, decide
from svdflow.run.progress import Reporter
from svdflow.run.tickets import fetch_failed, fetch_input, make_ticket, render_failed
from svdflow.run.writer import Recorder, Status, WriterThread

# Up-to-date jobs handed to the writer in one message (see UpToDateRun).
UP_TO_DATE_RUN = 500


@dataclass
class RunOptions:
    only: tuple[str, ...] = ()
    force: bool = False
    fail_fast: bool = False
    prefetch: int = 3  # inputs fetched ahead of the render loop


@dataclass
class RunResult:
    spec: RunSpec
    statuses: dict[str, Status] = field(default_factory=dict)  # job id -> done | re-encoded | failed | up to date
    errors: dict[str, str] = field(default_factory=dict)
    qc_failed: dict[str, str] = field(default_factory=dict)  # jobs that did not pass qc: id -> what failed
    orphans: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    masters_bytes: int = 0  # the recorded masters' total size, after the run
    stopped: OutputStoreError | None = None  # the output store failed: the run stopped there
    crashed: str | None = None  # a thread of the run failed unexpectedly (a bug): the run stopped there

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)

    @property
    def exit_code(self) -> int:
        if self.stopped is not None:
            return EXIT_ENVIRONMENT
        if self.crashed is not None:
            return InternalError.exit_code
        if self.count("failed"):
            return EXIT_JOBS_FAILED
        return EXIT_QC_FAILED if self.qc_failed else EXIT_OK

    def store_failure(self) -> OutputStoreError:
        """What a run stopped by its output store raises once it has recorded what finished."""
        assert self.stopped is not None
        return self.stopped.after(self.count("done") + self.count("re-encoded"))

    def interruption(self, store: OutputStore) -> Interrupted:
        """What an interrupted run raises once it has recorded what finished."""
        done = self.count("done") + self.count("re-encoded")
        return Interrupted(f"interrupted; {done} job{'s' * (done != 1)} finished and recorded in "
                           f"{store.path(INDEX_FILE)}; run again to render the rest")

    def crash(self, store: OutputStore) -> InternalError:
        """What a run whose writer thread failed (a bug) raises once it has recorded what finished."""
        done = self.count("done") + self.count("re-encoded")
        return InternalError(f"the writer thread failed: {self.crashed}; {done} job{'s' * (done != 1)} "
                             f"finished and recorded in {store.path(INDEX_FILE)}; run again to render the rest")

    def summary(self) -> dict[str, Any]:
        return {"name": self.spec.name, "output_dir": self.spec.output_dir, "rendered": self.count("done"),
                "re_encoded": self.count("re-encoded"), "re_judged": self.count("re-judged"),
                "up_to_date": self.count("up to date"), "failed": self.count("failed"),
                "qc_failed": len(self.qc_failed), "orphaned": self.orphans, "errors": self.errors,
                "qc_failures": self.qc_failed,
                "masters_bytes": self.masters_bytes, "seconds": round(self.seconds, 3),
                "interrupted": self.interrupted, "exit_code": 130 if self.interrupted else self.exit_code,
                **({"stopped": str(self.stopped)} if self.stopped is not None else {}),
                **({"crashed": self.crashed} if self.crashed is not None else {})}


class _TicketSink:
    """One job's sink for the renderer: binds the ticket to the executor's two deliveries."""

    def __init__(self, executor: Executor, ticket: Ticket):
        self.executor, self.ticket = executor, ticket

    def done(self, result: RenderedFrames) -> None:
        self.executor.deliver_rendered(self.ticket, result)

    def failed(self, error: Exception) -> None:
        self.executor.deliver_failure(self.ticket, error)


class Executor:
    """Renders `jobs` of `spec` in this process and records them in the output folder's record. The
    caller holds the output folder's lock."""

    def __init__(self, spec: RunSpec, jobs: list[Job], store: OutputStore, options: RunOptions, reporter: Reporter,
                 *, run_id: str | None = None, rank_of: int | None = None, local_rank: int = 0,
                 guard: Callable[[], None] | None = None):
        """`rank_of`: this process's rank in a multi-process run: it loads and records only its own
        jobs, and leaves the compaction to rank 0. `guard`: raises OutputStoreError when the output
        folder is no longer the one this run locked (checked before each job is rendered and before
        its files are written)."""
        # Jobs of one shape back to back: a compiled UNet (dynamic=False) then compiles each shape once.
        self.jobs = [job for _, group in shape_groups(jobs) for job in group]
        self.spec, self.store, self.options, self.reporter = spec, store, options, reporter
        if rank_of is None:
            index = RunIndex.load(store, run_id=run_id)
        else:
            index = RunIndex.load(store, run_id=f"{run_id}-r{rank_of}", only={job.id for job in self.jobs})
        index.name, index.manifest = spec.name, str(spec.manifest_path)
        self.index = index
        self.hashes = InputHashes.load(store)
        self.recorded = index.snapshot()  # what earlier runs recorded: what decisions read
        self.session = PipelineSession(spec, self.jobs, reporter.note, local_rank=local_rank)
        self.guard = guard
        # Re-rolls the writer asks for (a job whose attempt failed its qc thresholds): rendered between
        # the other jobs, so the render loop never waits for a clip to be scored.
        self._rerolls: queue.SimpleQueue[Ticket] = queue.SimpleQueue()
        self.writer = WriterThread(Recorder(index, reporter, {job.id: job.cost() for job in self.jobs}),
                                   EntryContext.of(spec), guard, reroll=self._rerolls.put)
        self._renderer: Renderer | None = None
        self._inputs: dict[tuple, Future] = {}  # the prefetch window's inputs, by (image, size, resize)
        self._stamps: dict[str, tuple[int, str] | None] = {}
        self._fetched: list[Job] = []  # the jobs whose input is read, in order
        self._fetch_at = 0  # how many of them the render loop has taken
        self._pool = ThreadPoolExecutor(max_workers=max(1, options.prefetch), thread_name_prefix="svdflow-fetch")
        self._current: str | None = None  # the job the render loop is on
        self._failure_sent = False  # the render loop handed the writer a failed job
        self._up_to_date: list[tuple[Job, bool | None, int]] = []  # up-to-date jobs not yet handed to the writer

    def execute(self) -> RunResult:
        """Render and record every job; a run stopped by its output store returns with `stopped` set
        (the engine raises it once every process is done)."""
        started = time.perf_counter()
        result = RunResult(self.spec)
        self.reporter.run_started(self.spec.name, len(self.jobs), self.spec.output_dir)
        self.writer.start()
        stopped: OutputStoreError | None = None
        try:
            with sigterm_as_interrupt():
                try:
                    early = self._decide_early()
                    going = True
                    for number, job in enumerate(self.jobs):
                        if self.writer.halted or not (going := self._rerender()):
                            break
                        if early[number] is not None and not early[number].needs_input:  # not read
                            self._unread(early[number], number)
                            continue
                        self._send_up_to_date()
                        self._prefetch()
                        if not (going := self._process(job, number, early[number])):
                            break
                    self._send_up_to_date()
                    if going:
                        self._settle()
                except KeyboardInterrupt:
                    result.interrupted = True
                except OutputStoreError as exc:  # read here: the plan's look at the folder
                    stopped = exc
                finally:
                    try:
                        if self._renderer is not None:  # a job denoised before the end (or the interrupt) is decoded and kept
                            self._renderer.finish()
                    except KeyboardInterrupt:
                        result.interrupted = True  # asked again: leave it
        finally:
            self._send_up_to_date()
            recorder = self.writer.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.session.close()
            result.stopped = self.writer.stopped or stopped
            if self.writer.crashed is not None:
                result.crashed = describe_bug(self.writer.crashed)
            result.statuses, result.errors, result.qc_failed = recorder.statuses, recorder.errors, recorder.qc_failed
            if result.stopped is None:
                try:
                    self.hashes.save()
                except OutputStoreError as exc:
                    result.stopped = exc
            try:
                result.orphans = recorder.close([job.id for job in self.spec.jobs], result.stopped)
            except OutputStoreError as exc:  # the final index write: the sidecars hold the record
                result.stopped = exc
            result.masters_bytes = self.index.masters_bytes()
            result.seconds = time.perf_counter() - started
            self.reporter.run_finished(result.summary())
        if self.writer.crashed is not None:
            raise result.crash(self.store) from self.writer.crashed
        if result.interrupted:
            raise result.interruption(self.store)
        return result

    def _send_up_to_date(self) -> None:
        if self._up_to_date and not self.writer.halted:
            self.writer.put(UpToDateRun(tuple(self._up_to_date), len(self.jobs)))
        self._up_to_date = []

    def _decide_early(self) -> list[PlannedJob | None]:
        """Each job's decision by its input's remembered hash (None where there is none): one up to date
        is never read; the others are fetched, and decided again only if the bytes read differ."""
        with gc_paused():  # as in plan_run: a decision per job, nothing cyclic among them
            return self._decide_all_early()

    def _decide_all_early(self) -> list[PlannedJob | None]:
        images = sorted({job.image for job in self.jobs})
        self._stamps = input_stamps(images)
        known: dict[str, str] = {}
        if not self.options.force:
            known = self.hashes.cached(self._stamps)
            # No remembered hash (a first run here, a folder from before inputs.jsonl): an input whose
            # job the record has done may be up to date, and hashing its bytes is far cheaper than
            # decoding it for every job that uses it. An input no finished job uses is read once, when
            # its job renders.
            unknown = sorted({job.image for job in self.jobs if job.image not in known
                              and (summary := self.recorded.summary(job.id)) is not None and summary.status == "done"})
            if unknown:
                known.update((uri, digest) for uri, digest in self.hashes.hash_all(unknown, stamps=self._stamps).items()
                             if isinstance(digest, str))
        early: list[PlannedJob | None] = []
        for job in self.jobs:
            planned = None
            if job.image in known:
                planned = decide(job, known[job.image], self.spec, self.recorded)
            early.append(planned)
        self._fetched = [job for job, planned in zip(self.jobs, early) if planned is None or planned.needs_input]
        return early

    def _unread(self, planned: PlannedJob, number: int) -> None:
        """A job whose input is not needed: up to date (handed over with the next ones, UpToDateRun,
        which starts and finishes it), or re-judged from its recorded scores."""
        if planned.would_rejudge:
            self._send_up_to_date()
            self.reporter.job_started(planned.job.id, number + 1, len(self.jobs))
            self.writer.put(Rejudged(planned.prior.rejudged_entry()))
        else:
            self._up_to_date.append((planned.job, planned.qc_passed, number + 1))
            if len(self._up_to_date) >= UP_TO_DATE_RUN:
                self._send_up_to_date()

    def _rerender(self) -> bool:
        """Render the re-rolls the writer asked for so far; False when the run must stop."""
        while not self.writer.halted:
            try:
                ticket = self._rerolls.get_nowait()
            except queue.Empty:
                return True
            self.reporter.job_stage(ticket.job.id, f"re-roll {ticket.attempt} (seed {ticket.job.seed})")
            if not self._render(ticket):
                return False
        return False

    def _settle(self) -> None:
        """After the last job: until no re-roll is pending, finish the last render, let the writer score
        it, and render the re-rolls it asks for."""
        while not self.writer.halted:
            if self._renderer is not None:
                self._renderer.finish()
            self.writer.wait()
            if self._rerolls.empty() or not self._rerender():
                return

    def _prefetch(self) -> None:
        """Fetch the next jobs' inputs (the prefetch window) ahead of the render loop."""
        for job in self._fetched[self._fetch_at: self._fetch_at + self.options.prefetch + 1]:
            key = _input_key(job)
            if key not in self._inputs:
                self._inputs[key] = self._pool.submit(fetch_input, job)

    def _take_input(self, job: Job) -> Future:
        """The job's input; dropped from the window unless a job in it shares it (a sweep's jobs do)."""
        key = _input_key(job)
        fetch = self._inputs[key]
        self._fetch_at += 1
        ahead = self._fetched[self._fetch_at: self._fetch_at + self.options.prefetch + 1]
        if all(_input_key(other) != key for other in ahead):
            del self._inputs[key]
        return fetch

    def _process(self, job: Job, number: int, early: PlannedJob | None = None) -> bool:
        """Render one job; False when the run must stop (--fail-fast, or the output store failed)."""
        if self.guard is not None:
            self.guard()
        self.reporter.job_started(job.id, number + 1, len(self.jobs))
        waited = time.perf_counter()
        fetch = self._take_input(job)
        if not fetch.done() and self._renderer is not None:
            self._renderer.finish()  # a deferred decode would wait for the next job's steps: not while idle
        try:
            loaded, fetch_s = fetch.result()
        except JobError as exc:
            self._send_failure(fetch_failed(job, exc, self.session))
            return not self.options.fail_fast
        timings = Timings(fetch_s=fetch_s, input_wait_s=time.perf_counter() - waited)
        self.hashes.remember(job.image, self._stamps.get(job.image), loaded.sha256)
        planned = early if early is not None and early.input_sha256 == loaded.sha256 else decide(
            job, loaded.sha256, self.spec, self.recorded, self.options.force)
        if not planned.needs_input:
            self._unread(planned)
            return True
        ticket = make_ticket(planned, loaded, timings)
        if planned.would_reencode:  # from the master, on the writer thread: no pipeline, no torch
            self.reporter.job_stage(job.id, "re-encode")
            self.writer.put(Reencode(ticket, self.recorded.get(job.id)))
            return not (self.options.fail_fast and self.writer.encode_failed) and not self.writer.halted
        if ticket.attempt:
            self.reporter.job_stage(job.id, f"re-roll {ticket.attempt} (seed {ticket.job.seed})")
        return self._render(ticket)

    def _render(self, ticket: Ticket) -> bool:
        """Render a ticket (a job, or one of its re-rolls); False when the run must stop."""
        job = ticket.job
        self.reporter.job_stage(job.id, "load model" if not self.session.loaded else "denoise")
        self._current = job.id
        sink = _TicketSink(self, ticket)
        try:
            if self._renderer is None:
                self._renderer = make_renderer(self.session)
            self._renderer.submit(job, ticket.image, sink, lambda done, total: self._on_step(job, done, total),
                                  lambda number, count: self.reporter.job_stage(job.id, f"segment {number} of {count}"))
        except JobError as exc:
            sink.failed(exc)
            return not self.options.fail_fast
        except (KeyboardInterrupt, SvdflowError):
            raise  # Ctrl-C, or the model or device is unusable: the run ends
        except Exception as exc:  # a pipeline error fails this job only; the cause is kept in the index
            sink.failed(exc)
            return not self.options.fail_fast
        # A failure may have come meanwhile: a deferred decode's, the writer's encode, or the store's.
        return (not (self.options.fail_fast and (self._failure_sent or self.writer.encode_failed))
                and not self.writer.halted)

    def _on_step(self, job: Job, done: int, total: int) -> None:
        crash_point("denoise-step")
        self.reporter.job_step(job.id, done, total)
        if done == total:
            self.reporter.job_stage(job.id, "decode")

    def deliver_rendered(self, ticket: Ticket, result: RenderedFrames) -> None:
        """A job's frames, to the writer (from the render loop: now, or during the next job)."""
        if self._current == ticket.job.id:  # not a deferred decode finishing during another job
            self.reporter.job_stage(ticket.job.id, "encode")
        self.writer.put(Rendered(ticket, result.frames, result.hardware, self.session.resolved_revision,
                                 result.render_s, result.decode_s, result.segments))

    def deliver_failure(self, ticket: Ticket, error: Exception) -> None:
        self._send_failure(render_failed(ticket, error, self.session))

    def _send_failure(self, message: Failed) -> None:
        self._failure_sent = True
        self.writer.put(message)


def _input_key(job: Job) -> tuple:
    p = job.params
    return job.image, p.width, p.height, p.resize
