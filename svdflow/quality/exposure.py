"""Frames too dark or too bright to be useful, and the blurriest frame.

A frame is dark when its mean luma is below DARK_MEAN_LUMA (16: video black, so a clip fading to
black counts from where it is darker than black level) and blown when above BLOWN_MEAN_LUMA (239),
on the analysis luma (0-255). Sharpness is the variance of the luma's Laplacian (OpenCV's 3x3
aperture) at analysis size: it falls as a frame blurs or melts, and it depends on the content, so the
input image's own is recorded beside the clip's lowest.
"""

from __future__ import annotations

import cv2
import numpy as np

from svdflow.quality.scores import ExposureScores

DARK_MEAN_LUMA = 16.0
BLOWN_MEAN_LUMA = 239.0


def sharpness(luma: np.ndarray) -> float:
    _, deviation = cv2.meanStdDev(cv2.Laplacian(luma, cv2.CV_32F))
    return float(deviation[0, 0]) ** 2


def exposure_scores(luma: np.ndarray, input_luma: np.ndarray) -> ExposureScores:
    means = luma.reshape(len(luma), -1).mean(axis=1)
    return ExposureScores(
        dark_frames=int((means < DARK_MEAN_LUMA).sum()),
        blown_frames=int((means > BLOWN_MEAN_LUMA).sum()),
        min_sharpness=round(min(sharpness(frame) for frame in luma), 4),
        input_sharpness=round(sharpness(input_luma), 4),
    )
