"""What looping and interpolating cost per job, at SVD-XT's size, on this machine's CPU.

Times `svdflow.outputs.post.post_process` (the step between a job's rendered frames and its encoders)
on 25 frames of 1024x576 for each loop and interpolate setting, on two kinds of frames: smooth motion
(a textured gradient panning 6 pixels a frame, what SVD clips resemble) and uniform noise (the worst
case for minterpolate's motion search). Prints one line per case: frames in and out, seconds.

    .venv/bin/python benchmarks/bench_clips.py [--frames 25] [--width 1024] [--height 576] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from svdflow.outputs.post import post_process  # noqa: E402

CASES = (("none", 1), ("pingpong", 1), ("crossfade", 1), ("none", 2), ("none", 4), ("crossfade", 4))


class Params:
    """The parameters post_process reads."""

    def __init__(self, loop: str, interpolate: int):
        self.loop, self.loop_frames, self.interpolate = loop, None, interpolate


def panning(frames: int, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 8, (width + 6 * frames) // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))  # 8x8 blocks: something to track
    return np.stack([texture[:height, 6 * i: 6 * i + width] for i in range(frames)])


def noise(frames: int, width: int, height: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for kind, make in (("panning", panning), ("noise", noise)):
        frames = make(args.frames, args.width, args.height)
        for loop, factor in CASES:
            started = time.perf_counter()
            out = post_process(frames, Params(loop, factor))
            seconds = time.perf_counter() - started
            results.append({"frames": kind, "loop": loop, "interpolate": factor, "in": len(frames), "out": len(out),
                            "seconds": round(seconds, 3)})
            print(f"{kind:8} loop {loop:9} interpolate {factor}: {len(frames)} -> {len(out):3} frames "
                  f"in {seconds:6.2f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                                         "size": [args.width, args.height], "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
