"""Flicker: change between consecutive frames that is not motion.

Three figures, because each misses something the others see:
- VBench's temporal flickering, as vbench/temporal_flickering.py computes it: the mean absolute
  difference of consecutive full frames (all channels, 0-255), mapped to (255 - mean) / 255. It is
  meant for still clips: any motion lowers it too.
- The motion-compensated residual: the earlier frame of each pair warped onto the later one by their
  flow (bilinear), and the mean absolute luma difference left, over the pixels whose source lies inside
  the earlier frame (what enters the frame is new, not flicker). Motion leaves little of it; a change
  of brightness, texture boiling or melting leave it all.
- The largest jump of mean luma between consecutive frames, which a brief flash shows and an average
  over the clip hides.
"""

from __future__ import annotations

import cv2
import numpy as np

from svdflow.quality.scores import FlickerScores


def vbench_flickering(frames: np.ndarray) -> float:
    """VBench's score on the full frames: 1 for a clip without any change."""
    if len(frames) < 2:
        return 1.0
    per_pixel = frames[0].size
    differences = [cv2.norm(earlier, later, cv2.NORM_L1) / per_pixel for earlier, later in zip(frames[:-1], frames[1:])]
    return (255.0 - float(np.mean(differences))) / 255.0


def compensated_residual(luma: np.ndarray, flows: list[np.ndarray]) -> float:
    """Mean over pairs of the mean absolute luma left after warping each frame onto the next."""
    if not flows:
        return 0.0
    height, width = luma.shape[1:]
    grid_y, grid_x = np.indices((height, width), dtype=np.float32)
    residuals = []
    for earlier, later, flow in zip(luma[:-1], luma[1:], flows):
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
        warped = cv2.remap(earlier.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        difference = np.abs(later.astype(np.float32) - warped)[inside]
        residuals.append(float(difference.mean()) if difference.size else 0.0)
    return float(np.mean(residuals))


def brightness_jump(luma: np.ndarray) -> float:
    means = luma.reshape(len(luma), -1).mean(axis=1)
    return float(np.abs(np.diff(means)).max()) if len(means) > 1 else 0.0


def flicker_scores(frames: np.ndarray, luma: np.ndarray, flows: list[np.ndarray]) -> FlickerScores:
    return FlickerScores(
        vbench=round(vbench_flickering(frames), 4),
        residual=round(compensated_residual(luma, flows), 4),
        brightness_jump=round(brightness_jump(luma), 4),
    )
