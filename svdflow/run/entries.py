"""A job's index entry, built from what the run knows of it; and encoding a rendered job's files.

`finish_rendered` is what every engine does with a job's frames: the local writer thread, and a Ray
worker that writes the files itself and sends the entry back to the driver.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

from svdflow import RENDER_VERSION, __version__
from svdflow.errors import OutputWriteError
from svdflow.manifest.resolve import RunSpec
from svdflow.outputs.entry import (
    ErrorRecord,
    IndexEntry,
    ModelRecord,
    OutputFile,
    OutputSettings,
    RunRecord,
    Timings,
)
from svdflow.outputs.writers import write_outputs
from svdflow.run.keys import frames_sha256
from svdflow.run.messages import Failed, Rendered


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

    def entry(self, message: Rendered | Failed, **fields) -> IndexEntry:
        ticket = message.ticket if isinstance(message, Rendered) else None
        job = ticket.job if ticket else message.job
        planned = ticket.planned if ticket else message.planned
        now = time.time()
        return IndexEntry(
            id=job.id, item_id=job.item_id, status=fields.pop("status"),
            key=planned.key if planned else None, key_material=planned.material if planned else None,
            params=job.params, seed=job.seed, seed_origin=job.seed_origin, sweep=job.sweep,
            input=ticket.input if ticket else message.input, model=self.model(message.resolved_revision),
            hardware=message.hardware, outputs=fields.pop("outputs", []),
            frames_sha256=fields.pop("frames_sha256", None),
            output=OutputSettings(formats=list(self.spec.formats), crf=self.spec.crf),
            timings=fields.pop("timings"), versions=self.versions, error=fields.pop("error", None),
            run=RunRecord(name=self.spec.name, manifest=str(self.spec.manifest_path)),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), finished_unix=now)

    def failed(self, message: Failed) -> IndexEntry:
        return self.entry(message, status="failed", timings=message.timings,
                          error=ErrorRecord(type=type(message.error).__name__, message=str(message.error),
                                            stage=message.stage))


def finish_rendered(message: Rendered, context: EntryContext) -> IndexEntry:
    """Encode a rendered job's files into the output folder and return its entry (failed, with the
    reason, when encoding or writing failed)."""
    spec, ticket = context.spec, message.ticket
    timings = ticket.timings.model_copy(update={"render_s": message.render_s, "decode_s": message.decode_s})
    started = time.perf_counter()
    try:
        written = write_outputs(message.frames, spec.output_dir, ticket.job.id, spec.formats,
                                playback_fps=ticket.job.params.playback_fps, crf=spec.crf,
                                comment=f"svdflow key={ticket.planned.key}")
    except OutputWriteError as exc:
        return context.entry(message, status="failed", timings=_rounded(timings),
                             error=ErrorRecord(type=type(exc).__name__, message=str(exc), stage="encode"))
    encode_s = time.perf_counter() - started
    timings = timings.model_copy(update={
        "encode_s": encode_s, "total_s": (timings.fetch_s or 0.0) + message.render_s + encode_s})
    outputs = [OutputFile(format=w.format, file=os.path.basename(w.path.rstrip("/")), sha256=w.sha256, bytes=w.bytes)
               for w in written]
    return context.entry(message, status="done", outputs=outputs,
                         frames_sha256=frames_sha256(message.frames), timings=_rounded(timings))


def _rounded(timings: Timings) -> Timings:
    return Timings(**{k: round(v, 4) for k, v in timings.model_dump().items() if v is not None})
