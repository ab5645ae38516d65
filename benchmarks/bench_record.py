"""The record of a campaign of N jobs: what recording, loading, planning and re-running it cost.

For each N: a manifest with a table of N rows (over 1,000 distinct small PNGs, cycled), resolved by
svdflow itself; every job's keys from svdflow's own planning; entries copied from one real entry (a
builtin:tiny render) with each job's id, keys, parameters, input and files; outputs and masters as
small files of the recorded size. Nothing is rendered: every job is recorded as done, so `plan` and
`run` find all of them up to date (that is the cost measured: the bookkeeping around the renders).

Measured:
- record: ms per job of `RunIndex.record` + `flush_if_due` (sidecar, line, sealed parts, compactions)
  over the first and the last 1,000 jobs (mean, median and max), and all bytes written over the campaign;
- load (after `sync`: the campaign's own writes are flushed first, their time printed as sync_s):
  `RunIndex.load` in a new process (seconds after its imports, peak RSS);
- plan / run: `svdflow plan --json` and `svdflow run --json` of the finished campaign, new processes
  (wall seconds, peak RSS), first cold (no remembered input hashes), then warm;
- s3 (with --s3): the same folder on a moto S3 server on loopback: the requests a `plan` and a
  `run` of the finished campaign make, counted from the server's request log.

    .venv/bin/python benchmarks/bench_record.py [--sizes 1000,10000,100000] [--repeat 3] [--s3 1000] [--s3-logs DIR]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import write_image  # noqa: E402
from s3_server import MotoServer  # noqa: E402

IMAGES = 1000
DUMMY = b"svdflow-bench-output\n"  # what each output and master "is": the record's sizes say so
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def template_entry(work: Path) -> dict:
    """One real entry: a builtin:tiny job rendered here (JSON of its sidecar)."""
    folder = work / "template"
    folder.mkdir()
    write_image(folder / "a.png")
    (folder / "m.yaml").write_text("svdflow: 1\nname: t\nmodel: {source: 'builtin:tiny'}\nhardware: {profile: cpu}\n"
                                   "output: {dir: out, formats: [mp4]}\ndefaults: {num_frames: 4, "
                                   "num_inference_steps: 2, width: 64, height: 64}\nitems:\n  - id: a\n    image: a.png\n")
    subprocess.run([sys.executable, "-m", "svdflow", "run", str(folder / "m.yaml")], env=ENV, check=True,
                   capture_output=True)
    return json.loads((folder / "out" / "a.json").read_text())


def campaign(work: Path, n: int, output_dir: str) -> Path:
    folder = work / f"n{n}"
    images = work / "images"
    if not images.exists():
        images.mkdir()
        for i in range(IMAGES):
            write_image(images / f"{i:04d}.png", 32, 32, seed=i)
    folder.mkdir()
    rows = "".join(f"j{i:06d},{images}/{i % IMAGES:04d}.png\n" for i in range(n))
    (folder / "shots.csv").write_text("id,image\n" + rows)
    (folder / "m.yaml").write_text(
        f"svdflow: 1\nname: bench\nmodel: {{source: 'builtin:tiny'}}\nhardware: {{profile: cpu}}\n"
        f"output: {{dir: '{output_dir}', formats: [mp4]}}\ndefaults: {{num_frames: 4, num_inference_steps: 2, "
        "width: 64, height: 64}\nitems:\n  - table: shots.csv\n")
    return folder / "m.yaml"


class CountingStore:
    """An OutputStore that counts the bytes it writes."""

    def __init__(self, store):
        self.store, self.written = store, 0
        self.original = store.write_bytes

        def write_bytes(name, data):
            self.written += len(data)
            self.original(name, data)

        store.write_bytes = write_bytes


def record_campaign(manifest: Path, template: dict, n: int, store_url: str | None = None) -> dict:
    """Write the finished campaign's record through RunIndex.record, timing it."""
    from svdflow.api import load_run_spec
    from svdflow.outputs.entry import IndexEntry
    from svdflow.outputs.index import RunIndex
    from svdflow.outputs.masters import master_name
    from svdflow.outputs.store import OutputStore
    from svdflow.run.input_hashes import input_sha256
    from svdflow.run.keys import key_material

    spec = load_run_spec(manifest)
    store = OutputStore(store_url or spec.output_dir)
    store.makedirs()
    hashes = {image: input_sha256(image) for image in sorted({job.image for job in spec.jobs})}
    base = IndexEntry.model_validate(template)
    entries = []
    for job in spec.jobs:
        material = key_material(job, hashes[job.image], spec)
        out = base.outputs[0].model_copy(update={"file": f"{job.id}.mp4", "bytes": len(DUMMY)})
        master = base.master.model_copy(update={"file": master_name(job.id), "bytes": len(DUMMY)})
        entries.append(base.model_copy(update={
            "id": job.id, "item_id": job.item_id, "key": material.key, "render_key": material.render_key,
            "output_key": material.output_key, "key_material": material, "params": job.params, "seed": job.seed,
            "seed_origin": job.seed_origin, "sweep": job.sweep,
            "input": base.input.model_copy(update={"uri": job.image, "sha256": hashes[job.image]}),
            "outputs": [out], "master": master, "output": base.output.model_copy(update={"formats": ["mp4"]}),
            "run": base.run.model_copy(update={"name": spec.name, "manifest": str(spec.manifest_path)})}))
        if store.is_local:
            (Path(store.root) / f"{job.id}.mp4").write_bytes(DUMMY)
    if store.is_local:
        masters = Path(store.root) / ".svdflow" / "masters"
        masters.mkdir(parents=True, exist_ok=True)
        for job in spec.jobs:
            (masters / f"{job.id}.mkv").write_bytes(DUMMY)
    else:  # s3fs's pipe: its PUTs concurrent, not a call each (moto took ~48 PUTs a second here)
        for files in (f"{job.id}.mp4" for job in spec.jobs), (master_name(job.id) for job in spec.jobs):
            store.fs.pipe({f"{store.root}/{name}": DUMMY for name in files})
    counting = CountingStore(store)
    index = RunIndex.load(store)
    window = min(1000, n)
    row: dict = {}
    times = []

    def timed(batch) -> None:
        for entry in batch:
            t = time.perf_counter()
            index.record(entry)
            index.flush_if_due()
            times.append(time.perf_counter() - t)

    started = time.perf_counter()
    if n > BULK_ABOVE:
        # Recording all N at ~15 ms a job (two fsyncs a sidecar on this disk) would take most of an
        # hour: the first and the last 1,000 are recorded as a run does, the ones between without fsync.
        timed(entries[:window])
        bulk = _plain_writer(store) if store.is_local else _BatchedPuts(store)
        store.write_bytes = bulk
        if not store.is_local:
            store.remove = bulk.remove
        for entry in entries[window:-window]:
            index.record(entry)
            index.flush_if_due()
        if not store.is_local:
            bulk.flush()
            del store.remove
        store.write_bytes = counting.store.write_bytes = _counted(counting)
        row["bulk_recorded"] = n - 2 * window
        timed(entries[-window:])
    else:
        timed(entries)
    t = time.perf_counter()
    index.finish([job.id for job in spec.jobs])
    finish_s = time.perf_counter() - t
    total = time.perf_counter() - started
    first, last = sorted(times[:window]), sorted(times[-window:])
    # The mean carries the parts sealed (and any compaction) in its window; the median is one job's own
    # record, the max the longest (a seal or a compaction, and the disk's fsync outliers).
    row.update({"record_first_ms": round(sum(first) / window * 1000, 3),
                "record_last_ms": round(sum(last) / window * 1000, 3),
                "record_first_median_ms": round(first[window // 2] * 1000, 3),
                "record_last_median_ms": round(last[window // 2] * 1000, 3),
                "record_first_max_ms": round(first[-1] * 1000, 1), "record_last_max_ms": round(last[-1] * 1000, 1),
                "record_total_s": round(total, 2), "final_compaction_s": round(finish_s, 2),
                "bytes_written": counting.written, "index_jsonl_bytes": store.size("index.jsonl"),
                "sidecar_bytes": store.size(f"{spec.jobs[0].id}.json")})
    return row


BULK_ABOVE = 20000


def _plain_writer(store):
    def write_bytes(name, data):
        path = Path(store.root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return write_bytes


class _BatchedPuts:
    """An object store's writes held and sent as concurrent PUTs (s3fs's pipe), in batches, for the
    jobs between the timed windows (recording on moto took 24-30 ms a job here at 10k). A removal (a
    mid-run compaction's) sends what is held first, so that what it removes is there."""

    BATCH = 2000

    def __init__(self, store):
        self.store, self.held, self.original_remove = store, {}, store.remove

    def __call__(self, name, data):
        self.held[f"{self.store.root}/{name}"] = bytes(data)
        if len(self.held) >= self.BATCH:
            self.flush()

    def flush(self):
        if self.held:
            self.store.fs.pipe(self.held)
            self.held = {}

    def remove(self, name):
        self.flush()
        self.original_remove(name)


def _counted(counting):
    def write_bytes(name, data):
        counting.written += len(data)
        counting.original(name, data)
    return write_bytes


def _keep(row: dict, name: str, seconds: float, rss_mb: float) -> None:
    """One timing of `name`: the fastest so far as <name>_s (with its peak RSS), each in <name>_all_s."""
    seconds = round(seconds, 2)
    row.setdefault(f"{name}_all_s", []).append(seconds)
    if seconds <= min(row[f"{name}_all_s"]):
        row[f"{name}_s"], row[f"{name}_rss_mb"] = seconds, round(rss_mb)


def child(code: str) -> str:
    """Python `code` in a new process: its stdout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True).stdout


# Peak RSS from /proc/self/status (VmHWM): ru_maxrss would carry this benchmark's own peak into the
# children it starts (Linux keeps it across fork and exec).
PEAK_MB = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
# Timed from after the imports (they take seconds on a loaded machine and do not grow with N).
LOAD = ("import time; from svdflow.outputs.index import RunIndex; "
        "from svdflow.outputs.store import OutputStore; t = time.perf_counter(); i = RunIndex.load(OutputStore({!r})); "
        f"print(len(i), time.perf_counter() - t, {PEAK_MB})")

CLI_TIMED = ("import sys, time, runpy; sys.argv = ['svdflow'] + sys.argv[1:]; t = time.perf_counter()\n"
             "try:\n    runpy.run_module('svdflow', run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\n"
             f"print('BENCH', time.perf_counter() - t, {PEAK_MB}, code, file=sys.stderr)")


def cli(*args: str, env: dict | None = None) -> tuple[float, float, str]:
    """`svdflow ARGS` in a new process: (seconds, peak RSS MB, stdout's last line)."""
    proc = subprocess.run([sys.executable, "-c", CLI_TIMED, *args], capture_output=True, text=True, env=env or ENV)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("BENCH ")][-1].split()
    if line[3] not in ("0", "None"):
        raise SystemExit(f"svdflow {' '.join(args)} exited {line[3]}: {proc.stderr[-2000:]}")
    return float(line[1]), float(line[2]), (proc.stdout.strip().splitlines() or [""])[-1]


def bench_size(work: Path, template: dict, n: int, repeat: int = 1) -> dict:
    manifest = campaign(work, n, "out")
    row: dict = {"jobs": n, "load_average_before": os.getloadavg()[0], **record_campaign(manifest, template, n)}
    out = manifest.parent / "out"
    # The campaign just written (hundreds of MB at 100k) is still being flushed to the disk: what
    # follows is timed once the kernel has written it, as a plan or rerun of a campaign would be.
    written = time.perf_counter()
    os.sync()
    row["sync_s"] = round(time.perf_counter() - written, 2)
    # Each of load, plan and run `repeat` times: the fastest kept (this shared VM's speed drifts by a
    # quarter from minute to minute), every time listed under "<name>_all_s".
    for _ in range(repeat):
        printed = child(LOAD.format(str(out)))
        count, load_s, load_mb = printed.split()
        assert int(count) == n, printed
        _keep(row, "load", float(load_s), float(load_mb))
    for stage in ("cold", "warm"):
        for _ in range(repeat):
            if stage == "warm":
                assert (out / ".svdflow" / "inputs.jsonl").exists()
            else:  # cold every time: no remembered input hashes
                (out / ".svdflow" / "inputs.jsonl").unlink(missing_ok=True)
            wall, rss, _ = cli("plan", str(manifest), "--json", env={**ENV, "COLUMNS": "200"})
            _keep(row, f"plan_{stage}", wall, rss)
            wall, rss, last = cli("run", str(manifest), "--json")
            summary = json.loads(last)
            assert summary["up_to_date"] == n and summary["rendered"] == 0, summary
            _keep(row, f"run_{stage}", wall, rss)
    row["load_average_after"] = os.getloadavg()[0]  # the machine's 1-minute load: the timings' noise
    shutil.rmtree(manifest.parent)
    return row


def bench_s3(work: Path, template: dict, n: int, logs: Path | None = None) -> dict:
    """The requests `plan` and `run` of a finished N-job campaign make to an S3 output folder (moto)."""
    import s3fs

    server = MotoServer(work / f"moto-{n}.log")
    env = {**ENV, **server.environment()}
    os.environ.update(server.environment())
    s3fs.S3FileSystem.clear_instance_cache()  # one made for an earlier N's server would be reused
    try:
        server.client().create_bucket(Bucket="bench")
        manifest = campaign(work, n, "s3://bench/out")
        before = server.mark()
        row: dict = {"jobs": n, **record_campaign(manifest, template, n)}
        # less the bench's own uploads of each job's dummy output and master
        row["recording_requests_per_job"] = round((server.counts(before)["total"] - 2 * n) / n, 3)

        def requests_of(*args: str) -> dict:
            before = server.mark()
            cli(*args, env=env)
            return {**server.counts(before), "by_target": requests_by_target(server.requests(before))}

        row["plan_cold"] = requests_of("plan", str(manifest), "--json")
        row["run_first"] = requests_of("run", str(manifest), "--json")
        row["plan_warm"] = requests_of("plan", str(manifest), "--json")
        row["run_warm"] = requests_of("run", str(manifest), "--json")
        row["target"] = n // 500 + 50
        shutil.rmtree(manifest.parent)
        return row
    finally:
        server.close()
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(server.log, logs / server.log.name)


JOB_ID = re.compile(r"j\d{6}")


def requests_by_target(requests: list[tuple[str, str]]) -> dict[str, int]:
    """Requests by what they ask for: a folder's listing pages ("LIST out/"), else method and key with
    each job's id as <id> (a request per job would show as one key with a count near N)."""
    counts: Counter = Counter()
    for method, path in requests:
        if "list-type=2" in path:
            query = dict(part.split("=", 1) for part in path.partition("?")[2].split("&") if "=" in part)
            counts[f"LIST {query.get('prefix', '')}" + (" (max-keys=1)" if query.get("max-keys") == "1" else "")] += 1
        else:
            counts[f"{method} {JOB_ID.sub('<id>', path.partition('?')[0])}"] += 1
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated N (100000 takes many minutes)")
    parser.add_argument("--s3", default="", help="comma-separated N to count S3 requests for (moto server)")
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--repeat", type=int, default=1, help="times each of load, plan and run is timed (the fastest kept)")
    parser.add_argument("--s3-logs", default=None, help="a folder to keep moto's request logs in (one per N)")
    args = parser.parse_args()
    print("note: nothing is rendered: every job is recorded as done from one real entry, so plan and run find "
          "them up to date (the cost of the bookkeeping, not of renders)", file=sys.stderr)
    results: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "sizes": [], "s3": []}
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        work = Path(tmp)
        template = template_entry(work)
        for n in [int(x) for x in args.sizes.split(",") if x]:
            row = bench_size(work, template, n, args.repeat)
            print(json.dumps(row), flush=True)
            results["sizes"].append(row)
        for n in [int(x) for x in args.s3.split(",") if x]:
            row = bench_s3(work, template, n, Path(args.s3_logs) if args.s3_logs else None)
            print(json.dumps(row), flush=True)
            results["s3"].append(row)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
