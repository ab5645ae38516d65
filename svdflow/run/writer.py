"""The one writer of a run: it owns the index and every job's status.

`Recorder` keeps the record (index entries, statuses, errors) and reports each job's end; every
engine records through one. `WriterThread` puts a Recorder on a thread of its own, fed typed
messages, so that encoding one job's files overlaps the next job's denoising (and, on Ray, so that
recording never holds up the driver handing out jobs). When the output store
fails (`OutputStoreError`: disk full, read-only, gone) the thread writes nothing more and hands the
error to the render loop, which stops before its next job.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, Literal

from svdflow.errors import OutputStoreError
from svdflow.outputs.entry import IndexEntry
from svdflow.outputs.index import RunIndex
from svdflow.quality.record import QualityRecord
from svdflow.run.entries import EntryContext, finish_reencoded, finish_rendered
from svdflow.run.messages import (
    Finished,
    Message,
    Reencode,
    Rejudged,
    Rendered,
    Ticket,
    UpToDate,
    UpToDateRun,
)
from svdflow.run.pace import PaceMeter
from svdflow.run.progress import Reporter, UpToDateEvent
from svdflow.run.qc import AttemptKeeper, Keep

Status = Literal["done", "re-encoded", "re-judged", "failed", "up to date"]


def qc_info(quality: QualityRecord | None, seed: int) -> dict[str, Any]:
    """What a job's `job_finished` event says of its qc: passed or not, and the attempt kept."""
    if quality is None:
        return {}
    made = len(quality.attempts) or 1
    return {"qc": {"passed": quality.passed, "kept": quality.kept, "seed": seed, "attempts": made,
                   "failures": [f.threshold for f in quality.failures]}}


class Recorder:
    """Every job's outcome, recorded once: its entry into the index (sidecar now, its line soon),
    its status, its error, and the `job_finished` event, which carries the run's pace (throughput and
    time left, `svdflow.run.pace`)."""

    def __init__(self, index: RunIndex, reporter: Reporter, costs: Mapping[str, float] | None = None):
        """`costs`: every job of the run, id -> `Job.cost()`, which the time left is estimated from."""
        self.index, self.reporter = index, reporter
        self.statuses: dict[str, Status] = {}
        self.errors: dict[str, str] = {}
        # Jobs whose files did not pass their qc thresholds: id -> the thresholds failed (recorded by
        # this run, or up to date with that verdict).
        self.qc_failed: dict[str, str] = {}
        self.pace = PaceMeter(costs or {})

    def up_to_date(self, job_id: str, qc_passed: bool | None = None) -> None:
        self.reporter.job_finished(job_id, "up to date", self._up_to_date(job_id, qc_passed))

    def up_to_date_run(self, run: UpToDateRun) -> None:
        """Consecutive up-to-date jobs (each started and finished), told to the reporter at once."""
        self.reporter.jobs_up_to_date([UpToDateEvent(job.id, number, run.total, self._up_to_date(job.id, qc_passed))
                                       for job, qc_passed, number in run.jobs])

    def _up_to_date(self, job_id: str, qc_passed: bool | None) -> dict[str, Any]:
        """Count an up-to-date job: its status, its recorded verdict; its finished event's info (the pace)."""
        self.statuses[job_id] = "up to date"
        if qc_passed is False:
            self.qc_failed[job_id] = "did not pass qc when it was recorded"
        return self.pace.finished(job_id, "up to date").to_json()

    def record(self, entry: IndexEntry, worker: str | None = None, *, rejudged: bool = False) -> None:
        """Keep a job's entry; `worker`: the cluster worker that rendered it (named in the event).
        OutputStoreError when its sidecar cannot be written (the job is not recorded then) or a part
        of the record is due and cannot be written (the job is: its sidecar is)."""
        self.index.record(entry)
        # Only cluster runs name a worker: a Reporter written before workers existed keeps working locally.
        named = {"worker": worker} if worker is not None else {}
        if entry.status == "failed":
            self.statuses[entry.id] = "failed"
            self.errors[entry.id] = entry.error.message
            self.reporter.job_finished(entry.id, "failed", {"error": entry.error.message,
                                                            **self.pace.finished(entry.id, "failed").to_json()}, **named)
        else:
            status: Status = "re-judged" if rejudged else "re-encoded" if entry.encoded_from == "master" else "done"
            self.statuses[entry.id] = status
            quality = entry.quality
            if quality is not None and quality.passed is False:
                self.qc_failed[entry.id] = ", ".join(
                    f"{f.threshold} {f.limit:g}: {f.value:g}" for f in quality.failures)
            else:
                self.qc_failed.pop(entry.id, None)
            self.reporter.job_finished(entry.id, status, {"seconds": entry.timings.total_s,
                                                          "files": [o.file for o in entry.outputs],
                                                          **qc_info(quality, entry.seed),
                                                          **self.pace.finished(entry.id, status).to_json()}, **named)
        self.index.flush_if_due()

    @property
    def finished(self) -> int:
        """Jobs this run rendered or re-encoded and recorded."""
        return sum(1 for status in self.statuses.values() if status in ("done", "re-encoded"))

    def close(self, job_ids: list[str], stopped: OutputStoreError | None = None) -> list[str]:
        """Compact the record in manifest order (`job_ids`; a rank of a multi-process run only seals its
        part); returns the orphans, recorded jobs no longer in the manifest.

        `stopped`: the run was stopped by its output store failing; what is kept is then sealed if the
        store lets it (the sidecars hold the record if not), nothing is compacted. Not into a folder
        that is gone: what is there now is not the run's.
        """
        orphans = self.index.orphans(set(job_ids))
        if stopped is not None:
            if not stopped.gone:
                with suppress(OutputStoreError):
                    self.index.seal()
            return orphans
        self.index.finish(job_ids)
        return orphans


class WriterThread:
    """A Recorder on its own thread. The render loop only `put`s messages; the statuses and errors
    are read once `close()` has joined the thread."""

    def __init__(self, recorder: Recorder, context: EntryContext, guard: Callable[[], None] | None = None,
                 *, queue_size: int = 2, reroll: Callable[[Ticket], None] | None = None):
        """`guard`: raises OutputStoreError when the output folder is no longer the run's (checked
        before each job's files are written, and before it is recorded). `queue_size`: 2 where
        messages carry frames (large); 0 (unbounded) where they carry entries only. `reroll`: where
        the ticket of a job's next re-roll goes (the render loop's queue), when an attempt fails qc."""
        self.recorder, self.context, self.guard = recorder, context, guard
        self.reroll = reroll
        self.keeper = AttemptKeeper(lambda text: recorder.reporter.note(f"warning: {text}"))
        self._messages: queue.Queue[Message | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="svdflow-writer", daemon=True)
        self._encode_failed = threading.Event()
        self._stopped: OutputStoreError | None = None
        self._crashed: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def put(self, message: Message) -> None:
        self._messages.put(message)

    @property
    def encode_failed(self) -> bool:
        """A job's files could not be written (--fail-fast stops at that too)."""
        return self._encode_failed.is_set()

    @property
    def stopped(self) -> OutputStoreError | None:
        """The output store failed: nothing more is written, and the render loop stops."""
        return self._stopped

    @property
    def crashed(self) -> BaseException | None:
        """The thread failed on something other than the store (a bug): nothing more is written, the
        render loop stops, and the run ends with this error once what finished is recorded."""
        return self._crashed

    @property
    def halted(self) -> bool:
        """Nothing more will be written: the render loop stops before its next job."""
        return self._stopped is not None or self._crashed is not None

    def wait(self) -> None:
        """Until every message put so far is handled (a re-roll it asks for is queued by then)."""
        self._messages.join()

    def close(self) -> Recorder:
        """Record what is queued, stop the thread; the recorder is the run's record from then on."""
        self._messages.put(None)
        self._thread.join()
        return self.recorder

    def _loop(self) -> None:
        while True:
            message = self._messages.get()
            try:
                if message is None:
                    return
                if self.halted:
                    continue  # drained, so that the render loop never waits on a full queue
                self._handle(message)
            except OutputStoreError as exc:
                self._stopped = exc
            except BaseException as exc:  # noqa: BLE001 - a dead writer would leave the render loop blocked on put()
                self._crashed = exc
            finally:
                self._messages.task_done()

    def _handle(self, message: Message) -> None:
        if isinstance(message, UpToDate):
            self.recorder.up_to_date(message.job.id, message.qc_passed)
        elif isinstance(message, UpToDateRun):
            self.recorder.up_to_date_run(message)
        elif isinstance(message, Finished):
            self.recorder.record(message.entry, message.worker, rejudged=message.rejudged)
        elif isinstance(message, Rejudged):
            self.recorder.record(message.entry, rejudged=True)
        elif isinstance(message, Rendered):
            if self.guard is not None:
                self.guard()
            outcome = self.keeper.take(message)
            if isinstance(outcome, Ticket):
                if self.reroll is None:
                    raise RuntimeError("a re-roll was asked for, but this writer has no render loop to send it to")
                self.reroll(outcome)
            else:
                self._keep(outcome)
        elif isinstance(message, Reencode):
            if self.guard is not None:
                self.guard()
            self._write(finish_reencoded(message, self.context))
        else:
            kept = self.keeper.abandon(message.job, message.error) if message.planned is not None else None
            if kept is not None:
                self._keep(kept)
            else:
                self.recorder.record(self.context.failed(message))

    def _keep(self, outcome: Keep | Rejudged) -> None:
        if isinstance(outcome, Rejudged):
            self.recorder.record(outcome.entry, rejudged=True)
        else:
            self._write(finish_rendered(outcome.rendered, self.context, outcome.quality))

    def _write(self, entry: IndexEntry) -> None:
        if entry.status == "failed":
            self._encode_failed.set()
        if self.guard is not None:  # its files went where the run's folder was: not recorded there
            self.guard()
        self.recorder.record(entry)
