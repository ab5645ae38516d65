"""A job's clip as its files hold it: how many frames, at what rate, for how long, once segments,
loop and interpolate have made it out of num_frames. Pure arithmetic, so that the plan, the
manifest's checks, the report and the post-processing (`svdflow.outputs.post`) agree on it.

The order is fixed: segments (rendered: each clip after the first starts from the previous one's
last frame, which is not repeated), then loop, then interpolate, then encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class ClipShape:
    """A job's frame counts at each stage, and its written frame rate."""

    rendered: int  # what the pipeline made (and the master keeps): segments x num_frames - (segments - 1)
    looped: int  # after loop
    frames: int  # after interpolate: what the files hold
    fps: float  # the files' frame rate (playback_fps)

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


def rendered_frames(num_frames: int, segments: int) -> int:
    """Chained segments share their boundary frames: the next clip starts from the last one's end."""
    return segments * num_frames - (segments - 1)


def default_loop_frames(frames: int) -> int:
    """loop_frames when unset: a quarter of the clip, at least one frame."""
    return max(1, frames // 4)


def max_loop_frames(frames: int) -> int:
    """A crossfade blends the clip's last loop_frames frames into its first ones: the two may not overlap."""
    return frames // 2


def looped_frames(frames: int, loop: str, loop_frames: int | None) -> int:
    if loop == "pingpong":  # back again without repeating either end
        return frames + max(frames - 2, 0)
    if loop == "crossfade":  # the blended end is played as the start
        return frames - (loop_frames if loop_frames is not None else default_loop_frames(frames))
    return frames


def interpolated_frames(frames: int, factor: int, *, cyclic: bool) -> int:
    """factor - 1 new frames between each pair; a looping clip also gets them between its last frame
    and its first, or the jump back would be `factor` times the size of every other step."""
    return frames * factor if cyclic else (frames - 1) * factor + 1


def clip_shape(params: Any) -> ClipShape:
    """The clip of a job's resolved parameters (JobParams; parameters a record lacks at their defaults)."""
    return _clip_shape(params.num_frames, getattr(params, "segments", 1), getattr(params, "loop", "none"),
                       getattr(params, "loop_frames", None), getattr(params, "interpolate", 1),
                       float(params.playback_fps))


@lru_cache(maxsize=1024)  # a campaign's jobs share a few shapes; a plan asks for each job's three times
def _clip_shape(num_frames: int, segments: int, loop: str, loop_frames: int | None, interpolate: int,
                fps: float) -> ClipShape:
    rendered = rendered_frames(num_frames, segments)
    looped = looped_frames(rendered, loop, loop_frames)
    written = interpolated_frames(looped, interpolate, cyclic=loop != "none")
    return ClipShape(rendered, looped, written, fps)
