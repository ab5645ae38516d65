"""One skewed manifest through each engine: 1 local process, torchrun with 2 processes, Ray with 2 actors.

The campaign is builtin:tiny on the CPU with a few jobs 4x longer than the rest (4x the denoising
steps), listed last, where a split made in manifest order would leave one worker with all of them.
Each engine renders it into a fresh folder, from a fresh process (interpreter and imports included
in the wall time). Ray runs on a local 2-CPU cluster that this script starts first, as a cluster
would be up before a run (its start is printed apart): `svdflow run --engine ray --address ...`.

Printed per engine:
- wall: the command's time, start to exit;
- makespan: from the run's start (its run_started event, before planning and before any model is
  loaded) to its last job's end (the last job_finished event): planning and every worker's model
  load included, however the engine overlaps them (Ray workers load theirs while the driver plans);
- jobs/s over the makespan;
- makespan / ideal, where ideal = total work / workers and total work is the sum of the jobs'
  times in the 1-process run (one model load);
- makespan / ideal with loads: every worker loads the model once, so a perfect N-worker schedule
  takes load + (the 1-process makespan - load) / N. The load is what the 1-process run spends before
  its first job could have been done: from its start to that job's end, less a job of the same steps
  (torch's and diffusers' imports included: most of them come before the first job's own timer
  starts, which is why the load is not that job's time less another's). This is what scheduling
  alone can approach;
- busy: the engine's own job times over workers x makespan, how much of the makespan its workers
  spent on jobs. It separates the schedule (idle workers, a long job started last) from each job
  being slower than in the 1-process run (2 workers sharing 2 cores with the machine's other load);
- cpu: how busy the machine's CPUs were over the makespan (every process: the engine's, Ray's own,
  ffmpeg), and those busy core-seconds. A run at ~100% could go no faster with a better schedule,
  only with less work or more cores: the last line gives the core-seconds that 1.1x the ideal with
  loads allows on this machine.

On a busy machine the figures move from run to run: --repeat N runs the engines N times in turn
and keeps each engine's fastest run (the total work and load from the fastest local run).

    .venv/bin/python benchmarks/bench_engines.py [--short 9] [--long 3] [--steps 8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_campaign import campaign  # noqa: E402

from svdflow.api import recorded_entries  # noqa: E402

SETTLE_S = 5.0  # a new Ray cluster's own processes are busy starting for a few seconds


class CpuSampler:
    """The machine's busy CPU time (all cores, every process), sampled every `every` s while it runs:
    `busy(a, b)` is the core-seconds spent between two wall-clock times (time.time()) within it."""

    def __init__(self, every: float = 0.2):
        self.every = every
        self.samples: list[tuple[float, float]] = []  # (time.time(), busy core-seconds since boot)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _sample(self) -> None:
        while True:
            self.samples.append((time.time(), self._busy()))
            if self._stop.wait(self.every):
                self.samples.append((time.time(), self._busy()))
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _at(self, moment: float) -> float:
        """Busy core-seconds at `moment`, interpolated between the samples around it."""
        for (t0, b0), (t1, b1) in zip(self.samples, self.samples[1:]):
            if t0 <= moment <= t1:
                return b0 + (b1 - b0) * (moment - t0) / max(t1 - t0, 1e-9)
        raise ValueError("a moment outside the sampled run")

    def busy(self, start: float, end: float) -> float:
        return self._at(end) - self._at(start)


def render_phase(out: Path, events: list[dict], jobs: int, cpu: CpuSampler) -> tuple[float, float, float, float]:
    """(makespan, total work, model load, the machine's busy core-seconds over the makespan). The
    makespan runs from the run's start (its run_started event: before planning, before any model is
    loaded) to its last job's end (the last job_finished event), so it includes every worker's model
    load however the engine overlaps it with planning. The total work is the sum of the jobs' times
    (index); the load, the time from the run's start to the first job's end less the median of the
    other jobs of its steps (meaningful for the 1-process run, whose first job waits for the model)."""
    entries = [e.model_dump(mode="json") for e in recorded_entries(out)]
    assert sum(e["status"] == "done" for e in entries) == jobs, "not every job was rendered"
    start = {e["id"]: e["finished_unix"] - e["timings"]["total_s"] for e in entries}
    first = min(entries, key=lambda e: start[e["id"]])
    peers = sorted(e["timings"]["total_s"] for e in entries if e is not first and
                   e["params"]["num_inference_steps"] == first["params"]["num_inference_steps"])
    began = min(e["time"] for e in events if e["event"] == "run_started")
    load = first["finished_unix"] - began - peers[len(peers) // 2]
    ended = max(e["time"] for e in events if e["event"] == "job_finished")
    return ended - began, sum(e["timings"]["total_s"] for e in entries), load, cpu.busy(began, ended)


def run_json(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, list[dict], CpuSampler]:
    """`command --json`: (wall seconds, its events, the machine's CPU meanwhile); exits with its
    stderr if it failed."""
    started = time.perf_counter()
    with CpuSampler() as cpu:
        proc = subprocess.run([*command, "--json"], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    events = []
    for line in proc.stdout.splitlines():
        with contextlib.suppress(ValueError):  # two ranks writing at once may garble a line
            events.append(json.loads(line))
    return wall, events, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=9, help="short jobs")
    parser.add_argument("--long", type=int, default=3, help="jobs with 4x the steps")
    parser.add_argument("--steps", type=int, default=8, help="a short job's denoising steps")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine; the fastest is kept")
    args = parser.parse_args()
    jobs = args.short + args.long
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DISABLE_USAGE_STATS": "1",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # the Ray cluster on 127.0.0.1 only
    os.environ.update(env)  # before ray is imported: it reads them then
    import ray

    started = time.perf_counter()
    # Exactly 2 CPUs: 2 one-CPU workers whatever this machine has.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    cluster_s = time.perf_counter() - started
    address = ray.get_runtime_context().gcs_address
    env = dict(os.environ)  # with RAY_AUTH_MODE=token, which ray.init set for the processes it starts
    time.sleep(SETTLE_S)
    run = ["-m", "svdflow", "run", "bench.yaml"]
    cases = {  # name: (command, workers)
        "local, 1 process": ([sys.executable, *run], 1),
        "torchrun, 2 processes": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   "--nproc-per-node", "2", *run], 2),
        "ray, 2 actors": ([sys.executable, *run, "--engine", "ray", "--address", address], 2),
    }
    results: dict[str, tuple] = {}
    for _ in range(args.repeat):
        for name, (command, workers) in cases.items():
            with tempfile.TemporaryDirectory() as tmp:
                manifest = campaign(Path(tmp) / "campaign", args.short, args.steps, long=args.long)
                wall, events, cpu = run_json(command, manifest.parent, env)
                measured = (workers, wall, *render_phase(manifest.parent / "out", events, jobs, cpu))
            if name not in results or measured[2] < results[name][2]:
                results[name] = measured
    ray.shutdown()
    _, _, alone, work, load, _ = results["local, 1 process"]
    cores = psutil.cpu_count()
    print(f"{jobs} jobs ({args.long} with {4 * args.steps} steps, {args.short} with {args.steps}), builtin:tiny "
          f"8x112x64, {cores} CPUs; total work {work:.1f} s (the 1-process run's job times), "
          f"model load {load:.1f} s (start to the first job done, less a job); the Ray cluster started in {cluster_s:.1f} s (not in the Ray run's wall)")
    print(f"{'engine':<24}{'wall s':>7}{'makespan s':>11}{'jobs/s':>7}{'ideal s':>8}{'/ideal':>7}"
          f"{'ideal+loads s':>14}{'/ideal+loads':>13}{'busy':>6}{'cpu':>6}{'cpu s':>7}")
    for name, (workers, wall, makespan, own_work, _, cpu_s) in results.items():
        ideal, with_loads = work / workers, load + (alone - load) / workers
        print(f"{name:<24}{wall:>7.1f}{makespan:>11.1f}{jobs / makespan:>7.2f}{ideal:>8.1f}{makespan / ideal:>6.2f}x"
              f"{with_loads:>14.1f}{makespan / with_loads:>12.2f}x{own_work / (workers * makespan):>6.0%}"
              f"{cpu_s / (cores * makespan):>6.0%}{cpu_s:>7.1f}")
    workers = max(count for count, *_ in results.values())
    allowed = 1.1 * (load + (alone - load) / workers)
    print(f"1.1x the ideal with loads for {workers} workers is {allowed:.1f} s: at most {allowed * cores:.1f} core-seconds "
          f"on this machine's {cores} CPUs (cpu s: what each run used over its makespan)")


if __name__ == "__main__":
    main()
