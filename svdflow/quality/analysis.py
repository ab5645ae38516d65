"""The small copies every score is measured on, made once per clip.

Measuring at the rendered size would cost several times the 100 ms a clip may take, and the failures
qc looks for (a still clip, flicker, drift, a black or blown frame) show at a quarter of SVD's width.
So each frame is box-averaged down to ANALYSIS_LONG_SIDE pixels on its longer side (1024x576 becomes
256x144) and converted to luma. Motion is then reported in pixels per frame on a frame scaled to
REFERENCE_LONG_SIDE on its longer side: at SVD's own sizes (1024x576, 576x1024) those are the clip's
own pixels, and a threshold means the same share of the frame at any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ANALYSIS_LONG_SIDE = 256
REFERENCE_LONG_SIDE = 1024
MIN_LONG_SIDE = 12


@dataclass(frozen=True)
class Analysis:
    """A clip and its conditioning image, at analysis size."""

    rgb: np.ndarray  # uint8 (T, h, w, 3)
    luma: np.ndarray  # uint8 (T, h, w): BT.601 luma, as OpenCV's RGB2GRAY
    input_rgb: np.ndarray  # uint8 (h, w, 3)
    input_luma: np.ndarray  # uint8 (h, w)
    reference_scale: float  # reference pixels per analysis pixel
    reference_short_side: float  # the frame's shorter side, in reference pixels


def analysis_size(width: int, height: int) -> tuple[int, int]:
    """(w, h) with the longer side ANALYSIS_LONG_SIDE; a smaller frame is kept as it is (never upscaled)."""
    long_side = max(width, height)
    if long_side <= ANALYSIS_LONG_SIDE:
        return width, height
    factor = ANALYSIS_LONG_SIDE / long_side
    return max(1, round(width * factor)), max(1, round(height * factor))


def downscale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Box average down to `size`: exact halvings first, which are OpenCV's fast path for INTER_AREA."""
    width, height = size
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def check_clip(frames: np.ndarray, image: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    if max(frames.shape[1:3]) < MIN_LONG_SIDE:  # DIS flow's own minimum; a manifest's sizes start at 64
        raise ValueError(f"frames must be at least {MIN_LONG_SIDE} px on their longer side, got {frames.shape[1:3]}")
    if image.dtype != np.uint8 or image.shape != frames.shape[1:]:
        raise ValueError(f"the input image must be uint8 {frames.shape[1:]} (resized as the clip was conditioned "
                         f"on it), got {image.dtype} {image.shape}")


def analyse(frames: np.ndarray, image: np.ndarray) -> Analysis:
    """The analysis copies of a clip (uint8 (T, H, W, 3) RGB) and its input as conditioned (H, W, 3)."""
    check_clip(frames, image)
    height, width = frames.shape[1:3]
    size = analysis_size(width, height)
    rgb = np.stack([downscale(np.ascontiguousarray(frame), size) for frame in frames])
    luma = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb])
    input_rgb = downscale(np.ascontiguousarray(image), size)
    reference_scale = REFERENCE_LONG_SIDE / max(size)
    return Analysis(
        rgb=rgb, luma=luma, input_rgb=input_rgb, input_luma=cv2.cvtColor(input_rgb, cv2.COLOR_RGB2GRAY),
        reference_scale=reference_scale,
        reference_short_side=min(width, height) * REFERENCE_LONG_SIDE / max(width, height),
    )
