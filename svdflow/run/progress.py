"""Progress reporting: a live rich display on a terminal, one line per job elsewhere, JSON events
for machines. Reporters are called from the render loop and the writer thread, so each one is
thread-safe.

A cluster run (svdflow.run.engines.ray) names the worker of each job event (`worker=`) and reports
each worker's state (`worker_status`); a local run never passes `worker`, so a Reporter written
without it keeps working there.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from svdflow.run.pace import Pace, pace_text
from svdflow.terminal import printable


class Reporter:
    """The events of a run. The base class ignores them all."""

    def run_started(self, name: str, total: int, output_dir: str) -> None: ...
    def note(self, text: str) -> None: ...
    def job_started(self, job_id: str, number: int, total: int, worker: str | None = None) -> None: ...
    def job_stage(self, job_id: str, stage: str, worker: str | None = None) -> None: ...
    def job_step(self, job_id: str, done: int, total: int, worker: str | None = None) -> None: ...
    def job_finished(self, job_id: str, status: str, info: dict[str, Any], worker: str | None = None) -> None: ...
    def worker_status(self, worker: str, status: str, info: dict[str, Any]) -> None:
        """A cluster worker's state: "starting", "ready" (info: pid, host, node), "lost" (info: job,
        error), "restarting", "gone" (info: error)."""
    def run_finished(self, summary: dict[str, Any]) -> None: ...
    def close(self) -> None: ...

    def jobs_up_to_date(self, jobs: Sequence[UpToDateEvent]) -> None:
        """Consecutive up-to-date jobs, each started and finished: what a rerun of a finished campaign
        sends 100,000 of (a reporter may write them at once; by default, two events each)."""
        for job in jobs:
            self.job_started(job.job_id, job.number, job.total)
            self.job_finished(job.job_id, "up to date", job.info)


@dataclass(frozen=True, slots=True)
class UpToDateEvent:
    """One job of `Reporter.jobs_up_to_date`: its number of the run's `total`, and its finished
    event's info (the pace)."""

    job_id: str
    number: int
    total: int
    info: dict[str, Any]


def _started(job_id: str, number: int, total: int) -> dict[str, Any]:
    return {"id": job_id, "number": number, "jobs": total}


def _finished(job_id: str, status: str, info: dict[str, Any]) -> dict[str, Any]:
    return {"id": job_id, "status": status, **info}


def _named(worker: str | None) -> dict[str, str]:
    return {} if worker is None else {"worker": worker}


def _event_json(event: dict[str, Any]) -> str:
    """One event's line, by orjson (a rerun of 100,000 finished jobs emits 200,000 events; json.dumps
    was most of their cost); what orjson does not take (an integer past 64 bits) goes to json."""
    try:
        return orjson.dumps(event, default=str).decode()
    except TypeError:
        return json.dumps(event, default=str)


class JsonReporter(Reporter):
    """One JSON object per line: {"event": ..., "time": ..., ...}."""

    def __init__(self, stream: TextIO | None = None, rank: int | None = None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._rank = {} if rank is None else {"rank": rank}

    def _emit(self, event: str, **fields: Any) -> None:
        self._write(self._line(event, round(time.time(), 3), **fields))

    def _line(self, event: str, now: float, **fields: Any) -> str:
        return _event_json({"event": event, "time": now, **self._rank, **fields}) + "\n"

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def jobs_up_to_date(self, jobs):
        now = round(time.time(), 3)
        self._write("".join(self._line("job_started", now, **_started(job.job_id, job.number, job.total))
                            + self._line("job_finished", now, **_finished(job.job_id, "up to date", job.info))
                            for job in jobs))  # one write for the lot

    def run_started(self, name, total, output_dir):
        self._emit("run_started", name=name, jobs=total, output_dir=output_dir)

    def note(self, text):
        self._emit("note", text=text)

    def job_started(self, job_id, number, total, worker=None):
        self._emit("job_started", **_started(job_id, number, total), **_named(worker))

    def job_stage(self, job_id, stage, worker=None):
        self._emit("job_stage", id=job_id, stage=stage, **_named(worker))

    def job_step(self, job_id, done, total, worker=None):
        self._emit("job_step", id=job_id, step=done, steps=total, **_named(worker))

    def job_finished(self, job_id, status, info, worker=None):
        self._emit("job_finished", **_finished(job_id, status, info), **_named(worker))

    def worker_status(self, worker, status, info):
        self._emit("worker_status", worker=worker, status=status, **info)

    def run_finished(self, summary):
        self._emit("run_finished", **summary)


class PlainReporter(Reporter):
    """For logs and pipes: one line per job as it finishes, no cursor tricks."""

    def __init__(self, stream: TextIO | None = None, label: str = ""):
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._prefix = f"[{label}] " if label else ""

    def _line(self, text: str) -> None:
        with self._lock:
            self.stream.write(self._prefix + printable(text) + "\n")
            self.stream.flush()

    def run_started(self, name, total, output_dir):
        self._total = total
        self._line(f"svdflow: {name}: {total} job{'s' * (total != 1)} -> {output_dir}")

    def note(self, text):
        self._line(text)

    def jobs_up_to_date(self, jobs):
        with self._lock:
            first, self._done = self._done, self._done + len(jobs)
        text = "".join(self._prefix + printable(self._finished_text(first + i, job.job_id, "up to date", job.info))
                       + "\n" for i, job in enumerate(jobs, 1))
        with self._lock:  # one write for the lot
            self.stream.write(text)
            self.stream.flush()

    def job_finished(self, job_id, status, info, worker=None):
        with self._lock:
            self._done += 1
            done = self._done
        self._line(self._finished_text(done, job_id, status, info, worker))

    def _finished_text(self, done: int, job_id: str, status: str, info: dict[str, Any], worker: str | None = None) -> str:
        pace = _pace_of(info)
        return (f"[{done}/{self._total}] {job_id}: {describe(status, info)}"
                + (f" ({pace_text(pace)})" if pace is not None and status not in ("up to date", "re-judged") else "")
                + (f" [{worker}]" if worker else ""))


# How many finished jobs the live display lists above its bars: a campaign of 100,000 jobs must not
# scroll 100,000 lines through the terminal (the summary names every failure; a log, where output is
# not a terminal, gets every line from PlainReporter).
RECENT_LINES = 8


class _LiveProgress(Progress):
    """rich's Progress with the last finished jobs above the bars, in the live region (redrawn in
    place), instead of printed into the scrollback one line per job."""

    def __init__(self, *columns, recent: deque, **kwargs):
        self._recent = recent
        super().__init__(*columns, **kwargs)

    def get_renderables(self):
        if self._recent:
            yield Text("\n".join(self._recent), no_wrap=True, overflow="ellipsis")
        yield self.make_tasks_table(self.tasks)


class PaceColumn(ProgressColumn):
    """The run's throughput and time left (`svdflow.run.pace`), counting down between jobs."""

    def render(self, task) -> Text:
        pace: Pace | None = task.fields.get("pace")
        if pace is None:
            return Text("")
        stamped = task.fields.get("stamped", time.monotonic())
        eta = None if pace.eta_s is None else max(0.0, pace.eta_s - (time.monotonic() - stamped))
        return Text(pace_text(replace(pace, eta_s=eta)))


class RichReporter(Reporter):
    """Live display on a terminal: the jobs bar with the run's throughput and time left, the last
    finished jobs, the current job's steps and its stage; on a cluster, one row per worker (its job,
    stage and steps, or its state). Its height stays the same however many jobs the run has."""

    def __init__(self, console: Console | None = None, recent_lines: int = RECENT_LINES):
        self.console = console or Console(stderr=True)
        self._recent: deque[str] = deque(maxlen=recent_lines)
        self.progress = _LiveProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), PaceColumn(),
            console=self.console, transient=False, recent=self._recent,
        )
        self._jobs = self.progress.add_task("jobs", total=0)
        self._steps = self.progress.add_task("", total=1, visible=False)
        self._workers: dict[str, Any] = {}  # worker name -> its row's task id
        self._segments: dict[str | None, str] = {}  # per row: the current job's segment, when it has several
        self._lock = threading.Lock()  # the recent lines: the render loop and the writer thread both finish jobs
        self.progress.start()

    def _row(self, worker: str | None):
        """The row a job event updates: the single job row, or its worker's."""
        if worker is None:
            return self._steps
        if worker not in self._workers:
            self._workers[worker] = self.progress.add_task(f"  {worker}", total=1)
        return self._workers[worker]

    def _label(self, worker: str | None, text: str) -> str:
        return f"  {worker}: {text}" if worker else f"  {text}"

    def run_started(self, name, total, output_dir):
        self.progress.update(self._jobs, total=total, description=f"{name}")
        self.console.print(printable(f"svdflow: {name}: {total} job{'s' * (total != 1)} -> {output_dir}"),
                           markup=False)

    def note(self, text):
        self.console.print(printable(text), markup=False)

    def job_started(self, job_id, number, total, worker=None):
        self._segments[worker] = ""
        self.progress.update(self._row(worker), description=self._label(worker, f"{job_id}: fetch"), completed=0,
                             total=1, visible=True)

    def job_stage(self, job_id, stage, worker=None):
        text = stage + self._segments.get(worker, "")
        if stage.startswith("segment "):  # a chained job's "segment 2 of 3", kept beside its later stages
            self._segments[worker], text = f" ({stage})", stage
        self.progress.update(self._row(worker), description=self._label(worker, f"{job_id}: {text}"))

    def job_step(self, job_id, done, total, worker=None):
        self.progress.update(self._row(worker), description=self._label(
            worker, f"{job_id}: denoise{self._segments.get(worker, '')}"), completed=done, total=total)

    def job_finished(self, job_id, status, info, worker=None):
        pace = _pace_of(info)
        with self._lock:
            # Text, not markup: "[worker-0]" (and brackets in an id or an error) are not rich styles.
            self._recent.append(printable(f"{job_id}: {describe(status, info)}" + (f" [{worker}]" if worker else "")))
        fields = {} if pace is None else {"pace": pace, "stamped": time.monotonic()}
        self.progress.advance(self._jobs)
        self.progress.update(self._jobs, **fields)

    def worker_status(self, worker, status, info):
        self.progress.update(self._row(worker), description=self._label(worker, status), completed=0, total=1)

    def run_finished(self, summary):
        self.progress.update(self._steps, visible=False)
        for row in self._workers.values():
            self.progress.update(row, visible=False)

    def close(self):
        self.progress.stop()


class Fanout(Reporter):
    """Several reporters as one (--json on stdout and human output on stderr)."""

    def __init__(self, *reporters: Reporter):
        self.reporters = reporters
        self._calls: dict[str, Any] = {}  # one caller per event name (a rerun of 100,000 jobs sends 200,000)

    def __getattribute__(self, name: str):
        if name.startswith("_") or name == "reporters":
            return object.__getattribute__(self, name)
        calls = object.__getattribute__(self, "_calls")
        call = calls.get(name)
        if call is None:
            reporters = object.__getattribute__(self, "reporters")

            def call(*args: Any, **kwargs: Any) -> None:
                for reporter in reporters:
                    getattr(reporter, name)(*args, **kwargs)

            calls[name] = call
        return call


def _pace_of(info: dict[str, Any]) -> Pace | None:
    """The pace a job_finished event carries (`Pace.to_json`'s fields), if it does."""
    try:
        return Pace(info["finished"], info["jobs"], info["videos"], info["elapsed_s"], info["videos_per_hour"],
                    info["eta_s"])
    except KeyError:
        return None


def describe(status: str, info: dict[str, Any]) -> str:
    qc = verdict_text(info.get("qc"))
    if status in ("done", "re-encoded"):
        files = ", ".join(info.get("files", []))
        return f"{status} in {info.get('seconds', 0):.1f}s -> {files}{qc}"
    if status == "failed":
        return f"FAILED: {info.get('error', '')}"
    return status + qc


def verdict_text(qc: dict[str, Any] | None) -> str:
    """A job's qc verdict, as its line says it: "; qc passed on attempt 2 of 3 (seed 123)"."""
    if not qc or qc.get("passed") is None:
        return ""
    tried = qc["attempts"]
    kept = f"attempt {qc['kept']} of {tried}, seed {qc['seed']}" if tried > 1 else f"seed {qc['seed']}"
    if qc["passed"]:
        return f"; qc passed ({kept})"
    return f"; qc FAILED {', '.join(qc['failures'])} ({'kept the best, ' if tried > 1 else ''}{kept})"


def make_reporter(json_events: bool, stream_is_tty: bool | None = None, rank: int | None = None,
                  world_size: int = 1) -> Reporter:
    """Live display on a terminal, plain lines elsewhere; under a launcher every rank writes plain
    lines labelled with its rank (live displays of several processes would overwrite each other)."""
    tty = sys.stderr.isatty() if stream_is_tty is None else stream_is_tty
    if world_size > 1:
        human: Reporter = PlainReporter(label=f"rank {rank}/{world_size}")
    else:
        human = RichReporter() if tty else PlainReporter()
    return Fanout(JsonReporter(rank=rank if world_size > 1 else None), human) if json_events else human
