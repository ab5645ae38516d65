"""Every score of a clip, from its frames in memory: the one entry point of the scoring side."""

from __future__ import annotations

import numpy as np

from svdflow.quality.analysis import analyse
from svdflow.quality.exposure import exposure_scores
from svdflow.quality.fidelity import fidelity_scores
from svdflow.quality.flicker import flicker_scores
from svdflow.quality.flow import backward_flows
from svdflow.quality.motion import motion_scores
from svdflow.quality.scores import QualityScores


def score_clip(frames: np.ndarray, image: np.ndarray, *, fps: float) -> QualityScores:
    """Scores of `frames` (uint8 (T, H, W, 3) RGB, as rendered) against `image`, the input as the model
    was conditioned on it (uint8 (H, W, 3), resized to the clip). `fps` scales VBench's dynamic
    threshold: a job's own `fps` (its conditioning rate, the one the motion was rendered for), not its
    playback_fps, so that the scores depend on the render alone and a re-encode keeps them."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    analysis = analyse(frames, image)
    flows = backward_flows(analysis.luma)
    return QualityScores(
        frames=len(frames),
        analysis_size=(analysis.luma.shape[2], analysis.luma.shape[1]),
        motion=motion_scores(flows, frames=len(frames), reference_scale=analysis.reference_scale,
                             reference_short_side=analysis.reference_short_side, fps=fps),
        flicker=flicker_scores(frames, analysis.luma, flows),
        fidelity=fidelity_scores(analysis),
        exposure=exposure_scores(analysis.luma, analysis.input_luma),
    )
