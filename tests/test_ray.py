"""`svdflow run --engine ray` on a real local Ray cluster (127.0.0.1, 2 CPUs, no dashboard) with
builtin:tiny: the same frames as a local run, a worker killed mid-job, a second run refused,
--fail-fast and Ctrl-C leaving no actor, the driver killed; and the scheduler, without Ray.

One cluster for the module (starting one costs ~5 s); each Ray run starts its own 2 actors.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import imageio_ffmpeg
import pytest
from conftest import SVDFLOW, free_port, recorded, run_cli, video_stream, write_image, write_manifest

from svdflow.api import RunOptions, run_manifest
from svdflow.errors import Interrupted
from svdflow.manifest import load_run_spec
from svdflow.outputs.index import RunIndex
from svdflow.outputs.store import OutputStore
from svdflow.run.engines.ray import worker_environment
from svdflow.run.engines.ray_pool import NAMESPACE, WorkerPool
from svdflow.run.engines.ray_worker import NoteEvent, RenderDone, RenderWorker
from svdflow.run.engines.scheduling import Assignment, Scheduler
from svdflow.run.planning import PlannedJob, plan_run
from svdflow.run.progress import JsonReporter, Reporter
from svdflow.settings import load_settings

HEADER = """
svdflow: 1
name: r
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: out, formats: [mp4]}
defaults: {num_frames: 4, num_inference_steps: 2, width: 64, height: 64, fps: 7}
items:
"""
# `long` is the job a worker takes first (longest first) and the one the tests interrupt.
LONG = "  - {id: long, image: a.png, num_inference_steps: 30}\n"
SHORT = ("  - {id: a, image: a.png}\n"
         "  - {id: b, image: b.png, seed: 7}\n"
         "  - {id: c, image: a.png, motion_bucket_id: 60}\n")
BAD = "  - {id: bad, image: bad.png}\n"  # hashes at planning, fails to decode on the worker
TIMEOUT = 300


def campaign(folder: Path, items: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / "a.png", width=64, height=64)
    write_image(folder / "b.png", width=64, height=64, seed=1)
    (folder / "bad.png").write_bytes(b"not an image")
    return write_manifest(folder, HEADER + items)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for the module; yields its address (HOST:PORT) for subprocess drivers.
    Runs in this process reuse its connection."""
    ray = pytest.importorskip("ray")
    for attempt in range(3):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            break
        except Exception as exc:
            # Ray gives its raylet a fixed 30 s to register (ray/_private/node.py); a machine busy with
            # other work can take longer. That is Ray starting, not what these tests look at: try again.
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            ray.shutdown()
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def live_actors(timeout: float = 0.0) -> list[str]:
    """svdflow's actors still alive, waiting up to `timeout` s for them to go (killing is asynchronous)."""
    import ray

    deadline = time.monotonic() + timeout
    while True:
        names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if a["namespace"] == NAMESPACE)
        if not names or time.monotonic() >= deadline:
            return names
        time.sleep(0.2)


def index_of(out: Path) -> dict[str, dict]:
    lines = (out / "index.jsonl").read_text().splitlines() if (out / "index.jsonl").exists() else []
    assert len(lines) == len({json.loads(line)["id"] for line in lines}), "a job is recorded twice"
    return recorded(out)


def mp4_frames(path: Path) -> int:
    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)  # metadata
    return sum(1 for _ in reader)


class Watch(Reporter):
    """Keeps the workers' pids and the notes; `on_step(watch, job_id, step, worker)` runs in the
    driver's loop at each step event, as a person watching would act."""

    def __init__(self, on_step=None):
        self.pids: dict[str, int] = {}
        self.notes: list[str] = []
        self.statuses: list[tuple[str, str]] = []
        self.on_step = on_step

    def worker_status(self, worker, status, info):
        self.statuses.append((worker, status))
        if status == "ready":
            self.pids[worker] = info["pid"]

    def note(self, text):
        self.notes.append(text)

    def job_step(self, job_id, done, total, worker=None):
        if self.on_step:
            self.on_step(self, job_id, done, worker)


def watch_threads(monkeypatch) -> dict[str, list[str]]:
    """The name of the thread each job is recorded on (RunIndex.record: its sidecar, its part) and of
    the thread each is handed to a worker on."""
    seen: dict[str, list[str]] = {"record": [], "dispatch": []}
    record, render = RunIndex.record, WorkerPool.render

    def recording(self, entry):
        seen["record"].append(threading.current_thread().name)
        return record(self, entry)

    def dispatching(self, worker, assignment):
        seen["dispatch"].append(threading.current_thread().name)
        return render(self, worker, assignment)

    monkeypatch.setattr(RunIndex, "record", recording)
    monkeypatch.setattr(WorkerPool, "render", dispatching)
    return seen


@pytest.mark.slow
def test_two_workers_render_the_frames_of_a_local_run(cluster, tmp_path, capsys, monkeypatch):
    local = campaign(tmp_path / "local", LONG + SHORT + BAD)
    run_manifest(local)
    manifest = campaign(tmp_path / "ray", LONG + SHORT + BAD)
    threads = watch_threads(monkeypatch)

    code, out, err = run_cli(capsys, "run", str(manifest), "--engine", "ray", "--json")

    assert code == 1, err  # `bad` fails alone, as it does locally
    events = [json.loads(line) for line in out.splitlines()]  # Ray's own prints stay off stdout
    assert "ray: 2 workers (1 CPU per worker) on 1 node" in err
    started = [e for e in events if e["event"] == "job_started"]
    assert started[0]["id"] == "long"  # longest first
    finished = {e["id"]: e for e in events if e["event"] == "job_finished"}
    assert {finished[job_id]["worker"] for job_id in ("long", "a", "b", "c", "bad")} == {"worker-0", "worker-1"}
    assert {e["worker"] for e in events if e["event"] == "job_step"} == {"worker-0", "worker-1"}
    lines = err.splitlines()  # plain lines (not a terminal) name the worker too
    for job_id in ("long", "a", "b", "c"):
        assert any(f"] {job_id}: done in " in line and line.endswith(f" [{finished[job_id]['worker']}]")
                   for line in lines), job_id
    ready = [e for e in events if e["event"] == "worker_status" and e["status"] == "ready"]
    assert sorted(e["worker"] for e in ready) == ["worker-0", "worker-1"] and all(e["pid"] > 0 for e in ready)
    assert events[-1]["event"] == "run_finished" and (events[-1]["rendered"], events[-1]["failed"]) == (4, 1)
    one, two = index_of(tmp_path / "local" / "out"), index_of(tmp_path / "ray" / "out")
    assert list(two) == ["long", "a", "b", "c", "bad"]  # manifest order, whatever finished first
    for job_id in ("long", "a", "b", "c"):
        assert two[job_id]["status"] == "done"
        assert two[job_id]["frames_sha256"] == one[job_id]["frames_sha256"], job_id
        # The files differ only by the paths in their provenance (the two campaigns' folders).
        assert video_stream(tmp_path / "ray" / "out" / f"{job_id}.mp4") == video_stream(
            tmp_path / "local" / "out" / f"{job_id}.mp4"), job_id
        assert two[job_id]["key"] == one[job_id]["key"]
    for entry in (one["bad"], two["bad"]):
        assert entry["status"] == "failed"
        assert (entry["error"]["type"], entry["error"]["stage"]) == ("InputError", "fetch")
        assert entry["error"]["message"].endswith("bad.png: not a readable image (cannot identify image file); "
                                                  "check that the file is a PNG, JPEG or WebP image")
    # Recording (a sidecar each, a part now and then) is the writer thread's: a slow store never holds
    # up the driver's thread handing out the next job.
    assert threads == {"record": ["svdflow-writer"] * 5, "dispatch": [threading.current_thread().name] * 5}
    assert live_actors(timeout=10) == []


@pytest.mark.slow
def test_a_worker_killed_mid_job_its_job_runs_again_and_a_second_run_is_refused(cluster, tmp_path):
    manifest = campaign(tmp_path, LONG + SHORT)
    seen: dict = {}

    def kill_then_try_a_second_run(watch, job_id, step, worker):
        if job_id != "long" or seen:
            return
        seen["worker"] = worker
        os.kill(watch.pids[worker], signal.SIGKILL)  # mid-denoise: step 1 of 30
        seen["second"] = subprocess.run([*SVDFLOW, "run", str(manifest), "--engine", "ray", "--address", cluster],
                                        capture_output=True, text=True, timeout=TIMEOUT)

    watch = Watch(kill_then_try_a_second_run)
    result = run_manifest(manifest, reporter=watch, engine="ray")

    assert result.statuses == {"long": "done", "a": "done", "b": "done", "c": "done"}
    lost = seen["worker"]
    assert any(note.startswith(f"{lost} was lost while rendering long (") and
               note.endswith("the job will run again on the next free worker") for note in watch.notes), watch.notes
    assert (lost, "restarting") in watch.statuses
    out = tmp_path / "out"
    entries = index_of(out)
    assert entries.keys() == {"long", "a", "b", "c"} and {e["status"] for e in entries.values()} == {"done"}
    for job_id in entries:
        assert mp4_frames(out / f"{job_id}.mp4") == 4
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    second = seen["second"]
    assert second.returncode == 3, second.stderr
    assert (f"error: {out} is being rendered by another svdflow run (pid {os.getpid()} on {socket.gethostname()}, "
            "started ") in second.stderr
    assert live_actors(timeout=10) == []


@pytest.mark.slow
def test_fail_fast_kills_every_worker(cluster, tmp_path):
    manifest = campaign(tmp_path, LONG + BAD)

    result = run_manifest(manifest, RunOptions(fail_fast=True), engine="ray")

    assert result.statuses == {"bad": "failed"}  # long was abandoned mid-render
    assert index_of(tmp_path / "out").keys() == {"bad"}
    assert live_actors(timeout=10) == []


@pytest.mark.slow
def test_ctrl_c_kills_every_worker_and_keeps_what_finished(cluster, tmp_path):
    # Pressed as the driver hands the long job to a worker (300 steps: it is still rendering when the
    # run stops). Not at a step's news: that comes through Ray's queue and, on a loaded machine, may
    # come after the job's answer and be dropped as late, and then nothing was pressed at all.
    manifest = campaign(tmp_path, LONG.replace("num_inference_steps: 30", "num_inference_steps: 300") + SHORT)

    class CtrlC(Watch):
        pressed = False

        def job_started(self, job_id, number, total, worker=None):
            if job_id == "long" and not self.pressed:
                self.pressed = True
                signal.raise_signal(signal.SIGINT)

    with pytest.raises(Interrupted) as interrupted:
        run_manifest(manifest, reporter=CtrlC(), engine="ray")

    recorded = index_of(tmp_path / "out")
    done = len(recorded)
    assert str(interrupted.value) == (f"interrupted; {done} job{'s' * (done != 1)} finished and recorded in "
                                      f"{tmp_path / 'out' / 'index.jsonl'}; run again to render the rest")
    assert "long" not in recorded
    assert live_actors(timeout=10) == []


@pytest.mark.slow
def test_the_driver_killed_the_next_run_renders_only_what_is_missing(cluster, tmp_path):
    manifest = campaign(tmp_path, LONG + SHORT)
    driver = subprocess.Popen([*SVDFLOW, "run", str(manifest), "--engine", "ray", "--address", cluster, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        finished = next(event for line in driver.stdout if (event := json.loads(line))["event"] == "job_finished")
        driver.kill()  # right after the driver recorded a job (its sidecar; index.json may lag)
    finally:
        driver.kill()
        driver.communicate(timeout=TIMEOUT)
    recorded = json.loads((tmp_path / "out" / f"{finished['id']}.json").read_text())
    assert live_actors(timeout=30) == []  # they were the dead driver's

    result = run_manifest(manifest)

    assert result.statuses[finished["id"]] == "up to date"
    assert result.count("done") + result.count("up to date") == 4
    after = index_of(tmp_path / "out")
    assert after[finished["id"]]["finished_unix"] == recorded["finished_unix"]  # not rendered again
    assert {e["status"] for e in after.values()} == {"done"}


@pytest.mark.slow
def test_a_full_output_disk_stops_every_worker_and_exits_3(cluster, tmp_path, small_disk):
    """The workers write the files: the first that finds the disk full answers so, the driver stops every
    worker, says it once and exits 3; the next run renders everything."""
    if not small_disk.real:
        pytest.skip("needs a tmpfs to fill: the workers are not given the fault knob to inject it")
    tmp_path.mkdir(exist_ok=True)
    write_image(tmp_path / "a.png", width=64, height=64)
    write_image(tmp_path / "b.png", width=64, height=64, seed=1)
    manifest = write_manifest(tmp_path, HEADER.replace("dir: out", "dir: disk/out") + SHORT)
    out = small_disk.path / "out"
    out.mkdir()
    (out / ".svdflow.lock").write_text("x" * 100)  # its page is the lock's to rewrite: the run gets that far
    (out / ".svdflow").mkdir()  # marked as svdflow's before the disk filled, as a folder of earlier runs is
    (out / ".svdflow" / "README.txt").write_text("marked")
    small_disk.fill()

    proc = subprocess.run([*SVDFLOW, "run", str(manifest), "--engine", "ray", "--address", cluster],
                          capture_output=True, text=True, timeout=TIMEOUT)

    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        rf"error: output folder {re.escape(str(out))}: its disk is full \(No space left on device, writing "
        r"\.svdflow/masters/[abc]\.mkv\); free some space on it or choose another output\.dir, then run again "
        r"\(0 jobs finished in this run are recorded; the next run renders only what is missing\)", errors[0]), errors
    assert live_actors(timeout=30) == []
    assert not [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    small_disk.grow()

    # A local run, as after the killed driver: two actors of its own would spend seconds importing torch
    # and diffusers each, to show what the local run shows, that the folder takes the campaign again.
    result = run_manifest(manifest)

    assert result.statuses == {"a": "done", "b": "done", "c": "done"}


class EventList(list):
    """A worker's event sink, kept."""

    def put_nowait(self, item) -> None:
        self.append(item)


@pytest.mark.slow
def test_a_worker_renders_its_job_as_planned_or_as_its_input_is_now(tmp_path, request):
    """The worker without Ray: its events in order, its entry; an input changed since planning is
    rendered and recorded with the key of what it rendered."""
    manifest = campaign(tmp_path, SHORT + BAD)
    spec = load_run_spec(manifest)
    OutputStore(spec.output_dir).makedirs()  # the driver's, when it locks it: a worker never makes it
    planned = {p.job.id: p for p in plan_run(spec)}
    events = EventList()
    worker = RenderWorker("w", spec, [p.job for p in planned.values()], events)
    request.addfinalizer(worker.close)

    rendered = worker.render(Assignment(planned["a"], 1))

    assert rendered == RenderDone("w", 1, "a") and not (tmp_path / "out" / "a.mp4").exists()
    answer = worker.finish(Assignment(planned["a"], 1))  # on Ray, while the worker renders its next job
    assert answer.entry.status == "done" and answer.entry.key == planned["a"].key
    assert (tmp_path / "out" / "a.mp4").exists() and not (tmp_path / "out" / "a.json").exists()  # the driver records
    assert [(type(e).__name__, getattr(e, "stage", None) or getattr(e, "step", None)) for e in events
            if not isinstance(e, NoteEvent)] == [
        ("StageEvent", "fetch"), ("StageEvent", "load model"), ("StepEvent", 1), ("StepEvent", 2),
        ("StageEvent", "decode"), ("StageEvent", "encode")]
    write_image(tmp_path / "b.png", width=64, height=64, seed=9)  # after planning, before rendering
    assert isinstance(worker.render(Assignment(planned["b"], 1)), RenderDone)
    answer = worker.finish(Assignment(planned["b"], 1))
    assert answer.entry.status == "done" and answer.entry.key != planned["b"].key
    assert answer.entry.key == {p.job.id: p for p in plan_run(spec)}["b"].key
    answer = worker.render(Assignment(planned["bad"], 2))
    assert (answer.attempt, answer.entry.status, answer.entry.error.stage) == (2, "failed", "fetch")


def test_without_ray_engine_ray_exits_3_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is not installed
    manifest = campaign(tmp_path, SHORT)

    code, _, err = run_cli(capsys, "run", str(manifest), "--engine", "ray")

    assert code == 3
    assert ("error: --engine ray needs Ray, which is not installed here (import of ray halted; None in "
            "sys.modules); install it with pip install \"svdflow[ray]\"") in err.splitlines()
    assert not (tmp_path / "out").exists()


def test_an_address_where_no_cluster_answers_exits_3_at_once(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    manifest = campaign(tmp_path, SHORT)
    port = free_port()
    advice = ("no Ray cluster answers there ([Errno 111] Connection refused); start its head with `ray start "
              "--head`, or leave --address out to start a local Ray instance")

    code, _, err = run_cli(capsys, "run", str(manifest), "--engine", "ray", "--address", f"127.0.0.1:{port}")
    assert code == 3
    assert f"error: --address 127.0.0.1:{port}: {advice}" in err.splitlines()

    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # honoured when --address is not given
    code, _, err = run_cli(capsys, "run", str(manifest), "--engine", "ray")
    assert code == 3
    assert f"error: RAY_ADDRESS=127.0.0.1:{port}: {advice}" in err.splitlines()
    assert not (tmp_path / "out").exists()  # said before planning or locking anything


def test_ray_options_need_the_ray_engine(tmp_path, capsys):
    manifest = campaign(tmp_path, SHORT)

    code, _, err = run_cli(capsys, "run", str(manifest), "--address", "auto")
    assert code == 2
    assert "error: --address is for --engine ray; add --engine ray or leave --address out" in err.splitlines()
    code, _, err = run_cli(capsys, "run", str(manifest), "--cpus-per-worker", "2")
    assert code == 2
    assert ("error: --cpus-per-worker is for --engine ray; add --engine ray or leave --cpus-per-worker out"
            in err.splitlines())


def test_workers_get_the_drivers_settings_defaults_included_but_not_the_crash_knob(monkeypatch):
    monkeypatch.setenv("SVDFLOW_CPU_THREADS", "3")
    monkeypatch.setenv("SVDFLOW_CRASH_AT", "denoise-step")

    assert worker_environment(load_settings()) == {"SVDFLOW_CPU_THREADS": "3", "SVDFLOW_DIST_TIMEOUT_S": "86400.0"}


def test_a_worker_takes_the_drivers_settings_before_it_builds_and_puts_back_the_processs(tmp_path, monkeypatch):
    """The settings come with `setup` (not as the actor's runtime_env, which would need a worker process
    started for it): in place before the pipeline is built, and put back by `close`."""
    monkeypatch.setenv("SVDFLOW_CPU_THREADS", "1")
    monkeypatch.delenv("SVDFLOW_DIST_TIMEOUT_S", raising=False)
    spec = load_run_spec(campaign(tmp_path, SHORT))
    events: list = []
    worker = RenderWorker("worker-0", spec, spec.jobs, SimpleNamespace(put_nowait=events.append),
                          {"SVDFLOW_CPU_THREADS": "2", "SVDFLOW_DIST_TIMEOUT_S": "60"})

    worker.prepare()

    assert worker.session.hardware.cpu_threads == 2
    assert (os.environ["SVDFLOW_CPU_THREADS"], os.environ["SVDFLOW_DIST_TIMEOUT_S"]) == ("2", "60")
    worker.close()
    assert os.environ["SVDFLOW_CPU_THREADS"] == "1" and "SVDFLOW_DIST_TIMEOUT_S" not in os.environ


def planned_jobs(tmp_path: Path) -> list[PlannedJob]:
    spec = load_run_spec(campaign(tmp_path, SHORT + LONG + "  - {id: big, image: a.png, width: 128}\n"))
    return [PlannedJob(job, "new") for job in spec.jobs]


def test_scheduler_hands_out_the_longest_job_first_and_requeues_a_lost_workers_job(tmp_path):
    scheduler = Scheduler(planned_jobs(tmp_path), max_attempts=2)

    assert [scheduler.take(w).job_id for w in ("w0", "w1")] == ["long", "big"]
    loss = scheduler.lost("w0", "long")
    assert (loss.assignment.job_id, loss.assignment.attempt, loss.requeued) == ("long", 1, True)
    assert scheduler.take("w2").job_id == "long"  # back at its place by cost, ahead of the short ones
    assert scheduler.holds("w2", "long", 2) and not scheduler.holds("w0", "long", 1)
    loss = scheduler.lost("w2", "long")
    assert (loss.assignment.job_id, loss.requeued) == ("long", False)  # lost workers twice: given up
    assert scheduler.done("w1", "big").job_id == "big"
    assert [scheduler.take("w0").job_id, scheduler.done("w0", "a").job_id] == ["a", "a"]  # ties: manifest order
    assert [scheduler.take(w).job_id for w in ("w0", "w1")] == ["b", "c"]
    assert scheduler.take("w3") is None and scheduler.waiting == 0
    assert not scheduler.finished and scheduler.busy == 2
    scheduler.done("w0", "b")
    scheduler.done("w1", "c")
    assert scheduler.finished


def test_scheduler_lets_a_worker_render_its_next_job_while_it_encodes_one(tmp_path):
    scheduler = Scheduler(planned_jobs(tmp_path))

    assert scheduler.take("w0").job_id == "long"
    assert not scheduler.can_take("w0")
    with pytest.raises(ValueError, match="w0 is not free to render a job"):
        scheduler.take("w0")
    assert scheduler.rendered("w0").job_id == "long"  # encoding it now
    assert scheduler.can_take("w0") and scheduler.take("w0").job_id == "big"
    assert scheduler.rendered("w0").job_id == "big"  # rendered before long's files were written
    assert not scheduler.can_take("w0") and scheduler.busy == 2  # two behind: no third job until one is done
    assert scheduler.done("w0", "long").job_id == "long"
    assert scheduler.can_take("w0") and scheduler.take("w0").job_id == "a"
    # The worker is lost with big encoding and a rendering: both go back, each at its place by cost.
    assert [scheduler.lost("w0", job).requeued for job in ("a", "big")] == [True, True]
    assert scheduler.busy == 0 and scheduler.can_take("w0")
    assert [(a.job_id, a.attempt) for a in (scheduler.take("w1"), scheduler.take("w0"))] == [("big", 2), ("a", 2)]
    with pytest.raises(ValueError, match="w1 has no job a"):
        scheduler.done("w1", "a")


def test_json_events_name_the_worker_only_on_a_cluster():
    stream = io.StringIO()
    reporter = JsonReporter(stream)

    reporter.job_step("a", 1, 2)
    reporter.job_step("a", 2, 2, worker="worker-1")
    reporter.worker_status("worker-1", "ready", {"pid": 7, "host": "h"})

    local, cluster, status = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "worker" not in local and cluster["worker"] == "worker-1"
    assert {k: status[k] for k in ("event", "worker", "status", "pid", "host")} == {
        "event": "worker_status", "worker": "worker-1", "status": "ready", "pid": 7, "host": "h"}


class Ref:
    def __init__(self, worker: str, method: str):
        self.worker, self.method = worker, method


class CallLayer:
    """Ray's call layer as the pool uses it (`.remote`, `wait`, `get`, `kill`), each call's answer given
    by the test: the orders in which a lost worker's calls come back cannot be arranged on a real
    cluster."""

    def __init__(self):
        self.calls: list[Ref] = []
        self.answers: dict[Ref, object] = {}

    def handle(self, worker: str):
        layer = self

        class Method:
            def __init__(self, name):
                self.name = name

            def remote(self, *args):
                layer.calls.append(ref := Ref(worker, self.name))
                return ref

        return type("Handle", (), {"__getattr__": lambda _, name: Method(name)})()

    def answer(self, method: str, value) -> None:
        """Answer the oldest unanswered call of that method."""
        ref = next(r for r in self.calls if r.method == method and r not in self.answers)
        self.answers[ref] = value

    def wait(self, refs, num_returns, timeout):
        ready = [r for r in refs if r in self.answers]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref):
        value = self.answers[ref]
        if isinstance(value, BaseException):
            raise value
        return value

    def kill(self, handle, no_restart):
        pass


def test_a_worker_lost_with_two_jobs_on_it_gives_both_back_and_is_set_up_once_both_are(tmp_path):
    from ray.exceptions import RayActorError

    from svdflow.run.engines.ray_pool import Answered, Lost, Ready, WorkerPool
    from svdflow.run.engines.ray_worker import NotSetUp, WorkerInfo

    layer = CallLayer()
    pool = WorkerPool(layer, {"w0": layer.handle("w0")}, None, ())
    first, second, third = (Assignment(p, 1) for p in planned_jobs(tmp_path)[:3])
    setups = lambda: sum(r.method == "setup" for r in layer.calls)  # noqa: E731
    layer.answer("setup", WorkerInfo("w0", 1, "h"))
    assert [type(o) for o in pool.wait(0)] == [Ready] and pool.up() == ["w0"]

    pool.render("w0", first)
    layer.answer("render", RenderDone("w0", 1, first.job_id))
    assert [type(o) for o in pool.wait(0)] == [Answered]
    pool.finish("w0", first)  # first's files are written while second renders
    pool.render("w0", second)
    layer.answer("render", RayActorError())  # the process dies: second's render call fails first
    (lost,) = pool.wait(0)
    assert (type(lost), lost.assignment, lost.doing) == (Lost, second, "rendering")
    assert pool.up() == [] and setups() == 1  # not set up again while first's call is out
    layer.answer("finish", RayActorError())
    (lost,) = pool.wait(0)
    assert (lost.assignment, lost.doing) == (first, "encoding") and setups() == 2

    # A call that reached the restarted process before its setup, or frames rendered by a process
    # that was lost before it wrote them: the job is lost too, not failed.
    layer.answer("setup", WorkerInfo("w0", 2, "h"))
    pool.wait(0)
    pool.render("w0", third)
    layer.answer("render", NotSetUp("w0"))
    (lost,) = pool.wait(0)
    assert (type(lost), lost.assignment, lost.reason) == (
        Lost, third, "its Ray worker was restarted before the call reached it")
    assert setups() == 3 and pool.up() == []

    layer.answer("setup", WorkerInfo("w0", 3, "h"))
    pool.wait(0)
    pool.render("w0", first)
    layer.answer("render", RenderDone("w0", 1, first.job_id))
    pool.wait(0)
    pool.finish("w0", first)
    pool.render("w0", second)
    layer.answer("finish", RayActorError())
    assert [o.assignment for o in pool.wait(0)] == [first]
    layer.answer("render", RenderDone("w0", 1, second.job_id))  # done just before the process went
    (lost,) = pool.wait(0)
    assert (lost.assignment, lost.reason) == (second, "its Ray worker was lost before writing its files")
    assert setups() == 4


@pytest.mark.slow
def test_a_job_re_rolls_on_a_worker_into_the_local_runs_entry(cluster, tmp_path):
    """qc on Ray: a job that fails its thresholds re-rolls on its worker, and its entry (kept attempt,
    seed, every attempt's scores, frames) is a local run's."""
    item = "  - {id: a, image: a.png, qc: {max_motion: 50, rerolls: 1}}\n"
    local, ray_run = (run_manifest(campaign(tmp_path / name, item), engine=engine)
                      for name, engine in (("local", "local"), ("ray", "ray")))
    for result in (local, ray_run):
        assert (result.statuses, list(result.qc_failed), result.exit_code) == ({"a": "done"}, ["a"], 4)
    one, two = index_of(tmp_path / "local" / "out")["a"], index_of(tmp_path / "ray" / "out")["a"]
    assert [attempt["attempt"] for attempt in one["quality"]["attempts"]] == [0, 1]
    for name in ("quality", "seed", "params", "frames_sha256", "key"):
        assert two[name] == one[name], name
    assert live_actors(timeout=10) == []
