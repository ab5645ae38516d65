"""How a run's jobs come out of the pipeline: one at a time (`PlainRenderer`), or each job's decode
overlapped with the next job's denoising (`OverlappedRenderer`, `hardware.overlap_decode`; a job of
several chained segments goes through it plainly). Both take jobs through `submit` and hand each
job's frames, or its failure, to that job's sink.
"""

from __future__ import annotations

from typing import Protocol

from svdflow.manifest.resolve import Job
from svdflow.pipeline.segments import SegmentCallback
from svdflow.pipeline.session import JobSink, PipelineSession, StepCallback, render_job


class Renderer(Protocol):
    def submit(self, job: Job, image, sink: JobSink, on_step: StepCallback | None = None,
               on_segment: SegmentCallback | None = None) -> None:
        """Render `job`; its frames go to `sink.done`, now or (overlapped) during the next submit. An
        error of this job raises; an error of an earlier job's deferred work goes to that job's sink."""

    def finish(self) -> None:
        """Deliver whatever is still deferred."""


class PlainRenderer:
    """Denoise, decode, deliver: each job done before the next starts."""

    def __init__(self, session: PipelineSession):
        self.session = session

    def submit(self, job: Job, image, sink: JobSink, on_step: StepCallback | None = None,
               on_segment: SegmentCallback | None = None) -> None:
        sink.done(render_job(self.session, job, image, on_step, on_segment))

    def finish(self) -> None:
        pass


def make_renderer(session: PipelineSession) -> Renderer:
    """The renderer the session's hardware asks for (resolving it, without loading the model)."""
    if session.resolve().overlap_decode:
        from svdflow.pipeline.overlap import OverlappedRenderer

        return OverlappedRenderer(session)
    return PlainRenderer(session)
