"""The one pipeline of a process: loaded on first use, configured by the resolved hardware, stepped
down the memory ladder when a job runs out of GPU memory; and `render_job`, one job through it.

`render_job` is the per-job function every engine calls: the local executor's render loop, and a
Ray worker on another machine. It needs a job, its loaded input image and a session, nothing else;
a job of several chained segments (svdflow.pipeline.segments) is rendered whole by it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from svdflow.errors import RenderError
from svdflow.hardware import (
    DeviceFacts,
    HardwareRecord,
    OomRetry,
    ResolvedHardware,
    Shape,
    job_shape,
    planned_steps_by_shape,
    requested_settings,
    resolve_hardware,
)
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import SegmentRecord
from svdflow.pipeline import render  # as a module: tests swap its functions
from svdflow.pipeline.ladder import is_out_of_memory, needs_reload, next_rung, oom_text
from svdflow.pipeline.process_state import ProcessChanges
from svdflow.pipeline.segments import SegmentCallback, render_segments
from svdflow.settings import load_settings

StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class RenderedFrames:
    """One job's frames and what it took."""

    frames: np.ndarray  # uint8 (T, H, W, 3); a chained job's segments joined
    hardware: HardwareRecord  # the settings it was rendered with, and any out-of-memory retries
    render_s: float  # denoise + decode (the first job of a session: loading the model too)
    decode_s: float | None = None  # with overlap_decode: what the decode cost the render thread
    segments: tuple[SegmentRecord, ...] = ()  # a chained job's clips: seeds and times (none for one clip)


class JobSink(Protocol):
    """Where one job's result goes (the run's writer), from a renderer (svdflow.pipeline.renderers)."""

    def done(self, result: RenderedFrames) -> None: ...

    def failed(self, error: Exception) -> None: ...


def render_job(session: PipelineSession, job: Job, image, on_step: StepCallback | None = None,
               on_segment: SegmentCallback | None = None) -> RenderedFrames:
    """Render one job now, denoise and decode (each of its segments), down the memory ladder if need
    be. `on_step(done, total)` follows each segment's steps; `on_segment(k, n)` is said before segment
    k of n of a chained job."""
    started = time.perf_counter()

    def render_one(params, segment_image):
        return session.render(replace(job, params=params), segment_image, on_step)

    frames, segments = render_segments(render_one, job.params, image, on_segment)
    return RenderedFrames(frames, session.hardware_record(job.id), time.perf_counter() - started, segments=segments)


class PipelineSession:
    """Owns the pipeline, the hardware it runs with, the out-of-memory retries, and the process-wide
    settings applying that hardware changed (restored by close())."""

    def __init__(self, spec: RunSpec, jobs: Sequence[Job], note: Callable[[str], None] | None = None,
                 facts: DeviceFacts | None = None, local_rank: int = 0):
        self.spec = spec
        self.note = note or (lambda text: None)  # where the session says what it chose or retried
        self.local_rank = local_rank
        self._steps_by_shape = planned_steps_by_shape(jobs)
        self._facts = facts
        self.hardware: ResolvedHardware | None = None
        self.pipe = None
        self.resolved_revision: str | None = None
        self.oom_retries: list[OomRetry] = []
        self._marked: set[Shape] = set()  # shapes whose compile marker this session wrote
        self._changes = ProcessChanges()

    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    def resolve(self) -> ResolvedHardware:
        if self.hardware is None:
            from svdflow.pipeline.device import probe

            settings = load_settings()
            facts = self._facts = self._facts or probe()
            warm = [shape for shape in self._steps_by_shape if self._compile_marker(facts, shape).exists()] \
                if facts.cuda_count else []
            self.hardware = resolve_hardware(self.spec.hardware, facts, planned_unet_steps=self._steps_by_shape,
                                             compile_cache_warm=warm, cpu_threads=settings.cpu_threads,
                                             local_rank=self.local_rank)
            requested = self.spec.hardware
            if requested.profile == "auto" or requested_settings(requested, self.hardware.profile)["compile"] == "auto":
                self.note(f"hardware: profile {self.hardware.profile}, compile "
                          f"{'on' if self.hardware.compile else 'off'} ({self.hardware.reason})")
        return self.hardware

    def load(self) -> None:
        """Load and place the pipeline (DeviceError / ModelLoadError propagate: they end the run)."""
        from svdflow.pipeline.apply import apply_hardware
        from svdflow.pipeline.device import torch_dtype
        from svdflow.pipeline.models import ModelSpec, load_pipeline, resolved_revision

        hardware = self.resolve()
        model = self.spec.model
        spec = ModelSpec(model.source, model.revision, model.variant)
        pipe = load_pipeline(spec, torch_dtype=torch_dtype(hardware.dtype),
                             manifest_dir=str(self.spec.manifest_path.parent))
        if hardware.device.startswith("cuda") and hardware.attention_backend is None and self._steps_by_shape:
            from svdflow.pipeline.attention import choose_attention_backend

            # Timed on the first shape this session renders (runs are grouped by shape).
            first_shape = next(iter(self._steps_by_shape))
            hardware = self.hardware = hardware.replace(
                attention_backend=choose_attention_backend(pipe.unet, hardware.device, first_shape))
        self.pipe = apply_hardware(pipe, hardware, self._changes)
        self.resolved_revision = resolved_revision(pipe, spec)

    def close(self) -> None:
        """Drop the pipeline and put back every process-wide setting it changed."""
        self.pipe = None
        self._changes.restore()

    def hardware_record(self, job_id: str | None = None) -> HardwareRecord | None:
        """The settings in use, with the out-of-memory retries: `job_id`'s only, or all of the session's."""
        if self.hardware is None:
            return None
        retries = [r for r in self.oom_retries if job_id is None or r.job == job_id]
        return HardwareRecord(**self.hardware.to_json(), oom_retries=retries)

    def render(self, job: Job, image, on_step: StepCallback | None = None) -> np.ndarray:
        """One job's frames, denoised and decoded now, down the memory ladder if need be."""
        if self.pipe is None:
            self.load()
        while True:
            started = time.perf_counter()
            try:
                frames = render.render_frames(self.pipe, image, job.params,
                                              decode_chunk_size=self.hardware.decode_chunk_size,
                                              on_step=on_step, cpu_threads=self.hardware.cpu_threads)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                error = oom_text(exc)
                # Leaving the except block drops the traceback, whose frames hold the failed
                # attempt's activations: step down only after that, or the retry starts half full.
            else:
                self.note_success(job, started)
                return frames
            self.step_down(job, error, time.perf_counter() - started)

    def denoise(self, job: Job, image, on_step: StepCallback | None = None):
        """One job's final latents, no decode, no retry (the overlapped renderer steps down itself)."""
        if self.pipe is None:
            self.load()
        with render.torch_threads(self.hardware.cpu_threads):
            return render.denoise_latents(self.pipe, image, job.params, on_step=on_step)

    def note_success(self, job: Job, started: float) -> None:
        last = self.oom_retries[-1] if self.oom_retries else None
        if last is not None and last.job == job.id and last.succeeded_s is None:
            self.oom_retries[-1] = last.model_copy(update={"succeeded_s": round(time.perf_counter() - started, 3)})
        self._mark_compiled(job)

    def step_down(self, job: Job, error: str, failed_after_s: float) -> None:
        """One rung down the ladder after `job` ran out of memory; RenderError at the bottom."""
        from svdflow.pipeline.apply import configure_unet
        from svdflow.pipeline.device import free_device_memory

        lower = next_rung(self.hardware)
        if lower is None:
            raise RenderError(f"job '{job.id}': out of GPU memory even at the bottom of the memory ladder "
                              f"({self.hardware.describe()}; {error}); lower width/height/num_frames or free the GPU")
        changed = self.hardware.changes_to(lower)
        difference = ", ".join(f"{name}={value}" for name, value in changed.items())
        self.oom_retries.append(OomRetry(job=job.id, error=error, failed_after_s=round(failed_after_s, 3),
                                         changed=difference, from_=self.hardware, to=lower))
        self.note(f"{job.id}: out of GPU memory; retrying with {difference}")
        reload = needs_reload(self.hardware, changed)
        self.hardware = lower
        if reload:
            self.pipe = None
            free_device_memory()
            self.load()
        else:
            configure_unet(self.pipe.unet, lower)
            free_device_memory()

    def _compile_marker(self, facts: DeviceFacts, shape: Shape):
        from svdflow.pipeline.compile import compile_marker

        # The same key when looking up (before the hardware is resolved) and when marking.
        model, hardware = self.spec.model, self.spec.hardware
        dtype = "float16" if hardware.dtype == "auto" else hardware.dtype
        gpu = next(iter(facts.names.values()), "cuda")
        return compile_marker(f"{model.source}@{model.revision}:{model.variant}", dtype, gpu, shape)

    def _mark_compiled(self, job: Job) -> None:
        """Remember that this shape compiled here, so a later run's `compile: auto` counts it as warm."""
        shape = job_shape(job.params)
        if not self.hardware.compile or shape in self._marked:
            return
        self._marked.add(shape)  # once per shape and session: the marker only has to exist
        try:
            marker = self._compile_marker(self._facts, shape)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # only a hint for the next run's compile decision
