"""A job's index entry, built from what the run knows of it; and encoding a job's files, from its
rendered frames or from its master.

`finish_rendered` is what every engine does with a job's frames (files, master, provenance, entry):
the local writer thread, and a Ray worker that writes the files itself and sends the entry back to
the driver. `finish_reencoded` is its counterpart for a job whose pixels are unchanged. Both keep
the rendered frames in the master and make the files of them the same way: loop, then interpolate
(`svdflow.outputs.post`), then encode.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, replace

from svdflow import RENDER_VERSION, __version__
from svdflow.errors import MasterError, OutputWriteError
from svdflow.hardware import HardwareRecord
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import (
    ErrorRecord,
    IndexEntry,
    InputRecord,
    MasterRecord,
    ModelRecord,
    OutputFile,
    OutputSettings,
    Provenance,
    RunRecord,
    SegmentRecord,
    Timings,
)
from svdflow.outputs.masters import read_master, remove_master, write_master
from svdflow.outputs.ownership import names_in_the_way
from svdflow.outputs.post import post_process
from svdflow.outputs.store import OutputStore
from svdflow.outputs.writers import WrittenOutput, output_path, write_outputs
from svdflow.quality.record import QualityRecord
from svdflow.run.keys import frames_sha256
from svdflow.run.messages import Failed, Reencode, Rendered
from svdflow.run.planning import PlannedJob


def collect_versions() -> dict[str, str]:
    """Versions that can change pixels. Read from package metadata: importing torch and diffusers
    just to ask would cost a rerun with nothing to render ~7 s."""
    from importlib.metadata import version

    return {"svdflow": __version__, "render_version": RENDER_VERSION, "torch": version("torch"),
            "diffusers": version("diffusers"), "transformers": version("transformers"),
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


@dataclass(frozen=True)
class EntryContext:
    """What every entry of a run shares."""

    spec: RunSpec
    versions: dict[str, str]

    @classmethod
    def of(cls, spec: RunSpec) -> EntryContext:
        return cls(spec, collect_versions())

    def model(self, resolved_revision: str | None) -> ModelRecord:
        return ModelRecord(**self.spec.model.model_dump(), resolved_revision=resolved_revision)

    def output_settings(self) -> OutputSettings:
        spec = self.spec
        return OutputSettings(formats=list(spec.formats), crf=spec.crf, prores_profile=spec.prores_profile,
                              masters=spec.masters)

    def entry(self, job: Job, planned: PlannedJob | None, input: InputRecord, *, status: str, model: ModelRecord,
              hardware: HardwareRecord | None, timings: Timings, outputs: list[OutputFile] | None = None,
              master: MasterRecord | None = None, frames_sha256: str | None = None, error: ErrorRecord | None = None,
              encoded_from: str = "render", versions: dict[str, str] | None = None,
              segments: list[SegmentRecord] | tuple[SegmentRecord, ...] = (),
              quality: QualityRecord | None = None) -> IndexEntry:
        material = planned.material if planned else None
        now = time.time()
        return IndexEntry(
            id=job.id, item_id=job.item_id, status=status, key=material.key if material else None,
            render_key=material.render_key if material else None,
            output_key=material.output_key if material else None, key_material=material,
            params=job.params, seed=job.seed, seed_origin=job.seed_origin, sweep=job.sweep, input=input,
            model=model, hardware=hardware, outputs=outputs or [], master=master, encoded_from=encoded_from,
            frames_sha256=frames_sha256, output=self.output_settings(), timings=timings,
            segments=list(segments), quality=quality, versions=versions or self.versions, error=error,
            run=RunRecord(name=self.spec.name, manifest=str(self.spec.manifest_path)),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), finished_unix=now)

    def failed(self, message: Failed) -> IndexEntry:
        return self.entry(message.job, message.planned, message.input, status="failed",
                          model=self.model(message.resolved_revision), hardware=message.hardware,
                          timings=message.timings, error=_error(message.error, message.stage))


def finish_rendered(message: Rendered, context: EntryContext, quality: QualityRecord | None = None) -> IndexEntry:
    """Encode a rendered job's files (and its master) into the output folder, each carrying the job's
    provenance (its `quality` too: svdflow.run.qc scores and judges the frames first), and return its
    entry (failed, with the reason, when encoding or writing failed). The entry's keys are the job's as
    planned; its params and seed are the attempt's that rendered the frames (a re-roll's), so that
    `rerender` makes these frames again."""
    spec, ticket = context.spec, message.ticket
    job = ticket.job
    timings = ticket.timings.model_copy(update={"render_s": message.render_s, "decode_s": message.decode_s})
    started = time.perf_counter()
    made = {"model": context.model(message.resolved_revision), "hardware": message.hardware,
            "frames_sha256": frames_sha256(message.frames), "segments": message.segments, "quality": quality}
    draft = context.entry(job, ticket.planned, ticket.input, status="done", timings=Timings(), **made)
    provenance = Provenance.of(draft).to_text()
    store = OutputStore(spec.output_dir)
    try:
        refuse_foreign_files(store, spec, job, ticket.planned.owned)
        master = None
        if spec.masters:
            master = write_master(message.frames, store, job.id, fps=job.params.fps, provenance=provenance)
        else:
            remove_master(store, job.id)
        written, post_s = _write(message.frames, spec, job, provenance)
    except OutputWriteError as exc:
        return context.entry(job, ticket.planned, ticket.input, status="failed", timings=_rounded(timings),
                             error=_error(exc, "encode"), model=made["model"], hardware=message.hardware)
    encode_s = time.perf_counter() - started
    timings = timings.model_copy(update={
        "post_s": post_s, "encode_s": encode_s, "total_s": (timings.fetch_s or 0.0) + message.render_s + encode_s})
    return context.entry(job, ticket.planned, ticket.input, status="done", timings=_rounded(timings),
                         outputs=_files(written), master=master, **made)


def finish_reencoded(message: Reencode, context: EntryContext) -> IndexEntry:
    """Encode a job's files again from its master (its pixels are unchanged) and return its entry: the
    recorded render's model, hardware, versions and frames, with this run's output settings and files.
    Failed, with the reason, when the master does not give back the recorded frames: the next run
    renders the job again."""
    spec, ticket, recorded = context.spec, message.ticket, message.recorded
    # The recorded frames are its kept attempt's: a re-rolled job keeps that attempt's seed.
    job = replace(ticket.job, params=ticket.job.params.model_copy(update={"seed": recorded.seed}))
    started = time.perf_counter()
    made = {"model": recorded.model, "hardware": recorded.hardware, "versions": recorded.versions,
            "segments": recorded.segments}
    store = OutputStore(spec.output_dir)
    try:
        refuse_foreign_files(store, spec, job, ticket.planned.owned)
        frames = read_master(store, recorded.master, job.params.width, job.params.height)
        if frames_sha256(frames) != recorded.frames_sha256:
            raise MasterError(f"master {recorded.master.file} does not hold the recorded frames (sha256 "
                              f"{frames_sha256(frames)[:12]}, recorded {str(recorded.frames_sha256)[:12]})")
        draft = context.entry(job, ticket.planned, ticket.input, status="done", timings=Timings(),
                              master=recorded.master, frames_sha256=recorded.frames_sha256, encoded_from="master",
                              quality=recorded.quality, **made)
        written, post_s = _write(frames, spec, job, Provenance.of(draft).to_text())
    except (MasterError, OutputWriteError) as exc:
        if isinstance(exc, MasterError):
            exc = MasterError(f"job '{job.id}': {exc}; run again to render it")
        return context.entry(job, ticket.planned, ticket.input, status="failed", timings=_rounded(ticket.timings),
                             error=_error(exc, "encode"), **made)
    encode_s = time.perf_counter() - started
    timings = ticket.timings.model_copy(update={"post_s": post_s, "encode_s": encode_s,
                                                "total_s": (ticket.timings.fetch_s or 0.0) + encode_s})
    return context.entry(job, ticket.planned, ticket.input, status="done", timings=_rounded(timings),
                         outputs=_files(written), master=recorded.master, frames_sha256=recorded.frames_sha256,
                         encoded_from="master", quality=recorded.quality, **made)


def refuse_foreign_files(store: OutputStore, spec: RunSpec, job: Job, owned: tuple[str, ...]) -> None:
    """OutputWriteError when a file svdflow did not write has one of the job's names: it is left alone."""
    names = [os.path.basename(output_path(spec.output_dir, job.id, fmt)) for fmt in spec.formats] + [f"{job.id}.json"]
    in_the_way = names_in_the_way(store, job.id, names, owned)
    if in_the_way:
        these = "it" if len(in_the_way) == 1 else "them"
        raise OutputWriteError(
            f"job '{job.id}': {', '.join(in_the_way)} in {spec.output_dir} {'is' if len(in_the_way) == 1 else 'are'} "
            f"not svdflow's (no record of this job lists {these}), so svdflow leaves {these} alone; move or rename "
            f"{these}, or give the item another id")


def _write(frames, spec: RunSpec, job: Job, provenance: str) -> tuple[list[WrittenOutput], float | None]:
    """The job's files, made of its rendered frames (looped, interpolated), and the seconds that took
    (None when there was nothing to do)."""
    started = time.perf_counter()
    clip = post_process(frames, job.params)
    post_s = time.perf_counter() - started if clip is not frames else None
    return write_outputs(clip, spec.output_dir, job.id, spec.formats, playback_fps=job.params.playback_fps,
                         crf=spec.crf, prores_profile=spec.prores_profile, provenance=provenance,
                         make_folder=False), post_s


def _files(written: list[WrittenOutput]) -> list[OutputFile]:
    return [OutputFile(format=w.format, file=os.path.basename(w.path.rstrip("/")), sha256=w.sha256, bytes=w.bytes)
            for w in written]


def _error(exc: Exception, stage: str) -> ErrorRecord:
    return ErrorRecord(type=type(exc).__name__, message=str(exc), stage=stage)


def _rounded(timings: Timings) -> Timings:
    return Timings(**{k: round(v, 4) for k, v in timings.model_dump().items() if v is not None})
