"""The measures behind builtin:toy's promises: the first frame is the input, motion follows
motion_bucket_id, a seed fixes the frames. The training script's report and the tests both use
these, so both measure alike.

OpenCV (DIS optical flow), scikit-image (SSIM) and torch are imported when a measure is taken, so
that this room imports fast and without torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from svdflow.models.toy_config import TOY_DEFAULTS, TOY_HEIGHT, TOY_NUM_FRAMES, TOY_WIDTH

# The call the figures are measured with: the demo's size and frame count, SVD's default fps and
# noise augmentation, few enough steps for a CPU test, and no classifier-free guidance (the toy is
# trained without an unconditional branch; see toy_config.TOY_DEFAULTS).
CHECK_CALL = {"height": TOY_HEIGHT, "width": TOY_WIDTH, "num_frames": TOY_NUM_FRAMES,
              "num_inference_steps": 10, "fps": 7, "noise_aug_strength": 0.02, **TOY_DEFAULTS}
MOTION_BUCKETS = (20, 127, 250)


def render_check(pipe, image: Image.Image, motion_bucket_id: int, seed: int = 0) -> list[Image.Image]:
    """The frames `pipe` renders from `image` with CHECK_CALL, as PIL images."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return pipe(image, motion_bucket_id=motion_bucket_id, generator=generator, **CHECK_CALL).frames[0]


def _gray(frame: Image.Image) -> np.ndarray:
    return np.asarray(frame.convert("L"), dtype=np.uint8)


def first_frame_ssim(frame: Image.Image, image: Image.Image) -> float:
    """SSIM between a clip's first frame and the input image resized to the frame's size (grey levels)."""
    from skimage.metrics import structural_similarity

    target = image.convert("RGB").resize(frame.size, Image.Resampling.BICUBIC)
    return float(structural_similarity(_gray(frame), _gray(target), data_range=255))


def mean_flow(frames: list[Image.Image]) -> float:
    """Mean optical-flow magnitude between consecutive frames, in pixels per frame (OpenCV's DIS)."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grays = [_gray(frame) for frame in frames]
    return float(np.mean([np.linalg.norm(dis.calc(a, b, None), axis=2).mean() for a, b in zip(grays, grays[1:])]))
