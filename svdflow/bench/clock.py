"""Measuring one case: a clock that marks every denoising step (CUDA events on a GPU), the pipeline
call every case makes (the same video: same image, seed and parameters), per-video timings and memory
peaks, and how far a case's latents and frames are from the reference's."""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from typing import Any

from svdflow.bench.config import GIB, SEED, BenchConfig


class StepClock:
    """Marks the call's start, the denoising loop's start (after prepare_latents) and every step's
    end; CUDA events on a GPU (no synchronisation inside the loop), perf_counter on a CPU.

    With `memory_device`, every mark also takes the allocator's peak since the previous mark and
    resets it, so a video's peak splits into before the loop, the loop and after it. The allocator
    counts on the host as kernels are queued, so the split follows the code, whatever the GPU's lag.
    """

    def __init__(self, pipe, cuda: bool, memory_device: str | None = None):
        self.cuda, self.marks, self.latents, self.total = cuda, [], None, 0
        self.memory_device = memory_device if cuda else None
        self.peaks: list[tuple[int, int]] = []  # (allocated, reserved) peak since the mark before
        self.pipe = pipe
        original = pipe.prepare_latents

        def prepare_latents(*args, **kwargs):
            latents = original(*args, **kwargs)
            self._mark()
            return latents

        pipe.prepare_latents = prepare_latents  # on the instance, until the clock is closed

    def __enter__(self) -> StepClock:
        return self

    def __exit__(self, *exc) -> None:
        self.pipe.__dict__.pop("prepare_latents", None)

    def start(self) -> None:
        """Marks a call's start; call_pipeline then sets how many steps it runs."""
        self.marks, self.latents, self.peaks = [], None, []
        self._mark()

    def finish(self) -> None:
        """Marks the call's end: the time after the last step is the VAE decode and postprocessing."""
        self._mark()

    def _mark(self) -> None:
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
            if self.memory_device is not None:
                self.peaks.append((torch.cuda.max_memory_allocated(self.memory_device),
                                   torch.cuda.max_memory_reserved(self.memory_device)))
                torch.cuda.reset_peak_memory_stats(self.memory_device)
        else:
            self.marks.append(time.perf_counter())

    def video_peak(self) -> tuple[int, int]:
        """(allocated, reserved) peak of the call, after finish()."""
        return max(p[0] for p in self.peaks[1:]), max(p[1] for p in self.peaks[1:])

    def phase_peaks(self) -> dict[str, int]:
        """Allocated peak before the loop (CLIP, VAE encode), in it, and after it (decode), after finish()."""
        return {"pre_loop": self.peaks[1][0], "loop": max(p[0] for p in self.peaks[2:self.total + 2]),
                "post_loop": self.peaks[-1][0]}

    def on_step(self, _pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        self._mark()
        if step == self.total - 1:
            self.latents = callback_kwargs["latents"]  # copied to the host once the video is timed
        return callback_kwargs

    def _seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1000 if self.cuda else b - a

    def step_times(self) -> list[float]:
        """Seconds of each denoising step (after finish(), the steps only)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        loop = self.marks[1:self.total + 2] if self.total else self.marks[1:]
        return [self._seconds(a, b) for a, b in zip(loop, loop[1:])]

    def post_loop_s(self) -> float:
        return self._seconds(self.marks[self.total + 1], self.marks[-1])

    def pre_loop_s(self) -> float:
        return self._seconds(self.marks[0], self.marks[1])


def job_params(config: BenchConfig, steps: int, **draft):
    """One video's parameters, as a job's: every case renders the same video."""
    from svdflow.manifest.schema import JobParams

    return JobParams(num_inference_steps=steps, height=config.height, width=config.width,
                     num_frames=config.num_frames, min_guidance_scale=1.0, max_guidance_scale=3.0, fps=7,
                     playback_fps=7.0, motion_bucket_id=127, noise_aug_strength=0.02, seed=SEED, **draft)


def call_pipeline(pipe, config: BenchConfig, image, *, decode_chunk_size, steps: int, clock: StepClock,
                  latent: bool = False, draft: dict | None = None):
    """One pipeline call as a run makes it (draft hooks included); uint8 frames on the host, or None
    with `latent`."""
    import torch

    from svdflow.pipeline.hooks.draft import DraftPlan, draft_hooks
    from svdflow.pipeline.render import make_generator, tensor_to_uint8

    params = job_params(config, steps, **(draft or {}))
    call = params.model_dump(include={"num_inference_steps", "height", "width", "num_frames", "min_guidance_scale",
                                      "max_guidance_scale", "fps", "motion_bucket_id", "noise_aug_strength"})
    clock.total = steps
    with torch.inference_mode(), draft_hooks(pipe.unet, DraftPlan.of(params)):
        frames = pipe(image, **call, decode_chunk_size=decode_chunk_size, generator=make_generator(SEED),
                      output_type="latent" if latent else "pt", callback_on_step_end=clock.on_step).frames
        if not latent:  # as a run does: uint8 frames on the host are the end of a video
            return tensor_to_uint8(frames[0])
    return None


def measure(config: BenchConfig, pipe, image, decode_chunk_size, videos: int, *,
            draft: dict | None = None) -> dict[str, Any]:
    """Time `videos` videos; the first apart (it may compile), the rest steady. Keeps the first video's
    final latents and frames under "_latents"/"_frames" for the comparison with the reference."""
    import torch

    gc.collect()
    if config.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        start_gib = torch.cuda.memory_allocated(config.device) / GIB
    seconds, steps, latents, before, after, peaks, phases = [], [], [], [], [], [], []
    first_frames = None
    with StepClock(pipe, config.cuda, memory_device=config.device) as clock:
        for _ in range(videos):
            if config.cuda:  # per video: the first one's transient allocations (autotuning, compiling) apart
                torch.cuda.reset_peak_memory_stats(config.device)
            clock.start()
            began = time.perf_counter()
            frames = call_pipeline(pipe, config, image, decode_chunk_size=decode_chunk_size, steps=config.steps,
                                   clock=clock, draft=draft)
            clock.finish()
            if config.cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - began)
            steps.append(clock.step_times())
            before.append(clock.pre_loop_s())
            after.append(clock.post_loop_s())
            latents.append(clock.latents.detach().float().cpu())  # after the timing: no run copies them
            first_frames = frames if first_frames is None else first_frames
            if config.cuda:
                peaks.append(clock.video_peak())
                phases.append(clock.phase_peaks())
    steady = seconds[1:] or seconds
    steady_steps = [s for video in (steps[1:] or steps) for s in video]
    out: dict[str, Any] = {
        "videos_s": [round(s, 3) for s in seconds],
        "first_video_s": round(seconds[0], 3),
        "s_per_video": round(statistics.fmean(steady), 3),
        "unet_step_s": round(statistics.median(steady_steps), 4),
        "first_step_s": round(steps[0][0], 3),
        # Steady videos: before the loop (CLIP, VAE encode, noise), the loop, after (decode, uint8).
        "pre_loop_s": round(statistics.fmean(before[1:] or before), 3),
        "loop_s": round(statistics.fmean([sum(v) for v in (steps[1:] or steps)]), 3),
        "post_loop_s": round(statistics.fmean(after[1:] or after), 3),
        "peak_gib": None, "reserved_gib": None, "start_gib": None,
    }
    if config.cuda:
        steady_peaks = peaks[1:] or peaks
        out.update(peak_gib=round(max(p[0] for p in steady_peaks) / GIB, 2),
                   reserved_gib=round(max(p[1] for p in steady_peaks) / GIB, 2),
                   first_video_peak_gib=round(peaks[0][0] / GIB, 2), start_gib=round(start_gib, 2),
                   # Where a steady video's peak is reached: what to cut when a target is missed.
                   phase_peak_gib={phase: round(max(p[phase] for p in (phases[1:] or phases)) / GIB, 2)
                                   for phase in ("pre_loop", "loop", "post_loop")})
    else:
        out["max_rss_gib"] = max_rss_gib()
    out["_latents"], out["_frames"] = latents, first_frames
    return out


def compare_latents(a, b) -> dict[str, float]:
    """||a - b|| / ||b|| and the largest difference relative to b's largest value."""
    diff = (a - b).double()
    b = b.double()
    return {"rel_l2": float(diff.norm() / b.norm().clamp_min(1e-30)),
            "rel_max_abs": float(diff.abs().max() / b.abs().max().clamp_min(1e-30))}


def psnr(frames, reference) -> float | None:
    """PSNR in dB of uint8 frames against the reference's (inf: identical); None without both."""
    import numpy as np

    if frames is None or reference is None or frames.shape != reference.shape:
        return None
    mse = float(np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else round(10 * math.log10(255.0**2 / mse), 2)


def count_files(folder: str | None) -> int:
    if not folder or not os.path.isdir(folder):
        return 0
    return sum(len(files) for _, _, files in os.walk(folder))


def max_rss_gib() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)  # KiB on Linux


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux /proc); None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
