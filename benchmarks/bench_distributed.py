"""Throughput of one manifest with 1 and 2 processes (torchrun) on this machine's CPUs.

Renders the same builtin:tiny campaign into fresh folders: once with one process, once with one
process using 2 torch threads (SVDFLOW_CPU_THREADS=2), and once with `torchrun --nproc-per-node 2`.
Prints wall time (interpreter start and model build included), jobs/s over the whole run and over
the render phase alone (first job started to last job finished, from the index), and the scaling.

    .venv/bin/python benchmarks/bench_distributed.py [--jobs 16] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_campaign import campaign, timed  # noqa: E402

from svdflow.api import recorded_entries  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    base_env = {**os.environ, "OMP_NUM_THREADS": "1"}
    svdflow = [sys.executable, "-m", "svdflow", "run", "bench.yaml"]
    cases = {
        "1 process, 1 thread": (svdflow, {}),
        "1 process, 2 threads": (svdflow, {"SVDFLOW_CPU_THREADS": "2"}),
        "2 processes (torchrun)": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node", "2", "-m", "svdflow", "run", "bench.yaml"], {}),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (command, extra) in cases.items():
            manifest = campaign(Path(tmp) / name.replace(" ", "_").replace(",", ""), args.jobs, args.steps)
            folder = manifest.parent
            wall = timed(command, folder, {**base_env, **extra})
            entries = [e.model_dump(mode="json") for e in recorded_entries(folder / "out")]
            assert sum(e["status"] == "done" for e in entries) == args.jobs
            # Jobs after each rank's first (which also loads the model): the steady render phase.
            fastest = min(e["timings"]["render_s"] for e in entries)
            steady = [e for e in entries if e["timings"]["render_s"] < 3 * fastest]
            span = max(e["finished_unix"] for e in steady) - min(
                e["finished_unix"] - e["timings"]["total_s"] for e in steady)
            results[name] = (wall, len(steady) / span if span > 0 else float("nan"))
    print(f"{args.jobs} jobs, builtin:tiny 8x112x64, {args.steps} steps, {os.cpu_count()} CPUs")
    print(f"{'case':<26}{'wall s':>8}{'jobs/s':>8}{'render-phase jobs/s':>21}")
    for name, (wall, steady) in results.items():
        print(f"{name:<26}{wall:>8.1f}{args.jobs / wall:>8.2f}{steady:>21.2f}")
    one, two = results["1 process, 1 thread"], results["2 processes (torchrun)"]
    threads = results["1 process, 2 threads"]
    print(f"scaling, 2 processes vs 1: {one[0] / two[0]:.2f}x wall, {two[1] / one[1]:.2f}x render phase "
          f"(vs 1 process with 2 threads: {threads[0] / two[0]:.2f}x wall, {two[1] / threads[1]:.2f}x render phase)")


if __name__ == "__main__":
    main()
