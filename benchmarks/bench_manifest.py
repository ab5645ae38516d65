"""How long `validate` and `plan` take on big campaigns.

    python benchmarks/bench_manifest.py [--scenario written|campaign|bomb|memory|both] [--items N]
                                        [--table-rows N] [--glob-files N] [--repeat N] [--profile]
                                        [--scale F]

Four scenarios, each written into a temp folder (`both`: the first two):
  written   a manifest of 10,000 items written out (a few overrides each, a handful of sweeps,
            images pointing at 3 real local files). Target: each command under 2 s on 2 cores.
  campaign  100,000 items from a CSV table (ids, images among the glob's files, a few parameter
            columns, some cells empty) plus a glob over 10,000 local image files; num_frames
            follows the model (max_jobs raised to 200,000: 110,000 jobs is past the default).
            Target: validated and planned in 10 s or less on 2 cores.
  bomb      one item swept over three keys of 256 values: 16,777,216 jobs, past max_jobs. Target:
            `svdflow validate` says so in under 1 s (counted from the lists' lengths, nothing made).
  memory    the largest files the size limits allow, each refused by `svdflow validate` (exit 2):
            a 4 MiB manifest of `items: [{},{},...]` (1.4 million items with 2 errors each), a 64 MiB
            manifest of items written out (past max_jobs), and a 512 MiB table of tiny rows (past
            max_jobs). Target: peak RSS <= 2 GB each, at most ~100 errors printed. --scale 0.1
            writes files a tenth of those sizes (a quick check; the figures scale with it).
Each is timed, best of --repeat:
  in one process:  load_manifest (read + validate), resolve (lists the glob, reads the table),
                   plan_run (the whole `plan` decision: hashing the inputs, loading the empty index);
  as subprocesses: `svdflow validate` and `svdflow plan --json`, wall time with interpreter start.
Wall seconds are what a user waits; CPU seconds (user + system, children's for subprocesses)
barely move when other work shares the machine. --profile prints where the in-process time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from svdflow.manifest import load_manifest, resolve  # noqa: E402
from svdflow.run.planning import plan_run  # noqa: E402

TARGET_S = {"written": 2.0, "campaign": 10.0}
TARGET_RSS_BYTES = 2 * 10**9
MIB = 2**20
SWEEPS = 5  # items with a 3 x 2 sweep each


def write_written(folder: Path, n_items: int) -> Path:
    images = folder / "images"
    images.mkdir(parents=True)
    for i, color in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
        Image.new("RGB", (1024, 576), color).save(images / f"img{i}.png")
    lines = [
        "# yaml-language-server: $schema=../schemas/manifest.schema.json",
        "svdflow: 1",
        "name: bench",
        "model:",
        "  source: stabilityai/stable-video-diffusion-img2vid-xt",
        "  variant: fp16",
        "hardware:",
        "  profile: auto",
        "output:",
        "  dir: renders/{name}",
        "  formats: [mp4, webp]",
        "defaults:",
        "  num_frames: 25",
        "  num_inference_steps: 25",
        "  width: 1024",
        "  height: 576",
        "  seed: 42",
        "items:",
    ]
    sweep_every = max(1, n_items // SWEEPS)
    for i in range(n_items):
        lines += [f"  - id: shot-{i:05d}", f"    image: images/img{i % 3}.png",
                  f"    motion_bucket_id: {60 + i % 190}", f"    noise_aug_strength: {0.02 + (i % 5) / 100:.2f}"]
        if i % 7 == 0:
            lines.append(f"    seed: {i}")
        if i % 11 == 0:
            lines.append("    fps: 6\n    playback_fps: 12")
        if i % sweep_every == 0:
            lines += ["    sweep:", "      motion_bucket_id: [60, 127, 200]", "      noise_aug_strength: [0.02, 0.1]"]
    path = folder / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_table_campaign(folder: Path, n_rows: int, n_files: int) -> Path:
    """A glob over `n_files` small PNGs and a CSV of `n_rows` rows whose images are those files."""
    shots = folder / "shots"
    for sub in range(10):
        (shots / f"set{sub}").mkdir(parents=True)
    for i in range(n_files):
        # Distinct bytes per file, so planning hashes as many different inputs as there are files.
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, 7)).save(shots / f"set{i % 10}" / f"img{i:05d}.png")
    rows = ["id,image,motion_bucket_id,noise_aug_strength,seed,fps"]
    for i in range(n_rows):
        seed = str(i) if i % 7 == 0 else ""
        fps = "6" if i % 11 == 0 else ""
        rows.append(f"row-{i:06d},shots/set{i % n_files % 10}/img{i % n_files:05d}.png,{60 + i % 190},"
                    f"{0.02 + (i % 5) / 100:.2f},{seed},{fps}")
    (folder / "shots.csv").write_text("\n".join(rows) + "\n")
    path = folder / "campaign.yaml"
    path.write_text("\n".join([
        "svdflow: 1",
        "name: campaign",
        "max_jobs: 200000",
        "model:",
        "  source: stabilityai/stable-video-diffusion-img2vid-xt",
        "output:",
        "  dir: renders/{name}",
        "defaults:",
        "  num_inference_steps: 25",
        "  seed: 42",
        "items:",
        "  - glob: shots/**/*.png",
        "    id_prefix: g-",
        "    motion_bucket_id: 150",
        "  - table: shots.csv",
        "    noise_aug_strength: 0.05",
    ]) + "\n")
    return path


def write_bomb(folder: Path) -> Path:
    """Three sweeps of 256 values: 16.7 million jobs from nine lines."""
    values = ", ".join(str(i) for i in range(256))
    path = folder / "bomb.yaml"
    path.write_text("\n".join([
        "svdflow: 1", "model: {source: builtin:tiny}", "items:", "  - id: city", "    image: city.png",
        "    sweep:", f"      motion_bucket_id: [{values}]", f"      seed: [{values}]",
        f"      num_inference_steps: [{', '.join(str(i) for i in range(1, 257))}]"]) + "\n")
    return path


def measure_bomb(path: Path, repeat: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def call() -> str:
        proc = subprocess.run([sys.executable, "-m", "svdflow", "validate", str(path)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 2:
            raise SystemExit(f"svdflow validate exited {proc.returncode}, expected 2:\n{proc.stderr[-2000:]}")
        return proc.stderr

    wall, cpu, err = best_of(repeat, call)
    print(f"\nbomb: a sweep of 16,777,216 jobs; best of {repeat}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}\n{err.splitlines()[0]}")
    print(f"`svdflow validate` (subprocess): {wall:.3f} s wall, {cpu:.3f} s CPU; target <= 1 s: "
          f"{'within' if wall <= 1.0 else 'OVER'}")


def write_empty_items(folder: Path, size: int) -> Path:
    """`items: [{},{},...]`: every item misses its id and image (two errors each)."""
    head = "svdflow: 1\nmodel: {source: builtin:tiny}\nitems: ["
    count = (size - len(head) - 2) // 3
    path = folder / "empty-items.yaml"
    with path.open("w") as f:
        f.write(head + ",".join(["{}"] * count) + "]\n")
    return path


def write_big_manifest(folder: Path, size: int) -> Path:
    """Items written out, a few parameters each, up to `size` bytes: ~1 million items at 64 MiB, ten
    times the default max_jobs."""
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (80 * i, 40, 40)).save(images / f"img{i}.png")
    path = folder / "big-manifest.yaml"
    with path.open("w") as f:
        written = f.write("svdflow: 1\nmodel: {source: builtin:tiny}\ndefaults: {num_frames: 4}\nitems:\n")
        i = 0
        while True:
            item = (f"  - id: shot-{i:07d}\n    image: images/img{i % 3}.png\n    motion_bucket_id: {60 + i % 190}\n"
                    f"    noise_aug_strength: {0.02 + (i % 5) / 100:.2f}\n")
            if written + len(item) > size:
                break
            written += f.write(item)
            i += 1
    return path


def write_big_table(folder: Path, size: int) -> Path:
    """A CSV of tiny rows up to `size` bytes (~50 million rows at 512 MiB), named by a 5-line manifest."""
    table = folder / "rows.csv"
    with table.open("w") as f:
        written = f.write("id,image\n")
        block, i = [], 0
        while written < size - 64:
            row = f"r{i},a.png\n"
            block.append(row)
            written += len(row)
            i += 1
            if len(block) == 100_000:
                f.write("".join(block))
                block = []
        f.write("".join(block))
    path = folder / "big-table.yaml"
    path.write_text("svdflow: 1\nmodel: {source: builtin:tiny}\nitems:\n  - table: rows.csv\n")
    return path


# Runs one command and prints its peak RSS (kB, Linux): the wrapper's only child is the command, so
# RUSAGE_CHILDREN's maximum is that command's alone.
_PEAK_RSS = ("import resource, subprocess, sys; proc = subprocess.run(sys.argv[1:], capture_output=True); "
             "sys.stdout.write(f'{proc.returncode} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n'); "
             "sys.stdout.write(proc.stderr.decode('utf-8', 'replace'))")


def peak_rss(*args: str) -> tuple[int, int, float, str]:
    """(exit code, peak RSS in bytes, wall seconds, stderr) of `svdflow ARGS` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "svdflow", *args], env=env,
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    first, _, stderr = proc.stdout.partition("\n")
    code, kilobytes = (int(part) for part in first.split())
    return code, kilobytes * 1024, wall, stderr


def measure_memory(folder: Path, scale: float) -> None:
    cases = [("4 MiB manifest of `items: [{},{},...]`", write_empty_items, 4 * MIB),
             ("64 MiB manifest of written items", write_big_manifest, 64 * MIB),
             ("512 MiB table of tiny rows", write_big_table, 512 * MIB)]
    print(f"\nmemory: `svdflow validate` on the largest files the limits allow (x{scale:g}); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name, write, size in cases:
        path = write(folder, int(size * scale))
        code, rss, wall, err = peak_rss("validate", str(path))
        lines = err.splitlines()
        written = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        print(f"{name}: {written / MIB:.1f} MiB written; exit {code}, peak RSS {rss / 1e9:.2f} GB "
              f"({'within' if rss <= TARGET_RSS_BYTES else 'OVER'} 2 GB), {wall:.1f} s, {len(lines)} lines on "
              f"stderr\n  first: {lines[0][:160] if lines else ''}\n  last:  {lines[-1][:160] if lines else ''}")
        for entry in folder.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def best_of(n: int, fn: Callable[[], object]) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result) over n runs."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(n):
        start, start_cpu = time.perf_counter(), _cpu()
        result = fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, _cpu() - start_cpu)
    return wall, cpu, result


def cli(*args: str) -> Callable[[], None]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def call() -> None:
        proc = subprocess.run([sys.executable, "-m", "svdflow", *args], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"svdflow {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")

    return call


def measure(name: str, path: Path, repeat: int, profile: bool) -> None:
    *t_load, loaded = best_of(repeat, lambda: load_manifest(path))
    *t_resolve, spec = best_of(repeat, lambda: resolve(loaded))
    *t_plan, planned = best_of(repeat, lambda: plan_run(spec))
    assert len(planned) == len(spec.jobs) and not spec.warnings, spec.warnings[:3]
    *t_validate, _ = best_of(repeat, cli("validate", str(path)))
    *t_plan_cli, _ = best_of(repeat, cli("plan", "--json", str(path)))

    rows = [
        ("load_manifest (read + validate)", t_load),
        ("resolve", t_resolve),
        ("plan_run (hash inputs, load index)", t_plan),
        ("in-process total", [a + b + c for a, b, c in zip(t_load, t_resolve, t_plan, strict=True)]),
        ("`svdflow validate` (subprocess)", t_validate),
        ("`svdflow plan --json` (subprocess)", t_plan_cli),
    ]
    inputs = sum(f.stat().st_size for f in path.parent.glob("*.*") if f.is_file())
    print(f"\n{name}: {len(spec.jobs)} jobs, {inputs / 1e6:.2f} MB of manifest and tables; best of {repeat}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    width = max(len(step) for step, _ in rows)
    print(f"{'step':<{width}}  wall s   CPU s")
    for step, (wall, cpu) in rows:
        print(f"{step:<{width}}  {wall:6.3f}  {cpu:6.3f}")
    target = TARGET_S[name]
    verdict = "within" if max(t_validate[0], t_plan_cli[0]) <= target else "OVER"
    print(f"target: `svdflow validate` and `svdflow plan` each <= {target:.0f} s on 2 cores: {verdict}")

    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        plan_run(resolve(load_manifest(path)))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["written", "campaign", "bomb", "memory", "both"], default="both")
    parser.add_argument("--items", type=int, default=10_000, help="written: items in the manifest")
    parser.add_argument("--table-rows", type=int, default=100_000, help="campaign: rows of the table")
    parser.add_argument("--glob-files", type=int, default=10_000, help="campaign: files the glob matches")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile load + resolve + plan and print the top")
    parser.add_argument("--scale", type=float, default=1.0, help="memory: file sizes times this")
    args = parser.parse_args()

    if args.scenario in ("written", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            measure("written", write_written(Path(tmp), args.items), args.repeat, args.profile)
    if args.scenario in ("campaign", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            path = write_table_campaign(Path(tmp), args.table_rows, args.glob_files)
            measure("campaign", path, args.repeat, args.profile)
    if args.scenario == "bomb":
        with tempfile.TemporaryDirectory() as tmp:
            measure_bomb(write_bomb(Path(tmp)), args.repeat)
    if args.scenario == "memory":
        with tempfile.TemporaryDirectory() as tmp:
            measure_memory(Path(tmp), args.scale)


if __name__ == "__main__":
    main()
