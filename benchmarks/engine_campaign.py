"""What the engine benchmarks share: a tiny campaign of uniform (and optionally 4x longer) jobs, and
timing one whole command."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_image  # noqa: E402


def campaign(folder: Path, short: int, steps: int, long: int = 0) -> Path:
    """`short` jobs of `steps` steps, then `long` jobs of 4x the steps, on builtin:tiny."""
    folder.mkdir(parents=True)
    for i in range(4):
        write_image(folder / f"in{i}.png", width=448, height=256, seed=i)
    items = [f"  - {{id: s{i:02d}, image: in{i % 4}.png, seed: {i}}}" for i in range(short)]
    items += [f"  - {{id: l{i:02d}, image: in{i % 4}.png, seed: {100 + i}, num_inference_steps: {4 * steps}}}"
              for i in range(long)]
    manifest = folder / "bench.yaml"
    manifest.write_text("\n".join([
        "svdflow: 1", "name: bench", "model: {source: 'builtin:tiny'}", "hardware: {profile: cpu}",
        "output: {dir: out, formats: [mp4]}",
        f"defaults: {{num_frames: 8, num_inference_steps: {steps}, width: 112, height: 64}}", "items:", *items]) + "\n")
    return manifest


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds `command` took; exits with its stderr if it failed."""
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started
