"""How much a clip moves, and VBench's dynamic/static verdict adapted to DIS flow.

VBench's dynamic degree (vbench/dynamic_degree.py) runs RAFT on the full frames, resampled to about
8 fps, takes the mean of each pair's top 5% flow magnitudes, and calls a clip dynamic when at least
round(4 x frames / 16) pairs are above 6 x (shorter side / 256) px, times max(1, 8 / fps). Here the
flow is DIS on the analysis copy, converted to reference pixels (svdflow.quality.analysis), and no
frames are dropped: the threshold is scaled by 8 / fps in both directions instead, which is what
dropping frames to 8 fps does to a steady motion. The pairs needed are at least 1, where VBench's
rule gives 0 for clips of 2 frames or fewer.
"""

from __future__ import annotations

import numpy as np

from svdflow.quality.flow import magnitudes
from svdflow.quality.scores import MotionScores

TOP_SHARE = 0.05  # VBench: the mean of each pair's largest 5% magnitudes
VBENCH_THRESHOLD_PX = 6.0  # at a shorter side of 256 px and 8 fps
VBENCH_SHORT_SIDE = 256.0
VBENCH_FPS = 8.0


def top_mean(magnitude: np.ndarray) -> float:
    """The mean of the largest TOP_SHARE of the values (at least one)."""
    flat = magnitude.ravel()
    count = max(1, int(flat.size * TOP_SHARE))
    return float(np.partition(flat, flat.size - count)[flat.size - count:].mean())


def dynamic_threshold(reference_short_side: float, fps: float) -> float:
    return VBENCH_THRESHOLD_PX * (reference_short_side / VBENCH_SHORT_SIDE) * (VBENCH_FPS / fps)


def pairs_needed(frames: int) -> int:
    return max(1, round(4 * frames / 16))


def motion_scores(flows: list[np.ndarray], *, frames: int, reference_scale: float,
                  reference_short_side: float, fps: float) -> MotionScores:
    """Scores of `flows` (analysis pixels) for a clip of `frames` frames written at `fps`."""
    per_pair = [magnitudes(flow) for flow in flows]
    means = [float(m.mean()) * reference_scale for m in per_pair]
    tops = [top_mean(m) * reference_scale for m in per_pair]
    threshold = dynamic_threshold(reference_short_side, fps)
    over = sum(top > threshold for top in tops)
    needed = pairs_needed(frames)
    return MotionScores(
        mean=round(float(np.mean(means)) if means else 0.0, 4),
        peak=round(max(tops, default=0.0), 4),
        dynamic=over >= needed,
        dynamic_pairs=over,
        dynamic_pairs_needed=needed,
        dynamic_threshold=round(threshold, 4),
    )
