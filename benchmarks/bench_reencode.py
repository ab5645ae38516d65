"""Re-encoding a finished campaign to a new crf versus rendering it.

Renders a 20-job builtin:tiny campaign on the CPU (`svdflow run`, a new process, as a user runs it),
then changes output.crf and runs it again: every job is re-encoded from its lossless master, no
pipeline is built and torch is not imported. Prints both wall-clock figures (whole commands,
interpreter start included), the same crf change with `masters: false` (which renders again), and
the masters' size.

    .venv/bin/python benchmarks/bench_reencode.py [--jobs 20] [--formats mp4,gif] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run(manifest: Path) -> tuple[float, dict]:
    """`svdflow run --json` in a new process: (wall seconds, its run_finished event)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "svdflow", "run", str(manifest), "--json"], capture_output=True,
                          text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return wall, json.loads(proc.stdout.splitlines()[-1])


def write_manifest(path: Path, jobs: int, formats: str, crf: int, masters: bool) -> Path:
    items = [f"  - {{id: job{i:02d}, image: in{i}.png}}" for i in range(jobs)]
    path.write_text("\n".join([
        "svdflow: 1", "name: bench", "model: {source: 'builtin:tiny'}", "hardware: {profile: cpu}",
        f"output: {{dir: out, formats: [{formats}], crf: {crf}, masters: {str(masters).lower()}}}",
        "defaults: {num_frames: 8, num_inference_steps: 4, width: 112, height: 64}", "items:", *items]) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--formats", default="mp4,gif")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    formats = ", ".join(f.strip() for f in args.formats.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.jobs):
            write_image(folder / f"in{i}.png", width=448, height=256, seed=i)
        manifest = folder / "bench.yaml"
        render_s, rendered = run(write_manifest(manifest, args.jobs, formats, 18, True))
        reencode_s, reencoded = run(write_manifest(manifest, args.jobs, formats, 23, True))
        assert (rendered["rendered"], reencoded["re_encoded"], reencoded["rendered"]) == (args.jobs, args.jobs, 0)
        without_s, without = run(write_manifest(manifest, args.jobs, formats, 28, False))
        assert without["rendered"] == args.jobs
        masters_bytes = rendered["masters_bytes"]

    print(f"{args.jobs} jobs, builtin:tiny 8x112x64, 4 steps, CPU; formats {formats}; whole `svdflow run` commands")
    print(f"render (crf 18, masters kept):          {render_s:7.2f} s  ({render_s / args.jobs:.3f} s/job)")
    print(f"crf 18 -> 23, re-encoded from masters:  {reencode_s:7.2f} s  ({reencode_s / args.jobs:.3f} s/job)"
          f"  {render_s / reencode_s:.1f}x faster")
    print(f"crf 23 -> 28 with masters: false:       {without_s:7.2f} s  (renders again)")
    print(f"masters: {masters_bytes} bytes ({masters_bytes / args.jobs / 1024:.1f} KiB per job)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({
            "jobs": args.jobs, "formats": formats, "render_s": round(render_s, 3), "reencode_s": round(reencode_s, 3),
            "render_without_masters_s": round(without_s, 3), "masters_bytes": masters_bytes}, indent=2) + "\n")


if __name__ == "__main__":
    main()
