"""`svdflow run` with and without overlap_decode on the same manifest: the frames must be identical.

The bench times overlap_decode on the full-size architecture; this runs the real executor path
(session, step callbacks, side stream, pinned copies, writer) on `builtin:tiny` at a full-size
frame size, so decodes really run beside denoising, and compares every job's frames_sha256.
Writes PNG frames only (no ffmpeg needed).

    python benchmarks/overlap_run_check.py [--json PATH] [--jobs 4] [--size 576x1024] [--frames 14]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from svdflow.api import recorded_entries, run_manifest
from svdflow.run.progress import Reporter

MANIFEST = """svdflow: 1
name: overlap-{overlap}
model: {{source: "builtin:tiny"}}
hardware: {{profile: balanced, overlap_decode: {overlap}}}
output: {{dir: out-{overlap}, formats: [frames]}}
defaults: {{num_frames: {frames}, num_inference_steps: {steps}, width: {width}, height: {height}}}
items:
{items}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--size", default="576x1024", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    folder = Path(tempfile.mkdtemp(prefix="svdflow-overlap-check-"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / "a.png")
    items = "\n".join(f"  - {{id: j{i}, image: a.png, seed: {i}}}" for i in range(args.jobs))
    result: dict = {"jobs": args.jobs, "size": [args.frames, height, width], "steps": args.steps, "runs": {}}
    hashes = {}
    for overlap in ("false", "true"):
        manifest = folder / f"m-{overlap}.yaml"
        manifest.write_text(MANIFEST.format(overlap=overlap, frames=args.frames, steps=args.steps, width=width,
                                            height=height, items=items))
        started = time.perf_counter()
        run = run_manifest(manifest, reporter=Reporter())
        seconds = time.perf_counter() - started
        entries = [e.model_dump(mode="json") for e in recorded_entries(folder / f"out-{overlap}")]
        hashes[overlap] = {e["id"]: e["frames_sha256"] for e in entries}
        result["runs"][overlap] = {
            "seconds": round(seconds, 2),  # the first run also builds the pipeline
            "statuses": run.statuses,
            "device": entries[0]["hardware"]["device"],
            "overlap_recorded": [e["hardware"]["overlap_decode"] for e in entries],
            "render_s": [e["timings"]["render_s"] for e in entries],
            "decode_s": [e["timings"].get("decode_s") for e in entries],
        }
    result["identical"] = sum(hashes["true"][k] == hashes["false"].get(k) for k in hashes["true"])
    result["ok"] = result["identical"] == args.jobs and all(
        s == "done" for r in result["runs"].values() for s in r["statuses"].values())
    text = json.dumps(result)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
