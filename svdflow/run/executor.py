"""`svdflow run`: plan, prefetch, render, write, record.

Threads, and why:
- the main thread renders (one pipeline, loaded once, only if some job needs rendering);
- a small pool fetches and decodes the next jobs' inputs so the accelerator never waits on I/O;
- one writer thread encodes finished frames and records index entries while the next job
  denoises. It is the only thread that touches the index, so entries land in a consistent order.
"""

from __future__ import annotations

import os
import platform
import queue
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from svdflow import RENDER_VERSION, __version__
from svdflow.errors import Interrupted, JobError, OutputWriteError, RenderError, SvdflowError
from svdflow.faults import crash_point
from svdflow.inputs import LoadedInput, load_input
from svdflow.manifest import RunSpec, load_run_spec
from svdflow.manifest.resolve import Job
from svdflow.outputs.atomic import remove_stale_temps
from svdflow.outputs.index import INDEX_FILE, RunIndex, shard_name
from svdflow.outputs.lock import OutputLock
from svdflow.outputs.store import OutputStore
from svdflow.outputs.writers import write_outputs
from svdflow.pipeline.profiles import shape_groups
from svdflow.pipeline.session import PipelineSession
from svdflow.run.engines.torchrun import Group, World, assign
from svdflow.run.keys import frames_sha256
from svdflow.run.planning import PlannedJob, decide, plan_run, select_jobs
from svdflow.run.progress import Reporter


@dataclass
class RunOptions:
    only: tuple[str, ...] = ()
    force: bool = False
    fail_fast: bool = False
    prefetch: int = 3  # inputs fetched ahead of the render loop


@dataclass
class RunResult:
    spec: RunSpec
    statuses: dict[str, str] = field(default_factory=dict)  # job id -> done | failed | up to date
    errors: dict[str, str] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0

    def summary(self) -> dict[str, Any]:
        return {"name": self.spec.name, "output_dir": self.spec.output_dir, "rendered": self.count("done"),
                "up_to_date": self.count("up to date"), "failed": self.count("failed"),
                "orphaned": self.orphans, "errors": self.errors, "seconds": round(self.seconds, 3),
                "interrupted": self.interrupted, "exit_code": 130 if self.interrupted else self.exit_code}


def run_manifest(manifest: str | os.PathLike[str] | RunSpec, options: RunOptions | None = None,
                 reporter: Reporter | None = None, world: World | None = None) -> RunResult:
    """Render every job of a manifest that is not up to date; the Python face of `svdflow run`.

    Under a multi-process launcher (see svdflow.run.engines.torchrun) every process calls this; each
    renders its share and rank 0 returns the result of the whole run.
    """
    spec = manifest if isinstance(manifest, RunSpec) else load_run_spec(manifest)
    options = options or RunOptions()
    reporter = reporter or Reporter()
    world = world or World.from_env()
    jobs = select_jobs(spec, options.only)
    store = OutputStore(spec.output_dir)
    if world.distributed:
        return _run_distributed(spec, jobs, store, options, reporter, world)
    lock = _claim_output_dir(spec, store)
    try:
        return _Run(spec, jobs, store, options, reporter).execute()
    finally:
        lock.release()


def _claim_output_dir(spec: RunSpec, store: OutputStore) -> OutputLock:
    """Create and lock the output folder, then clear a killed run's temporaries (under the lock no
    other writer is live, and under a launcher no rank writes before rank 0 broadcasts the plan)."""
    store.makedirs()
    lock = OutputLock(spec.output_dir, store.is_local).acquire()
    if store.is_local:
        remove_stale_temps(store.root)
    return lock


def _run_distributed(spec: RunSpec, jobs: list[Job], store: OutputStore, options: RunOptions,
                     reporter: Reporter, world: World) -> RunResult:
    group = Group(world)
    lock = None
    try:
        decision: dict[str, Any] | None = None
        if world.is_main:
            try:
                lock = _claim_output_dir(spec, store)
                decision = _share_pending(spec, options, world.size)
            except SvdflowError as exc:
                decision = {"error": str(exc), "exit_code": exc.exit_code}
        decision = group.broadcast(decision)
        if "error" in decision:
            raise _error_from_rank0(decision)
        mine = set(decision["shares"][world.rank])
        run = _Run(spec, [job for job in jobs if job.id in mine], store, options, reporter,
                   index_file=shard_name(world.rank))
        result = run.execute()
        everyone = group.gather({"statuses": result.statuses, "errors": result.errors})
        if not world.is_main:
            return result
        index = RunIndex.load(store)
        index.meta.update(run.index.meta)
        index.order_by([job.id for job in spec.jobs])
        index.flush(force=True)
        index.remove_shards()
        merged = RunResult(spec, seconds=result.seconds, orphans=result.orphans)
        merged.statuses = {job_id: "up to date" for job_id in decision["up_to_date"]}
        for part in everyone:
            merged.statuses.update(part["statuses"])
            merged.errors.update(part["errors"])
        reporter.note(f"merged {world.size} index shards into {store.path(INDEX_FILE)}")
        return merged
    finally:
        if lock is not None:
            lock.release()
        group.close()


def _share_pending(spec: RunSpec, options: RunOptions, size: int) -> dict[str, Any]:
    """Rank 0's decision: which jobs render where. Up-to-date jobs are nobody's work."""
    planned = plan_run(spec, only=options.only, force=options.force)
    pending = [p.job for p in planned if p.would_render]
    return {"shares": assign([(job.id, job.cost()) for job in pending], size),
            "up_to_date": [p.job.id for p in planned if not p.would_render]}


def _error_from_rank0(decision: dict[str, Any]) -> SvdflowError:
    error = SvdflowError(decision["error"])
    error.exit_code = decision["exit_code"]
    return error


class _Run:
    def __init__(self, spec: RunSpec, jobs: list[Job], store: OutputStore, options: RunOptions, reporter: Reporter,
                 index_file: str = INDEX_FILE):
        # Jobs of one shape back to back: a compiled UNet (dynamic=False) then compiles each shape once.
        jobs = [job for _, group in shape_groups(jobs) for job in group]
        self.spec, self.jobs, self.store, self.options, self.reporter = spec, jobs, store, options, reporter
        self.index = RunIndex.load(store, file_name=index_file)
        self.index.meta.update({"name": spec.name, "manifest": str(spec.manifest_path)})
        self.result = RunResult(spec)
        self.session = PipelineSession(spec, jobs, reporter)
        self.versions = collect_versions()
        self._inputs: dict[tuple, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, options.prefetch), thread_name_prefix="svdflow-fetch")
        self._writes: queue.Queue = queue.Queue(maxsize=2)  # bounded: finished frames are large
        self._writer = threading.Thread(target=self._write_loop, name="svdflow-writer", daemon=True)
        self._current: str | None = None  # the job the render loop is on
        self._failed = False  # a job failed: set when its failure is queued, or when an encode fails

    def execute(self) -> RunResult:
        started = time.perf_counter()
        self.reporter.run_started(self.spec.name, len(self.jobs), self.spec.output_dir)
        self._writer.start()
        previous = _sigterm_as_interrupt()
        try:
            for number, job in enumerate(self.jobs):
                self._prefetch(number)
                if not self._process(job, number):
                    break
        except KeyboardInterrupt:
            self.result.interrupted = True
        finally:
            try:
                self.session.flush()  # a job denoised before the end (or the interrupt) is decoded and kept
            except KeyboardInterrupt:
                self.result.interrupted = True  # asked again: leave it
            signal.signal(signal.SIGTERM, previous)
            self._writes.put(None)
            self._writer.join()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.result.orphans = self.index.orphans({job.id for job in self.spec.jobs})
            self.index.order_by([job.id for job in self.spec.jobs])
            self.index.flush(force=True)
            if self.index.file_name == INDEX_FILE:
                self.index.remove_shards()  # a killed multi-process run's shards are merged in now
            self.result.seconds = time.perf_counter() - started
            self.reporter.run_finished(self.result.summary())
        if self.result.interrupted:
            done = self.result.count("done")
            raise Interrupted(f"interrupted; {done} job{'s' * (done != 1)} finished and recorded in "
                              f"{self.store.path(INDEX_FILE)}; run again to render the rest")
        return self.result

    def _prefetch(self, number: int) -> None:
        for job in self.jobs[number: number + self.options.prefetch + 1]:
            key = _input_key(job)
            if key not in self._inputs:
                self._inputs[key] = self._pool.submit(_timed_load, job)

    def _process(self, job: Job, number: int) -> bool:
        """Render one job; False when the run must stop (--fail-fast)."""
        self.reporter.job_started(job.id, number + 1, len(self.jobs))
        waited = time.perf_counter()
        fetch = self._inputs[_input_key(job)]
        if not fetch.done():
            self.session.flush()  # a deferred decode would wait for the next job's steps: not while idle
        try:
            loaded, fetch_s = fetch.result()
        except JobError as exc:
            self._fail(job, None, exc, "fetch")
            return not self.options.fail_fast
        timings = {"fetch_s": fetch_s, "input_wait_s": time.perf_counter() - waited}
        planned = decide(job, loaded.sha256, self.spec, self.index, self.options.force)
        if not planned.would_render:
            self.result.statuses[job.id] = "up to date"
            self.reporter.job_finished(job.id, "up to date", {})
            return True
        self.reporter.job_stage(job.id, "load model" if not self.session.loaded else "denoise")
        self._current = job.id
        delivery = _Delivery(self, job, planned, loaded, timings)
        try:
            self.session.submit(job, loaded.image, delivery, lambda d, t: self._on_step(job, d, t))
        except JobError as exc:
            delivery.failed(exc)
            return not self.options.fail_fast
        except (KeyboardInterrupt, SvdflowError):
            raise  # Ctrl-C, or the model or device is unusable: the run ends
        except Exception as exc:  # a pipeline error fails this job only; the cause is kept in the index
            delivery.failed(exc)
            return not self.options.fail_fast
        # A failure may have come meanwhile: a deferred decode's, or the writer's encode.
        return not (self.options.fail_fast and self._failed)

    def _on_step(self, job: Job, done: int, total: int) -> None:
        crash_point("denoise-step")
        self.reporter.job_step(job.id, done, total)
        if done == total:
            self.reporter.job_stage(job.id, "decode")

    def _fail(self, job: Job, planned: PlannedJob | None, exc: SvdflowError, stage: str,
              loaded: LoadedInput | None = None) -> None:
        self._failed = True
        self._writes.put(("failed", job, planned, loaded, exc, stage))

    def _write_loop(self) -> None:
        while (task := self._writes.get()) is not None:
            kind, job, planned, loaded = task[:4]
            if kind == "done":
                frames, timings, hardware = task[4:]
                entry = self._write_done(job, planned, loaded, frames, timings, hardware)
            else:
                exc, stage = task[4:]
                entry = self._entry(job, planned, loaded, status="failed",
                                    error={"type": type(exc).__name__, "message": str(exc), "stage": stage})
            self.index.record(entry)
            self.result.statuses[job.id] = entry["status"]
            if entry["status"] == "failed":
                self._failed = True  # an encode that failed here (render failures set it when queued)
                self.result.errors[job.id] = entry["error"]["message"]
                self.reporter.job_finished(job.id, "failed", {"error": entry["error"]["message"]})
            else:
                self.reporter.job_finished(job.id, "done", {
                    "seconds": entry["timings"]["total_s"], "files": [o["file"] for o in entry["outputs"]]})

    def _write_done(self, job, planned, loaded, frames, timings, hardware) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            written = write_outputs(frames, self.spec.output_dir, job.id, self.spec.formats,
                                    playback_fps=job.params["playback_fps"], crf=self.spec.crf,
                                    comment=f"svdflow key={planned.key}")
        except OutputWriteError as exc:
            return self._entry(job, planned, loaded, status="failed", hardware=hardware,
                               error={"type": type(exc).__name__, "message": str(exc), "stage": "encode"})
        timings["encode_s"] = time.perf_counter() - started
        timings["total_s"] = timings["fetch_s"] + timings["render_s"] + timings["encode_s"]
        outputs = [{"format": w.format, "file": os.path.basename(w.path.rstrip("/")), "sha256": w.sha256,
                    "bytes": w.bytes} for w in written]
        return self._entry(job, planned, loaded, status="done", outputs=outputs, hardware=hardware,
                           frames_sha256=frames_sha256(frames),
                           timings={k: round(v, 4) for k, v in timings.items()})

    def _entry(self, job: Job, planned: PlannedJob | None, loaded: LoadedInput | None, *, status: str,
               **fields: Any) -> dict[str, Any]:
        now = time.time()
        return {
            "id": job.id, "item_id": job.item_id, "status": status,
            "key": planned.key if planned else None,
            "key_material": planned.material if planned else None,
            "params": job.params, "seed": job.seed, "seed_origin": job.seed_origin, "sweep": job.sweep,
            "input": {"uri": job.image, "sha256": loaded.sha256 if loaded else None,
                      "source_size": list(loaded.source_size) if loaded else None},
            "model": {**self.spec.model.model_dump(), "resolved_revision": self.session.resolved_revision},
            "hardware": fields.pop("hardware", self.session.hardware_json(job.id)),
            "outputs": fields.pop("outputs", []),
            "frames_sha256": fields.pop("frames_sha256", None),
            "output": {"formats": list(self.spec.formats), "crf": self.spec.crf},
            "timings": fields.pop("timings", {}),
            "versions": self.versions,
            "error": fields.pop("error", None),
            "run": {"name": self.spec.name, "manifest": str(self.spec.manifest_path)},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "finished_unix": now,
        }


class _Delivery:
    """Where a rendered job's frames, or its failure, go: the writer. The session calls it when the
    frames are on the host, which with overlap_decode is during the next job's denoising."""

    def __init__(self, run: _Run, job: Job, planned: PlannedJob, loaded: LoadedInput, timings: dict[str, float]):
        self.run, self.job, self.planned, self.loaded, self.timings = run, job, planned, loaded, timings

    def done(self, frames, timings: dict[str, float], hardware: dict[str, Any] | None) -> None:
        if self.run._current == self.job.id:  # not a deferred decode finishing during another job
            self.run.reporter.job_stage(self.job.id, "encode")
        self.run._writes.put(("done", self.job, self.planned, self.loaded, frames, {**self.timings, **timings},
                              hardware))

    def failed(self, exc: Exception) -> None:
        if not isinstance(exc, SvdflowError):
            exc = RenderError(f"job '{self.job.id}': the pipeline failed: {type(exc).__name__}: {exc}")
        self.run._fail(self.job, self.planned, exc, "render", self.loaded)


def _input_key(job: Job) -> tuple:
    p = job.params
    return job.image, p["width"], p["height"], p["resize"]


def _timed_load(job: Job) -> tuple[LoadedInput, float]:
    started = time.perf_counter()
    p = job.params
    loaded = load_input(job.image, p["width"], p["height"], p["resize"])
    return loaded, time.perf_counter() - started


def _sigterm_as_interrupt():
    """SIGTERM (Make, CI, schedulers) stops cleanly like Ctrl-C; only possible from the main thread."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM)
    return signal.signal(signal.SIGTERM, handler)


def collect_versions() -> dict[str, str]:
    """Versions that can change pixels. Read from package metadata: importing torch and diffusers
    just to ask would cost a rerun with nothing to render ~7 s."""
    from importlib.metadata import version

    return {"svdflow": __version__, "render_version": RENDER_VERSION, "torch": version("torch"),
            "diffusers": version("diffusers"), "transformers": version("transformers"),
            "python": platform.python_version(), "platform": platform.platform(terse=True)}
