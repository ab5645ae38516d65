"""How overlap_decode does on the bench's video: each video's VAE decode on a side stream during the
next video's steps, timed, and its frames compared with a plain decode's."""

from __future__ import annotations

import statistics
import time
from typing import Any

from svdflow.bench.clock import job_params
from svdflow.bench.config import GIB, BenchConfig

OVERLAP_VIDEOS = 3  # the second period (2nd call start -> 3rd) is the first with a decode inside


def overlapped(config: BenchConfig, pipe, image, decode_chunk_size, plain_s_per_video: float) -> dict[str, Any]:
    """Videos rendered as a run with overlap_decode renders them: each video's VAE decode queued on
    a side stream from the next video's first step (svdflow.pipeline.overlap), the frames handed
    over when they are on the host.

    s_per_video is the steady period from one call's start to the next: one video's denoising
    with the previous video's decode inside it. The first video's frames are compared with a plain
    decode of the same latents: the side stream must not change a byte.
    """
    import numpy as np
    import torch

    from svdflow.pipeline.overlap import DeferredDecode
    from svdflow.pipeline.render import decode_frames, denoise_latents

    params = job_params(config, config.steps)
    pending: DeferredDecode | None = None
    frames, starts, first_latents = [], [], None

    def step(_done: int, _total: int) -> None:
        nonlocal pending
        if pending is not None:
            pending.launch()
            if pending.ready():
                frames.append(pending.result())
                pending = None

    if config.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(config.device)
    for _ in range(OVERLAP_VIDEOS):
        if config.cuda:
            # Periods from an idle GPU to an idle GPU, as measure()'s videos are timed. Nothing of the
            # overlap is lost: the previous decode is only launched at this call's first step.
            torch.cuda.synchronize()
        starts.append(time.perf_counter())
        latents = denoise_latents(pipe, image, params, on_step=step)
        if pending is not None:
            frames.append(pending.result())
        first_latents = latents if first_latents is None else first_latents
        pending = DeferredDecode(lambda: pipe, latents, config.num_frames, decode_chunk_size)
    frames.append(pending.result())
    ended = time.perf_counter()
    periods = [b - a for a, b in zip(starts[1:], starts[2:])]
    out = {"videos": OVERLAP_VIDEOS, "s_per_video": round(statistics.fmean(periods), 3),
           "plain_s_per_video": round(plain_s_per_video, 3),
           "saved_s_per_video": round(plain_s_per_video - statistics.fmean(periods), 3),
           "total_s": round(ended - starts[0], 3), "peak_gib": None}
    if config.cuda:
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(config.device) / GIB, 2)
        out["reserved_gib"] = round(torch.cuda.max_memory_reserved(config.device) / GIB, 2)
    out["frames_identical"] = bool(np.array_equal(
        frames[0], decode_frames(pipe, first_latents, config.num_frames, decode_chunk_size)))
    return out
