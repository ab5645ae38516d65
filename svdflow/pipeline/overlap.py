"""One job's VAE decode, run while the next job denoises (`hardware.overlap_decode`).

A job is two independent halves: the denoising loop (UNet) and the VAE decode of its final
latents. With overlap, the decode of job N is queued on a second CUDA stream from a step callback
of job N+1, so its kernels run in what N+1's UNet leaves of the GPU, and the main thread never
waits for it: later steps poll an event, and the frames go to the writer once they are on the host.

Why from a step callback and not as soon as job N's loop ends: every pipeline call casts the
shared VAE to float32 for its image encode and back before its loop starts. A decode in flight
across that cast would read half-cast weights. Queued after the next call's first step, it starts
after that cast, and the session settles it (waits for its frames) before the call after that
begins. The side stream also waits for the main stream at that point, because the cast's kernels
(the VAE's float16 weights) are queued there.

A job of several chained segments is rendered plainly (render_job), after the deferred decode is
delivered: each of its segments starts from the previous one's decoded last frame, so none of its
decodes can wait for the next job.

On a CPU there is nothing to overlap: launch() decodes at once, inside the same callback. The order
of events is the same as on a GPU, which is what the CPU tests check; the frames are the bytes a
plain render gives (the same operations, just queued elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from svdflow.hardware import HardwareRecord
from svdflow.manifest.resolve import Job
from svdflow.pipeline import render  # as a module: tests swap its functions
from svdflow.pipeline.ladder import is_out_of_memory, oom_text
from svdflow.pipeline.render import decode_to_device_uint8, torch_threads
from svdflow.pipeline.segments import SegmentCallback
from svdflow.pipeline.session import JobSink, PipelineSession, RenderedFrames, StepCallback, render_job


class DeferredDecode:
    """The final latents of a denoised job and, once launched, their decode to uint8 frames."""

    def __init__(self, pipe: Callable[[], Any], latents, num_frames: int, decode_chunk_size: int | None):
        # A callable, read at launch: should the memory ladder load the pipeline again meanwhile,
        # the decode uses the new one and holds nothing of the old.
        self.pipe, self.latents = pipe, latents
        self.num_frames, self.decode_chunk_size = num_frames, decode_chunk_size
        self.error: Exception | None = None  # what launching raised; result() raises it
        self.main_thread_s = 0.0  # what the decode cost the thread that renders: queueing + waiting
        self._launched = False
        self._frames: np.ndarray | None = None  # on a CPU: decoded in launch()
        self._host = self._device_frames = self._event = None

    def launch(self) -> None:
        """Queue the decode: on the CUDA side stream, or, on a CPU, run it. Never raises: an error
        (say, out of memory beside the next job's UNet) is kept for result(), so it fails this job
        and not the one being denoised."""
        if self._launched:
            return
        self._launched = True
        began = time.perf_counter()
        try:
            if self.latents.is_cuda:
                self._queue_on_side_stream()
            else:
                self._frames = render.decode_frames(self.pipe(), self.latents, self.num_frames, self.decode_chunk_size)
        except Exception as exc:
            self.error = exc
        finally:
            self.main_thread_s += time.perf_counter() - began

    def _queue_on_side_stream(self) -> None:
        import torch

        device = self.latents.device
        stream = _side_stream(device)
        # The latents and the VAE's float16 weights were written by kernels on the main stream.
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            frames = decode_to_device_uint8(self.pipe(), self.latents, self.num_frames, self.decode_chunk_size)
            # Pinned, so the copy is asynchronous too: the main thread goes back to the UNet at once.
            host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(frames, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        # Held until the event has passed: the latents were allocated on the main stream, which
        # could reuse their memory the moment nothing refers to them.
        self._device_frames, self._host, self._event = frames, host, event

    def ready(self) -> bool:
        """Launched, and its frames are on the host (a poll: never waits)."""
        if not self._launched or self.error is not None:
            return False
        if self._event is None:
            return True
        try:
            return self._event.query()
        except Exception as exc:  # an asynchronous CUDA error surfaces here
            self.error = exc
            return False

    def result(self) -> np.ndarray:
        """The uint8 frames (T, H, W, 3) on the host: launches the decode if it is not yet, waits for
        it, and raises what it raised."""
        self.launch()
        if self.error is not None:
            raise self.error
        began = time.perf_counter()
        try:
            if self._event is not None:
                self._event.synchronize()
                self._frames = self._host.numpy()
                self._event = self._device_frames = None
            return self._frames
        finally:
            self.main_thread_s += time.perf_counter() - began
            self.latents = None


_streams: dict[Any, Any] = {}


def _side_stream(device):
    """One side stream per device for the whole process: a stream's cached memory stays with it."""
    import torch

    if device not in _streams:
        _streams[device] = torch.cuda.Stream(device=device)
    return _streams[device]


@dataclass
class _Deferred:
    """A denoised job whose decode waits for the next job's steps."""

    job: Job
    image: Any
    sink: JobSink
    denoise_s: float
    hardware: HardwareRecord  # the settings it was denoised with
    decode: DeferredDecode | None
    settled: bool = False


class OverlappedRenderer:
    """Each job's decode runs during the next job's denoising (see the module's docstring).

    Once the memory ladder turns overlap off, jobs go through plainly (render_job), and so does a job
    of several chained segments."""

    def __init__(self, session: PipelineSession):
        self.session = session
        self._deferred: _Deferred | None = None  # the job whose decode waits for the next job's steps

    def submit(self, job: Job, image, sink: JobSink, on_step: StepCallback | None = None,
               on_segment: SegmentCallback | None = None) -> None:
        started = time.perf_counter()  # the first job's time includes loading the model
        self.session.resolve()
        while self.session.hardware.overlap_decode and job.params.segments == 1:
            previous, self._deferred = self._deferred, None
            try:
                latents = self.session.denoise(job, image, self._launching(previous, on_step))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    self._settle(previous)
                    raise
                error = oom_text(exc)
            except BaseException:  # Ctrl-C: the job denoised before this one is still decoded and kept
                self._settle(previous)
                raise
            else:
                self.session.note_success(job, started)
                # Taken before the previous job settles: a failed decode there may step the ladder down.
                deferred = _Deferred(job, image, sink, time.perf_counter() - started,
                                     self.session.hardware_record(job.id),
                                     DeferredDecode(lambda: self.session.pipe, latents, job.params.num_frames,
                                                    self.session.hardware.decode_chunk_size))
                self._settle(previous)
                self._deferred = deferred
                return
            # Out of memory. Out of the except block the failed attempt's activations are freed, so
            # the previous job's decode has the room back before this one steps down and runs again.
            self._settle(previous)
            self.session.step_down(job, error, time.perf_counter() - started)
        self.finish()
        result = render_job(self.session, job, image, on_step, on_segment)
        sink.done(replace(result, render_s=time.perf_counter() - started))

    def finish(self) -> None:
        """Finish the deferred decode, if any: its frames (or its error) go to its job's sink."""
        deferred, self._deferred = self._deferred, None
        self._settle(deferred)

    def _launching(self, previous: _Deferred | None, on_step: StepCallback | None) -> StepCallback:
        """A step callback that launches the previous job's decode (from the first step on: the
        pipeline's VAE casts are behind us) and hands it over when done."""
        def step(done: int, total: int) -> None:
            nonlocal previous
            if previous is not None:
                previous.decode.launch()
                if previous.decode.ready():
                    self._settle(previous)
                    previous = None
            if on_step is not None:
                on_step(done, total)

        return step

    def _settle(self, deferred: _Deferred | None) -> None:
        """Deliver a deferred decode's frames, waiting for them if need be. A decode that failed
        is not this job's end: out of memory (beside the next job's UNet) steps the ladder down,
        which turns overlap off first, and the job is rendered again in full, where nothing else
        runs; anything else fails the job."""
        if deferred is None or deferred.settled:
            return
        deferred.settled = True
        try:
            # Outside a step callback (finish, the end of the next call) the decode may run here: on
            # a CPU with the run's thread count, or its bytes would differ from a plain render's.
            with torch_threads(self.session.hardware.cpu_threads):
                frames = deferred.decode.result()
        except Exception as exc:
            if not is_out_of_memory(exc):
                deferred.sink.failed(exc)
                return
            error = oom_text(exc)
        else:
            decode_s = deferred.decode.main_thread_s
            deferred.sink.done(RenderedFrames(frames, deferred.hardware, deferred.denoise_s + decode_s, decode_s))
            return
        failed_after_s, deferred.decode = deferred.decode.main_thread_s, None  # drop its latents first
        started = time.perf_counter()
        try:
            self.session.step_down(deferred.job, error, failed_after_s)
            result = render_job(self.session, deferred.job, deferred.image)
        except Exception as exc:
            deferred.sink.failed(exc)
        else:
            deferred.sink.done(RenderedFrames(result.frames, result.hardware,
                                              deferred.denoise_s + time.perf_counter() - started))
