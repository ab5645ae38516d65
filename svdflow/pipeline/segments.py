"""Chained segments (`segments: N`): N clips, each after the first conditioned on the previous
clip's last frame, joined without repeating that frame (N x num_frames - (N - 1) frames).

The frame handed on is the decoded uint8 frame as a PIL image, given to the pipeline the way an
input image is: it already has the job's width and height, so it is neither resized nor cropped
(the job's `resize` applies to the input image only). Clip 0 draws its noise from the job's seed,
clip k from `segment_seed(seed, k)`: a hash of the two alone, so, like every seed, it never depends
on the order, batch or process a job renders in.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from svdflow.manifest.schema import MAX_SEED, JobParams
from svdflow.outputs.entry import SegmentRecord

# (the segment's number from 1, the job's segment count): said before each segment of a chained job.
SegmentCallback = Callable[[int, int], None]


def segment_seed(seed: int, index: int) -> int:
    """The seed of clip `index` of a job seeded `seed`: the job's own for clip 0."""
    if index == 0:
        return seed
    digest = hashlib.sha256(f"svdflow-segment-seed:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


def render_segments(render_one: Callable[[JobParams, Image.Image], np.ndarray], params: JobParams, image,  # type: ignore[valid-type]
                    on_segment: SegmentCallback | None = None) -> tuple[np.ndarray, tuple[SegmentRecord, ...]]:
    """A job's frames, clip by clip through `render_one(params, image) -> uint8 (T, H, W, 3)`, and the
    record of each clip (none for a single clip)."""
    count = params.segments
    if count == 1:
        return render_one(params, image), ()
    clips: list[np.ndarray] = []
    records: list[SegmentRecord] = []
    for index in range(count):
        if on_segment is not None:
            on_segment(index + 1, count)
        seeded = params.model_copy(update={"seed": segment_seed(params.seed, index)})
        started = time.perf_counter()
        frames = render_one(seeded, image)
        records.append(SegmentRecord(index=index, seed=seeded.seed, render_s=round(time.perf_counter() - started, 4)))
        clips.append(frames if index == 0 else frames[1:])
        image = Image.fromarray(frames[-1], mode="RGB")
    return np.ascontiguousarray(np.concatenate(clips)), tuple(records)
