"""qc's thresholds: what a clip's scores must meet, and how many times a failing job is rendered again.

This is the manifest's `qc:` block (DESIGN.md's names; unset means not checked). Its config follows
the manifest's own models (unknown keys are errors, no coercion, frozen); it is declared here rather
than on the manifest's StrictModel because the manifest's schema imports it.

Each threshold is checked against one score, named in CHECKS: the one table `judge` walks, so a new
threshold is a field here and a line there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_REROLLS = 32


@dataclass(frozen=True)
class Check:
    """A threshold's score (a dotted path into QualityScores) and its side: the score must be at least
    ("min") or at most ("max") the threshold."""

    score: str
    side: Literal["min", "max"]


CHECKS: dict[str, Check] = {
    "min_motion": Check("motion.mean", "min"),
    "max_motion": Check("motion.mean", "max"),
    "max_flicker": Check("flicker.residual", "max"),
    "max_brightness_jump": Check("flicker.brightness_jump", "max"),
    "min_input_similarity": Check("fidelity.first_ssim", "min"),
    "min_end_similarity": Check("fidelity.last_ssim", "min"),
    "max_dark_frames": Check("exposure.dark_frames", "max"),
    "max_blown_frames": Check("exposure.blown_frames", "max"),
    "min_sharpness": Check("exposure.min_sharpness", "min"),
}


class QcThresholds(BaseModel):
    """Quality control of one job: thresholds on its scores (unset: not checked) and its re-rolls."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    min_motion: float | None = Field(None, ge=0, description=(
        "Least mean optical-flow motion, in pixels per frame on a frame scaled to 1024 px on its longer "
        "side (motion.mean). A clip that barely moves fails."))
    max_motion: float | None = Field(None, ge=0, description=(
        "Most mean optical-flow motion, same pixels per frame (motion.mean). A clip that swims fails."))
    max_flicker: float | None = Field(None, ge=0, description=(
        "Most change left after motion compensation, mean absolute luma 0-255 (flicker.residual)."))
    max_brightness_jump: float | None = Field(None, ge=0, description=(
        "Most change of mean luma (0-255) between consecutive frames (flicker.brightness_jump)."))
    min_input_similarity: float | None = Field(None, ge=-1.0, le=1.0, description=(
        "Least SSIM of the first frame against the input image (fidelity.first_ssim), -1 to 1."))
    min_end_similarity: float | None = Field(None, ge=-1.0, le=1.0, description=(
        "Least SSIM of the last frame against the input image (fidelity.last_ssim): drift, -1 to 1."))
    max_dark_frames: int | None = Field(None, ge=0, description=(
        "Most frames darker than video black, mean luma below 16 (exposure.dark_frames)."))
    max_blown_frames: int | None = Field(None, ge=0, description=(
        "Most frames with a mean luma above 239 (exposure.blown_frames)."))
    min_sharpness: float | None = Field(None, ge=0, description=(
        "Least Laplacian variance of any frame's luma at analysis size (exposure.min_sharpness)."))
    rerolls: int = Field(0, ge=0, le=MAX_REROLLS, description=(
        f"A job that fails a threshold renders again with the next seed of its re-roll sequence, up to "
        f"this many times (at most {MAX_REROLLS}); the first attempt that passes is kept, else the best."))

    @model_validator(mode="after")
    def _motion_range(self) -> QcThresholds:
        if self.min_motion is not None and self.max_motion is not None and self.min_motion > self.max_motion:
            raise ValueError(f"min_motion {self.min_motion} is above max_motion {self.max_motion}: no clip can "
                             f"pass; lower min_motion or raise max_motion")
        return self

    def set_thresholds(self) -> dict[str, float]:
        """The thresholds that are set, by name, in CHECKS' order."""
        values = {name: getattr(self, name) for name in CHECKS}
        return {name: float(value) for name, value in values.items() if value is not None}
