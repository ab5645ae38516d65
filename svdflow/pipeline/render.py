"""One job through the pipeline: micro-conditioning in, uint8 frames out."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from svdflow.manifest.schema import JobParams


def make_generator(seed: int):
    """A CPU generator: diffusers draws noise on the CPU and moves it, so frames do not depend on
    which GPU (or whether a GPU) rendered them, only on the seed."""
    import torch

    return torch.Generator("cpu").manual_seed(seed)


@contextmanager
def torch_threads(count: int | None):
    """Run with `count` intra-op threads (None: leave torch's setting), restoring it afterwards."""
    import torch

    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def render_frames(pipe, image, params: JobParams, *, decode_chunk_size: int | None = None,
                  on_step: Callable[[int, int], None] | None = None, cpu_threads: int | None = None) -> np.ndarray:
    """Render one job; returns frames as uint8 (T, H, W, 3).

    `on_step(done, total)` is called after every denoising step; after the last one the VAE
    decodes the latents.
    """
    with torch_threads(cpu_threads):
        latents = denoise_latents(pipe, image, params, on_step=on_step)
        return decode_frames(pipe, latents, params.num_frames, decode_chunk_size)


def denoise_latents(pipe, image, params: JobParams, *, on_step: Callable[[int, int], None] | None = None):
    """The pipeline up to its final latents (1, T, C, h, w), on the pipeline's device; no VAE decode.

    Split from the decode so a run can decode one job while the next one denoises
    (svdflow.pipeline.overlap); render_frames joins the two halves again.
    """
    import torch

    from svdflow.pipeline.hooks.draft import DraftPlan, draft_hooks

    total = params.num_inference_steps

    def step_callback(_pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        if on_step is not None:
            on_step(step + 1, total)
        return callback_kwargs

    with torch.inference_mode(), draft_hooks(pipe.unet, DraftPlan.of(params)):
        return pipe(
            image,
            height=params.height,
            width=params.width,
            num_frames=params.num_frames,
            num_inference_steps=total,
            min_guidance_scale=params.min_guidance_scale,
            max_guidance_scale=params.max_guidance_scale,
            fps=params.fps,
            motion_bucket_id=params.motion_bucket_id,
            noise_aug_strength=params.noise_aug_strength,
            generator=make_generator(params.seed),
            output_type="latent",
            callback_on_step_end=step_callback,
        ).frames


def decode_to_device_uint8(pipe, latents, num_frames: int, decode_chunk_size: int | None):
    """Final latents to uint8 frames (T, H, W, 3) where the VAE is: what the pipeline itself does
    after its last step (decode_latents in chunks, postprocess_video), then quantise()'s
    rounding. The caller moves the result to the host."""
    import torch

    with torch.inference_mode():
        # The pipeline's float32 upcast of the VAE (for its encode) was undone inside the call that
        # made these latents, so the VAE is in its own dtype again, as the pipeline decodes with it.
        video = pipe.decode_latents(latents, num_frames, decode_chunk_size or num_frames)
        frames = pipe.video_processor.postprocess_video(video=video, output_type="pt")[0]
        return quantise(frames)


def decode_frames(pipe, latents, num_frames: int, decode_chunk_size: int | None) -> np.ndarray:
    """Final latents to uint8 frames (T, H, W, 3) on the host. Only 1 byte per value crosses the
    bus: the frames are quantised where the VAE put them."""
    return _to_host(decode_to_device_uint8(pipe, latents, num_frames, decode_chunk_size))


def quantise(frames):
    """The pipeline's (T, 3, H, W) float frames in [0, 1], on any device, to uint8 (T, H, W, 3) there.

    Round half up in float32 (clip, x 255, + 0.5, truncate): IEEE single-precision arithmetic, so a
    GPU and a CPU give the same bytes for the same floats.
    """
    import torch

    return (frames.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)


def tensor_to_uint8(frames) -> np.ndarray:
    """quantise(), then to the host."""
    return _to_host(quantise(frames))


def _to_host(frames) -> np.ndarray:
    return np.ascontiguousarray(frames.cpu().numpy())
