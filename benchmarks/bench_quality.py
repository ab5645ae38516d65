"""What scoring a clip costs on one core: `svdflow.quality.score.score_clip` on 14- and 25-frame clips
of 1024x576 (SVD's and SVD-XT's), the target being 100 ms for 25 frames.

OpenCV, OpenMP and BLAS are held to one thread, and torch is never imported (the scores do not use it),
so the figures are one core's. Each clip is scored once to warm up (scikit-image loads lazily), then
`--repeats` times; the script prints the best and the median, in CPU time (this process's, which other
processes on a shared machine barely change) and in wall time (which they do), then where the time
of one 25-frame clip goes.

    .venv/bin/python benchmarks/bench_quality.py [--repeats 9] [--json PATH]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from svdflow.quality import analysis, exposure, fidelity, flicker, flow, motion  # noqa: E402
from svdflow.quality.score import score_clip  # noqa: E402

WIDTH, HEIGHT = 1024, 576
STEP = 6  # px a frame: a moderate SVD camera move


def panning_clip(frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth texture panning STEP px a frame with a little per-frame grain, and its first frame as input."""
    rng = np.random.default_rng(0)
    coarse = rng.random((HEIGHT // 16 + 1, (WIDTH + STEP * frames) // 16 + 1, 3)).astype(np.float32)
    wide = cv2.resize(coarse, (coarse.shape[1] * 16, coarse.shape[0] * 16), interpolation=cv2.INTER_CUBIC)
    wide = (wide - wide.min()) / (wide.max() - wide.min()) * 200 + 20
    clip = np.stack([wide[:HEIGHT, STEP * t: STEP * t + WIDTH] for t in range(frames)])
    clip = (clip + rng.normal(0, 3, clip.shape)).clip(0, 255).astype(np.uint8)
    return clip, clip[0].copy()


def timed(call, repeats: int) -> tuple[list[float], list[float]]:
    """CPU and wall milliseconds of `repeats` calls."""
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        call()
        cpu.append((time.process_time() - cpu_start) * 1000)
        wall.append((time.perf_counter() - wall_start) * 1000)
    return cpu, wall


def stages(frames: np.ndarray, image: np.ndarray, repeats: int) -> dict[str, float]:
    """Best CPU milliseconds of each step score_clip takes."""
    prepared = analysis.analyse(frames, image)
    flows = flow.backward_flows(prepared.luma)
    steps = {
        "analysis copies": lambda: analysis.analyse(frames, image),
        "DIS flow": lambda: flow.backward_flows(prepared.luma),
        "motion": lambda: motion.motion_scores(flows, frames=len(frames), reference_scale=prepared.reference_scale,
                                               reference_short_side=prepared.reference_short_side, fps=7.0),
        "flicker": lambda: flicker.flicker_scores(frames, prepared.luma, flows),
        "fidelity": lambda: fidelity.fidelity_scores(prepared),
        "exposure": lambda: exposure.exposure_scores(prepared.luma, prepared.input_luma),
    }
    return {name: round(min(timed(step, repeats)[0]), 1) for name, step in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    results = []
    for frames in (14, 25):
        clip, image = panning_clip(frames)
        score_clip(clip, image, fps=7.0)
        cpu, wall = timed(lambda clip=clip, image=image: score_clip(clip, image, fps=7.0), args.repeats)
        result = {"frames": frames, "size": [WIDTH, HEIGHT], "repeats": args.repeats,
                  "cpu_ms_best": round(min(cpu), 1), "cpu_ms_median": round(statistics.median(cpu), 1),
                  "wall_ms_best": round(min(wall), 1), "wall_ms_median": round(statistics.median(wall), 1)}
        results.append(result)
        print(f"{frames} frames {WIDTH}x{HEIGHT}: CPU {result['cpu_ms_best']:.1f} ms best, "
              f"{result['cpu_ms_median']:.1f} ms median; wall {result['wall_ms_best']:.1f} ms best, "
              f"{result['wall_ms_median']:.1f} ms median ({args.repeats} runs)", flush=True)
    breakdown = stages(*panning_clip(25), args.repeats)
    print("25 frames, best CPU ms by step: " + ", ".join(f"{name} {ms}" for name, ms in breakdown.items()))
    assert "torch" not in sys.modules, "scoring imported torch"
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                                         "cv2": cv2.__version__, "load_average": os.getloadavg(),
                                         "results": results, "steps_ms_25_frames": breakdown}, indent=2) + "\n")


if __name__ == "__main__":
    main()
