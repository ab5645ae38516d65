"""The one pipeline of a run: loaded on first use, configured by the hardware profile, and
stepped down the memory ladder when a job runs out of GPU memory."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from svdflow.errors import RenderError
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.pipeline import render  # as a module: tests swap its functions
from svdflow.pipeline.overlap import DeferredDecode
from svdflow.pipeline.profiles import (
    DeviceFacts,
    ResolvedHardware,
    Shape,
    apply_hardware,
    compile_marker,
    configure_unet,
    job_shape,
    planned_steps_by_shape,
    requested_settings,
    resolve_hardware,
    torch_dtype,
)
from svdflow.run.progress import Reporter

# Offload hooks and compiled wrappers cannot be cleanly taken off a pipeline: changing these means
# loading it again. Feed-forward chunking and sequential CFG switch in place.
_RELOAD_SETTINGS = ("offload", "compile", "dtype", "device")


class Outcome(Protocol):
    """Where a submitted job's result goes (the run's writer)."""

    def done(self, frames: np.ndarray, timings: dict[str, float], hardware: dict[str, Any] | None) -> None: ...

    def failed(self, exc: Exception) -> None: ...


@dataclass
class _Pending:
    job: Job
    image: Any
    outcome: Outcome
    denoise_s: float
    hardware: dict[str, Any] | None  # the settings it was denoised with
    decode: DeferredDecode | None
    settled: bool = False


class PipelineSession:
    def __init__(self, spec: RunSpec, jobs: Sequence[Job], reporter: Reporter | None = None,
                 facts: DeviceFacts | None = None):
        self.spec = spec
        self.reporter = reporter or Reporter()
        self._steps_by_shape = planned_steps_by_shape(jobs)
        self._facts = facts
        self.hardware: ResolvedHardware | None = None
        self.pipe = None
        self.resolved_revision: str | None = None
        self.oom_retries: list[dict[str, Any]] = []
        self._pending: _Pending | None = None  # the job whose decode waits for the next job's steps
        self._marked: set[Shape] = set()  # shapes whose compile marker this run wrote

    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    def resolve(self) -> ResolvedHardware:
        if self.hardware is None:
            facts = self._facts = self._facts or DeviceFacts.probe()
            warm = [shape for shape in self._steps_by_shape if self._compile_marker(facts, shape).exists()] \
                if facts.cuda_count else []
            self.hardware = resolve_hardware(self.spec.hardware, facts, planned_unet_steps=self._steps_by_shape,
                                             compile_cache_warm=warm)
            requested = self.spec.hardware
            if requested.profile == "auto" or requested_settings(requested, self.hardware.profile)["compile"] == "auto":
                self.reporter.note(f"hardware: profile {self.hardware.profile}, compile "
                                   f"{'on' if self.hardware.compile else 'off'} ({self.hardware.reason})")
        return self.hardware

    def load(self) -> None:
        """Load and place the pipeline (DeviceError / ModelLoadError propagate: they end the run)."""
        from svdflow.pipeline.models import ModelSpec, load_pipeline, resolved_revision

        hardware = self.resolve()
        model = self.spec.model
        spec = ModelSpec(model.source, model.revision, model.variant)
        pipe = load_pipeline(spec, torch_dtype=torch_dtype(hardware.dtype),
                             manifest_dir=str(self.spec.manifest_path.parent))
        pipe.set_progress_bar_config(disable=True)
        self.pipe = apply_hardware(pipe, hardware)
        self.resolved_revision = resolved_revision(pipe, spec)

    def hardware_json(self, job_id: str | None = None) -> dict[str, Any] | None:
        """The settings in use, with the out-of-memory retries: `job_id`'s only, or all of the run's."""
        if self.hardware is None:
            return None
        retries = [r for r in self.oom_retries if job_id is None or r["job"] == job_id]
        return {**self.hardware.to_json(), "oom_retries": retries}

    def render(self, job: Job, image, on_step: Callable[[int, int], None] | None = None):
        """Render one job now, denoise and decode, down the memory ladder if need be; its frames."""
        if self.pipe is None:
            self.load()
        while True:
            started = time.perf_counter()
            try:
                frames = render.render_frames(self.pipe, image, job.params,
                                              decode_chunk_size=self.hardware.decode_chunk_size,
                                              on_step=on_step, cpu_threads=self.hardware.cpu_threads)
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                error = _oom_text(exc)
                # Leaving the except block drops the traceback, whose frames hold the failed
                # attempt's activations: step down only after that, or the retry starts half full.
            else:
                self._note_success(job, started)
                return frames
            self._step_down(job, error, time.perf_counter() - started)

    def submit(self, job: Job, image, outcome: Outcome, on_step: Callable[[int, int], None] | None = None) -> None:
        """Render one job; its frames go to `outcome.done`.

        Without overlap_decode that happens before this returns. With it, this returns once the job
        is denoised, and its decode runs during the next submit (or flush()). An error of this job
        raises, as render() does; an error in an earlier job's deferred decode goes to that job's
        outcome, never to this one.
        """
        started = time.perf_counter()  # the first job's time includes loading the model
        if self.pipe is None:
            self.load()
        if not self.hardware.overlap_decode:
            self.flush()
            frames = self.render(job, image, on_step)
            outcome.done(frames, {"render_s": time.perf_counter() - started}, self.hardware_json(job.id))
            return
        previous, self._pending = self._pending, None
        try:
            latents = self._denoise(job, image, on_step, previous)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                self._settle(previous)
                raise
            error = _oom_text(exc)
        except BaseException:  # Ctrl-C: the job denoised before this one is still decoded and kept
            self._settle(previous)
            raise
        else:
            self._note_success(job, started)
            # Taken before the previous job settles: a failed decode there may step the ladder down.
            pending = _Pending(job, image, outcome, time.perf_counter() - started, self.hardware_json(job.id),
                               DeferredDecode(lambda: self.pipe, latents, job.params["num_frames"],
                                              self.hardware.decode_chunk_size))
            self._settle(previous)
            self._pending = pending
            return
        # Out of memory. Out of the except block the failed attempt's activations are freed, so the
        # previous job's decode has the room back before this one steps down and runs again.
        self._settle(previous)
        self._step_down(job, error, time.perf_counter() - started)
        self.submit(job, image, outcome, on_step)  # one rung lower, where overlap may be off

    def flush(self) -> None:
        """Finish the deferred decode, if any: its frames (or its error) go to its job's outcome."""
        pending, self._pending = self._pending, None
        self._settle(pending)

    def _denoise(self, job: Job, image, on_step, previous: _Pending | None):
        """This job's final latents; on its step callbacks, the previous job's decode is launched
        (from the first step on: the pipeline's VAE casts are behind us) and handed over when done."""
        def step(done: int, total: int) -> None:
            nonlocal previous
            if previous is not None:
                previous.decode.launch()
                if previous.decode.ready():
                    self._settle(previous)
                    previous = None
            if on_step is not None:
                on_step(done, total)

        with render.torch_threads(self.hardware.cpu_threads):
            return render.denoise_latents(self.pipe, image, job.params, on_step=step)

    def _settle(self, pending: _Pending | None) -> None:
        """Deliver a deferred decode's frames, waiting for them if need be. A decode that failed
        is not this job's end: out of memory (beside the next job's UNet) steps the ladder down,
        which turns overlap off first, and the job is rendered again in full, where nothing else
        runs; anything else fails the job."""
        if pending is None or pending.settled:
            return
        pending.settled = True
        try:
            # Outside a step callback (flush, the end of the next call) the decode may run here: on a
            # CPU with the run's thread count, or its bytes would differ from a plain render's.
            with render.torch_threads(self.hardware.cpu_threads):
                frames = pending.decode.result()
        except Exception as exc:
            if not _is_out_of_memory(exc):
                pending.outcome.failed(exc)
                return
            error = _oom_text(exc)
        else:
            pending.outcome.done(frames, {"render_s": pending.denoise_s + pending.decode.main_thread_s,
                                          "decode_s": pending.decode.main_thread_s}, pending.hardware)
            return
        failed_after_s, pending.decode = pending.decode.main_thread_s, None  # drop its latents first
        started = time.perf_counter()
        try:
            self._step_down(pending.job, error, failed_after_s)
            frames = self.render(pending.job, pending.image)
        except Exception as exc:
            pending.outcome.failed(exc)
        else:
            pending.outcome.done(frames, {"render_s": pending.denoise_s + time.perf_counter() - started},
                                 self.hardware_json(pending.job.id))

    def _note_success(self, job: Job, started: float) -> None:
        if self.oom_retries and self.oom_retries[-1]["job"] == job.id and "succeeded_s" not in self.oom_retries[-1]:
            self.oom_retries[-1]["succeeded_s"] = round(time.perf_counter() - started, 3)
        self._mark_compiled(job)

    def _step_down(self, job: Job, error: str, failed_after_s: float) -> None:
        lower = self.hardware.lower_memory()
        if lower is None:
            raise RenderError(f"job '{job.id}': out of GPU memory even at the bottom of the memory ladder "
                              f"({_describe(self.hardware)}; {error}); lower width/height/num_frames or free the GPU")
        changed = _changes(self.hardware, lower)
        difference = ", ".join(f"{name}={value}" for name, value in changed.items())
        self.oom_retries.append({"job": job.id, "error": error, "failed_after_s": round(failed_after_s, 3),
                                 "changed": difference, "from": self.hardware.to_json(), "to": lower.to_json()})
        self.reporter.note(f"{job.id}: out of GPU memory; retrying with {difference}")
        # A compiled UNet would recompile for a changed forward anyway: load it fresh instead.
        reload = bool(changed.keys() & set(_RELOAD_SETTINGS)) or (
            self.hardware.compile and bool(changed.keys() & {"forward_chunking", "sequential_cfg"}))
        self.hardware = lower
        if reload:
            self.pipe = None
            _free_device_memory()
            self.load()
        else:
            configure_unet(self.pipe.unet, lower)
            _free_device_memory()

    def _compile_marker(self, facts: DeviceFacts, shape):
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
        self._marked.add(shape)  # once per shape and run: the marker only has to exist
        try:
            marker = self._compile_marker(self._facts, shape)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # only a hint for the next run's compile decision


def _free_device_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _changes(before: ResolvedHardware, after: ResolvedHardware) -> dict[str, Any]:
    """The settings `after` changes, with their new values (why auto chose is no setting)."""
    old, new = before.to_json(), after.to_json()
    return {k: new[k] for k in new if new[k] != old[k] and k != "reason"}


def _describe(hw: ResolvedHardware) -> str:
    return (f"offload={hw.offload}, forward_chunking={hw.forward_chunking}, sequential_cfg={hw.sequential_cfg}, "
            f"decode_chunk_size={hw.decode_chunk_size}")


def _oom_text(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _is_out_of_memory(exc: Exception) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
