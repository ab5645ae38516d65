"""What the render loop tells the writer, one typed message per job: the writer owns the index and
every job's status, so each job's outcome reaches it as exactly one of these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from svdflow.errors import SvdflowError
from svdflow.hardware import HardwareRecord
from svdflow.manifest.resolve import Job
from svdflow.outputs.entry import IndexEntry, InputRecord, SegmentRecord, Timings
from svdflow.run.planning import PlannedJob, Prior


@dataclass(frozen=True)
class Ticket:
    """A job the run decided to render, with what it knows of it before the pipeline runs."""

    job: Job  # what renders: the job as planned, or one of its re-roll attempts (its seed replaced)
    planned: PlannedJob  # planned.job is the job as requested: its keys are the entry's
    input: InputRecord
    timings: Timings  # fetch_s and input_wait_s so far
    # The input as the model is conditioned on it (resized to the clip): rendered from, and scored
    # against. None where nothing renders (a re-encode).
    image: Image.Image | None = None
    attempt: int = 0  # 0: the job's own seed; n: its n-th re-roll (svdflow.quality.rerolls)
    # What the record holds of a job whose recorded attempts were re-judged (svdflow.run.qc.Prior):
    # its re-rolls go on from there.
    prior: Prior | None = None


@dataclass(frozen=True)
class Rendered:
    """A job's frames, to be encoded and recorded."""

    ticket: Ticket
    frames: np.ndarray  # uint8 (T, H, W, 3): the rendered frames (a chained job's segments joined)
    hardware: HardwareRecord
    resolved_revision: str | None  # the model commit the session loaded
    render_s: float
    decode_s: float | None = None
    segments: tuple[SegmentRecord, ...] = ()  # a chained job's clips (RenderedFrames.segments)


@dataclass(frozen=True)
class Failed:
    """A job that failed before it had frames: its input, or the pipeline."""

    job: Job
    planned: PlannedJob | None  # None when its input could not be read (no content key)
    input: InputRecord
    error: SvdflowError
    stage: Literal["fetch", "render"]
    hardware: HardwareRecord | None
    resolved_revision: str | None
    timings: Timings


@dataclass(frozen=True)
class Reencode:
    """A job whose pixels are unchanged but whose files must be encoded again, from its master."""

    ticket: Ticket
    recorded: IndexEntry  # the done entry whose master and render the files are made from


@dataclass(frozen=True)
class UpToDate:
    """A job whose recorded outputs match its content key: nothing to do."""

    job: Job
    qc_passed: bool | None = None  # its record's qc verdict


@dataclass(frozen=True)
class UpToDateRun:
    """Consecutive jobs of a local run found up to date before any input was read, in one message:
    a rerun of 100,000 finished jobs hands the writer a few hundred messages, not 100,000 (each a
    handoff between threads)."""

    jobs: tuple[tuple[Job, bool | None, int], ...]  # each with its record's qc verdict (UpToDate.qc_passed) and number
    total: int  # the run's jobs (each job's number is of these)


@dataclass(frozen=True)
class Finished:
    """A job whose entry is made already (by a cluster worker, which wrote its files): only to record."""

    entry: IndexEntry
    worker: str | None = None  # the cluster worker that rendered it
    rejudged: bool = False  # its recorded files were kept with a new qc verdict: nothing written


@dataclass(frozen=True)
class Rejudged:
    """A job whose recorded scores were judged against changed thresholds and kept as they are: its
    files stay, its entry is recorded again with the new verdict."""

    entry: IndexEntry


Message = Rendered | Reencode | Failed | UpToDate | UpToDateRun | Finished | Rejudged
