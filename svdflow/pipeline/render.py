"""One job through the pipeline: micro-conditioning in, uint8 frames out."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np


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


def render_frames(pipe, image, params: dict[str, Any], *, decode_chunk_size: int | None = None,
                  on_step: Callable[[int, int], None] | None = None, cpu_threads: int | None = None) -> np.ndarray:
    """Render one job; returns frames as uint8 (T, H, W, 3).

    `on_step(done, total)` is called after every denoising step; after the last one the pipeline
    decodes latents with the VAE.
    """
    import torch

    total = params["num_inference_steps"]

    def step_callback(_pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        if on_step is not None:
            on_step(step + 1, total)
        return callback_kwargs

    with torch.inference_mode(), torch_threads(cpu_threads):
        output = pipe(
            image,
            height=params["height"],
            width=params["width"],
            num_frames=params["num_frames"],
            num_inference_steps=total,
            min_guidance_scale=params["min_guidance_scale"],
            max_guidance_scale=params["max_guidance_scale"],
            fps=params["fps"],
            motion_bucket_id=params["motion_bucket_id"],
            noise_aug_strength=params["noise_aug_strength"],
            decode_chunk_size=decode_chunk_size,
            generator=make_generator(params["seed"]),
            # Tensors, not numpy: the frames are quantised where they are (tensor_to_uint8), so a
            # GPU sends a quarter of the bytes across the bus and the CPU does no float pass.
            output_type="pt",
            callback_on_step_end=step_callback,
        )
        return tensor_to_uint8(output.frames[0])


def tensor_to_uint8(frames) -> np.ndarray:
    """The pipeline's (T, 3, H, W) float32 frames in [0, 1], on any device, to uint8 (T, H, W, 3).

    Round half up in float32 (clip, x 255, + 0.5, truncate): IEEE single-precision arithmetic, so a
    GPU and a CPU give the same bytes for the same floats.
    """
    import torch

    quantised = (frames.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
    return np.ascontiguousarray(quantised.permute(0, 2, 3, 1).cpu().numpy())
