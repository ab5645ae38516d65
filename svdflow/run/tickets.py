"""A job's way to the writer before and around the pipeline, the same in every engine (the local
executor's render loop, a Ray worker): fetch its input, make its ticket, and turn what went wrong
into the `Failed` message the writer records."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from svdflow.errors import JobError, RenderError, SvdflowError
from svdflow.inputs import LoadedInput, load_input
from svdflow.manifest.resolve import Job
from svdflow.outputs.entry import InputRecord, Timings
from svdflow.run.keys import key_material
from svdflow.run.messages import Failed, Ticket
from svdflow.run.planning import PlannedJob
from svdflow.run.qc import first_ticket

if TYPE_CHECKING:
    from svdflow.manifest.resolve import RunSpec
    from svdflow.pipeline.session import PipelineSession


def fetch_input(job: Job) -> tuple[LoadedInput, float]:
    """The job's input, fetched, decoded and resized, and the seconds it took (JobError when it cannot be)."""
    started = time.perf_counter()
    p = job.params
    loaded = load_input(job.image, p.width, p.height, p.resize)
    return loaded, time.perf_counter() - started


def make_ticket(planned: PlannedJob, loaded: LoadedInput, timings: Timings) -> Ticket:
    """The job's first ticket: attempt 0, or, re-rolling after a re-judge, its next attempt."""
    return first_ticket(Ticket(planned.job, planned, InputRecord(uri=planned.job.image, sha256=loaded.sha256,
                                                                 source_size=loaded.source_size), timings,
                               image=loaded.image))


def rekeyed(planned: PlannedJob, input_sha256: str, spec: RunSpec) -> PlannedJob:
    """The plan for the input as fetched now: an input that changed since it was planned (elsewhere,
    earlier) gets the key of the bytes actually rendered, so the entry never records another input's key."""
    if planned.input_sha256 == input_sha256:
        return planned
    material = key_material(planned.job, input_sha256, spec)
    return replace(planned, status="changed", reason="input image changed since it was planned",
                   key=material.key, material=material, input_sha256=input_sha256, prior=None, keys=None)


def fetch_failed(job: Job, error: JobError, session: PipelineSession | None) -> Failed:
    """A job whose input could not be read: it has no content key."""
    return Failed(job, None, InputRecord(uri=job.image, sha256=None, source_size=None), error, "fetch",
                  session.hardware_record(job.id) if session else None,
                  session.resolved_revision if session else None, Timings())


def render_failed(ticket: Ticket, error: Exception, session: PipelineSession | None) -> Failed:
    """A job the pipeline failed on; an unexpected exception is kept with its type in the message."""
    if not isinstance(error, SvdflowError):
        error = RenderError(f"job '{ticket.job.id}': the pipeline failed: {type(error).__name__}: {error}")
    return Failed(ticket.job, ticket.planned, ticket.input, error, "render",
                  session.hardware_record(ticket.job.id) if session else None,
                  session.resolved_revision if session else None, ticket.timings)
