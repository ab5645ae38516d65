"""What a campaign will write, in bytes, before it runs: each format's measured bytes per frame,
scaled by a job's frames and pixels. `plan` adds them up (svdflow.views, PlannedJob.to_json).

The figures are measured by benchmarks/bench_storage.py (results/2026-12-06-cpu-storage.json):
25-frame 1024x576 clips encoded by svdflow's own writers (the same encoders and pinned options, no
provenance), bytes per frame averaged over the clip (container and headers included).
- "smooth": a camera panning and zooming slowly across photographs (scikit-image's astronaut,
  coffee, chelsea, rocket; upscaled about 2.5x): natural, soft pictures, as SVD's clips are. Sharp,
  busy footage makes bigger files.
- "noise": uniform random frames, what builtin:tiny renders, and the most any frames can take
  (measured at the default settings only: crf 18, ProRes hq). A plan of builtin:tiny uses these.
Encoders do not scale exactly with pixels or frames: an estimate, said as one (~).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import lru_cache

from svdflow.outputs.clip import ClipShape, clip_shape

MEASURED_PIXELS = 1024 * 576
MEASURED_CONTENT = {
    "smooth": "smooth footage (photos panned, 1024x576)",
    "noise": "noise frames (builtin:tiny renders noise)",
}
# Bytes per frame at 1024x576 on smooth footage, by crf for the crf-driven formats.
SMOOTH_BY_CRF = {
    "mp4": {12: 31_712, 18: 11_021, 23: 5_511, 28: 3_024, 35: 1_534},
    "hevc": {12: 18_461, 18: 6_732, 23: 3_653, 28: 2_074, 35: 985},
    "webm": {12: 7_726, 18: 5_130, 23: 4_172, 28: 3_050, 35: 1_958},
}
SMOOTH_PRORES = {"proxy": 65_000, "lt": 155_878, "standard": 223_086, "hq": 334_426, "4444": 488_821,
                 "4444xq": 603_514}
SMOOTH = {"gif": 306_927, "webp": 55_078, "frames": 627_247, "master": 432_921}
# Noise frames, at the default settings.
NOISE = {"mp4": 452_344, "hevc": 481_465, "webm": 468_114, "prores": 351_276, "gif": 804_022, "webp": 493_782,
         "frames": 1_772_576, "master": 1_964_749}


def bytes_per_frame(fmt: str, *, crf: int = 18, prores_profile: str = "hq", content: str = "smooth") -> float:
    """Measured bytes of one 1024x576 frame in `fmt` (a video format, or "master")."""
    if content == "noise":
        return float(NOISE[fmt])
    if fmt in SMOOTH_BY_CRF:
        return _by_crf(SMOOTH_BY_CRF[fmt], crf)
    if fmt == "prores":
        return float(SMOOTH_PRORES[prores_profile])
    return float(SMOOTH[fmt])


def _by_crf(measured: dict[int, int], crf: int) -> float:
    """Between measured crf values, geometric (size falls about exponentially with crf); past the
    ends, the nearest segment's slope carried on."""
    if crf in measured:
        return float(measured[crf])
    points = sorted(measured.items())
    i = max(1, min(len(points) - 1, bisect.bisect_right([c for c, _ in points], crf)))
    (c0, b0), (c1, b1) = points[i - 1], points[i]
    return math.exp(math.log(b0) + (math.log(b1) - math.log(b0)) * (crf - c0) / (c1 - c0))


@dataclass(frozen=True)
class JobBytes:
    """A job's estimated files: each video format's, and its master's (0 without masters)."""

    videos: dict[str, int]
    master: int

    @property
    def total(self) -> int:
        return sum(self.videos.values()) + self.master

    def written(self, renders: bool, reencodes: bool) -> int:
        """What a run writes of them: all for a job it renders, the videos for one it re-encodes
        from its master, nothing for one up to date."""
        return self.total if renders else sum(self.videos.values()) if reencodes else 0

    def to_json(self, renders: bool, reencodes: bool) -> dict:
        return {"videos": self.videos, "master": self.master, "total": self.total,
                "this_run": self.written(renders, reencodes)}


def job_bytes(params, formats, *, crf: int, prores_profile: str, masters: bool, content: str) -> JobBytes:
    """The files of one job of these resolved parameters: frames written x pixels x bytes per pixel
    measured for each format; the master holds the rendered frames (before loop and interpolate)."""
    return _job_bytes(clip_shape(params), params.width * params.height, tuple(formats), crf, prores_profile, masters,
                      content)


@lru_cache(maxsize=1024)  # a campaign's jobs share a few shapes: one estimate each (JobBytes is not changed)
def _job_bytes(clip: ClipShape, pixels: int, formats: tuple[str, ...], crf: int, prores_profile: str, masters: bool,
               content: str) -> JobBytes:
    scale = pixels / MEASURED_PIXELS
    videos = {fmt: round(bytes_per_frame(fmt, crf=crf, prores_profile=prores_profile, content=content)
                         * clip.frames * scale) for fmt in formats}
    master = round(bytes_per_frame("master", content=content) * clip.rendered * scale) if masters else 0
    return JobBytes(videos, master)


def spec_job_bytes(spec, job) -> JobBytes:
    """`job_bytes` of a job of a run (svdflow.manifest.resolve.RunSpec)."""
    return job_bytes(job.params, spec.formats, crf=spec.crf, prores_profile=spec.prores_profile,
                     masters=spec.masters, content=content_of(spec.model.source))


def content_of(model_source: str) -> str:
    """Which measured frames a model's clips are like: builtin:tiny renders noise."""
    return "noise" if model_source == "builtin:tiny" else "smooth"
