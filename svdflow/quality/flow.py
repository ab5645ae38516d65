"""Dense optical flow between consecutive frames: OpenCV's DIS on the analysis luma.

DIS's ULTRAFAST preset stops its coarse-to-fine search at a quarter of the input's size, which at
256 px wide over-reads small motions (a 2 px/frame pan of a 1024 px clip came out 12% too large).
Stopping one level finer (FINEST_SCALE = 1, an eighth of the cost of full size) with non-overlapping
8 px patches reads 2, 4, 8 and 24 px/frame pans within 3% for about 1 ms a pair. The flow of each
pair is taken from the later frame to the earlier one, so the earlier frame can be warped onto the
later one with it (svdflow.quality.flicker).
"""

from __future__ import annotations

import cv2
import numpy as np

FINEST_SCALE = 1
PATCH_SIZE = 8
PATCH_STRIDE = 8
GRADIENT_DESCENT_ITERATIONS = 12


def dis() -> cv2.DISOpticalFlow:
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    flow.setFinestScale(FINEST_SCALE)
    flow.setPatchSize(PATCH_SIZE)
    flow.setPatchStride(PATCH_STRIDE)
    flow.setGradientDescentIterations(GRADIENT_DESCENT_ITERATIONS)
    flow.setVariationalRefinementIterations(0)
    return flow


def backward_flows(luma: np.ndarray) -> list[np.ndarray]:
    """For each t, float32 (h, w, 2) flow F with luma[t + 1](p) ~ luma[t](p + F(p)), in analysis pixels."""
    estimator = dis()
    return [estimator.calc(later, earlier, None) for earlier, later in zip(luma[:-1], luma[1:])]


def magnitudes(flow: np.ndarray) -> np.ndarray:
    return cv2.magnitude(flow[..., 0], flow[..., 1])
