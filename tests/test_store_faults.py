"""The output store failing, in this process: which failures are the store's (svdflow/outputs/failures.py),
the render loop stopping before its next job, what stays recorded, the lock noticing its folder gone, a
remote store that stops answering, a Ray worker's answer. The same faults through real `svdflow`
processes on a real small or read-only disk are tests/test_fault_injection.py."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import threading
from pathlib import Path

import pytest
from conftest import run_cli, write_image, write_manifest

from svdflow import faults
from svdflow.api import run_manifest
from svdflow.errors import OutputStoreError
from svdflow.locations import Location
from svdflow.manifest import load_run_spec
from svdflow.outputs.failures import errno_named_in, store_failure
from svdflow.outputs.index import RunIndex
from svdflow.outputs.lock import claim_output_dir
from svdflow.outputs.store import OutputStore
from svdflow.run import writer as writer_module
from svdflow.run.progress import Reporter

HEADER = """
svdflow: 1
name: f
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: OUT, formats: [mp4]}
defaults: {num_frames: 2, num_inference_steps: 2, width: 64, height: 64, fps: 7}
items:
"""
RECORDED_ONE = " (1 job finished in this run is recorded; the next run renders only what is missing)"


def campaign(folder: Path, ids: str = "ab", out: str = "out") -> Path:
    write_image(folder / "a.png", width=64, height=64)
    items = "".join(f"  - {{id: {job_id}, image: a.png, seed: {seed}}}\n" for seed, job_id in enumerate(ids))
    return write_manifest(folder, HEADER.replace("OUT", out) + items)


@pytest.fixture
def inject(monkeypatch):
    """inject("<point>=<ERRNO>"): raise that OSError at that fault point in this process."""
    def arm(crash_at: str) -> None:
        monkeypatch.setenv("SVDFLOW_CRASH_AT", crash_at)
        faults._wanted.cache_clear()
        faults._counts.clear()

    yield arm
    monkeypatch.delenv("SVDFLOW_CRASH_AT", raising=False)
    faults._wanted.cache_clear()
    faults._counts.clear()


# ------------------------------------------------------------------------------------------------
# What is the store's failure


@pytest.mark.parametrize(("code", "cause", "fix"), [
    (errno.ENOSPC, "its disk is full", "free some space on it or choose another output.dir"),
    (errno.EDQUOT, "your disk quota on it is used up", "free some space, ask for a larger quota, or choose another "
                                                       "output.dir"),
    (errno.EROFS, "it is read-only", "remount it read-write or choose another output.dir"),
    (errno.EACCES, "this user may not use it", "make it readable and writable for this user (chmod, chown) or "
                                               "choose another output.dir"),
    (errno.EIO, "its disk failed to read or write", "check the disk or its mount (dmesg) or choose another "
                                                    "output.dir"),
    (errno.ESTALE, "its network mount went stale", "mount it again or choose another output.dir"),
])
def test_a_store_errno_names_the_folder_the_cause_and_the_fix(tmp_path, code, cause, fix):
    failure = store_failure(OSError(code, os.strerror(code)), str(tmp_path), "writing b.gif")
    assert str(failure) == f"output folder {tmp_path}: {cause} ({os.strerror(code)}, writing b.gif); {fix}, then run again"


def test_a_jobs_own_path_problem_is_not_the_stores(tmp_path):
    for code in (errno.EISDIR, errno.ENAMETOOLONG, errno.ENOENT):  # ENOENT while the folder is there
        assert store_failure(OSError(code, os.strerror(code)), str(tmp_path), "writing b.gif") is None
    assert store_failure(ValueError("odd width"), str(tmp_path), "writing b.mp4") is None


def test_the_stores_own_files_fail_on_anything_and_a_remote_store_on_any_exception(tmp_path):
    failure = store_failure(OSError(errno.EISDIR, "Is a directory"), str(tmp_path), "writing index.json", every=True)
    assert str(failure) == (f"output folder {tmp_path}: it cannot be used (Is a directory, writing index.json); "
                            "check it or choose another output.dir, then run again")
    failure = store_failure(TimeoutError(), "s3://bucket/out", "uploading b.mp4")
    assert str(failure) == ("output folder s3://bucket/out: the store failed (TimeoutError, uploading b.mp4); check "
                            "the network, the URL and the credentials for it, or choose another output.dir, then run "
                            "again")


def test_a_folder_removed_under_the_run_is_gone(tmp_path):
    failure = store_failure(FileNotFoundError(errno.ENOENT, "No such file or directory"), str(tmp_path / "out"),
                            "writing b.mp4")
    assert failure.gone
    assert str(failure.after(2)) == (
        f"output folder {tmp_path / 'out'}: it is gone (removed or unmounted while the run used it) (No such file or "
        "directory, writing b.mp4); create or mount it again, or choose another output.dir, then run again (2 jobs "
        "finished in this run are recorded in the folder that went away)")


def test_ffmpegs_words_for_a_full_disk_are_read_back_as_its_errno():
    assert errno_named_in("[out#0/mp4 @ 0x55] Error closing file: No space left on device") == errno.ENOSPC
    assert errno_named_in("Error opening output file: Read-only file system") == errno.EROFS
    assert errno_named_in("Unknown encoder 'libx265'") is None


def test_the_error_crosses_processes_whole():
    error = OutputStoreError("/o", "its disk is full (x)", "free some", 3, gone=True)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.gone, copy.recorded, copy.exit_code) == (str(error), True, 3, 3)


# ------------------------------------------------------------------------------------------------
# A run stopped by its store


class _BlockingReporter(Reporter):
    """Holds the render loop at the start of job `hold` until the writer has stopped: the writer
    failing while the next job renders, made certain."""

    def __init__(self, hold: str, writers: list):
        self.hold, self.writers, self.started = hold, writers, []

    def job_started(self, job_id, number, total, worker=None):
        self.started.append(job_id)
        if job_id == self.hold:
            stopped = threading.Event()
            for _ in range(2000):
                if self.writers[0].stopped is not None:
                    stopped.set()
                    break
                stopped.wait(0.005)
            assert stopped.is_set(), "the writer did not stop"


def test_the_render_loop_stops_before_the_next_job_once_the_writer_fails(tmp_path, inject, monkeypatch):
    manifest = campaign(tmp_path, "abcd")
    writers = []
    original = writer_module.WriterThread.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        writers.append(self)

    monkeypatch.setattr(writer_module.WriterThread, "__init__", keep)
    inject("before-write:b.mp4=ENOSPC")
    reporter = _BlockingReporter("c", writers)

    with pytest.raises(OutputStoreError) as raised:
        run_manifest(manifest, reporter=reporter)

    assert reporter.started == ["a", "b", "c"]  # c was under way when b failed; d never starts
    out = tmp_path / "out"
    assert str(raised.value) == (f"output folder {out}: its disk is full (No space left on device, writing b.mp4); "
                                 "free some space on it or choose another output.dir, then run again" + RECORDED_ONE)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.json", "a.mp4"]
    [part] = [p for p in (out / ".svdflow" / "record").iterdir() if p.suffix == ".jsonl"]  # sealed, not compacted
    assert [json.loads(line)["id"] for line in part.read_text().splitlines()] == ["a"]
    # b's master was written before its mp4 failed; b is not recorded, so the next run renders it again.
    assert sorted(p.name for p in (out / ".svdflow" / "masters").iterdir()) == ["a.mkv", "b.mkv"]


@pytest.mark.parametrize(("point", "code", "first_line"), [
    ("lock", "EROFS", "it is read-only (Read-only file system, locking it); remount it read-write or choose another "
                      "output.dir, then run again"),
    ("before-write:b.json", "EACCES", "this user may not use it (Permission denied, writing b.json); make it readable "
                                      "and writable for this user (chmod, chown) or choose another output.dir, then "
                                      "run again" + RECORDED_ONE),
    ("before-write:b.mkv", "EDQUOT", "your disk quota on it is used up (Disk quota exceeded, writing "
                                     ".svdflow/masters/b.mkv); free some space, ask for a larger quota, or choose "
                                     "another output.dir, then run again" + RECORDED_ONE),
    # The compaction at the run's end: both jobs are recorded (their sidecars), the next run has nothing to do.
    ("before-write:index.jsonl", "EIO", "its disk failed to read or write (Input/output error, writing index.jsonl); "
                                        "check the disk or its mount (dmesg) or choose another output.dir, then run "
                                        "again" + RECORDED_ONE.replace("1 job finished in this run is", "2 jobs "
                                                                       "finished in this run are")),
])
def test_each_stage_that_writes_stops_the_run_with_exit_3_and_the_next_run_finishes(tmp_path, inject, capsys,
                                                                                      monkeypatch, point, code,
                                                                                      first_line):
    campaign(tmp_path)
    monkeypatch.chdir(tmp_path)
    inject(f"{point}={code}")
    exit_code, _, err = run_cli(capsys, "run", "m.yaml")
    assert exit_code == 3
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: output folder {tmp_path / 'out'}: {first_line}"]

    inject("")
    exit_code, _, err = run_cli(capsys, "run", "m.yaml")
    rendered = 2 if point == "lock" else 0 if point == "before-write:index.jsonl" else 1
    assert exit_code == 0, err
    assert f"{rendered} rendered, 0 re-encoded, {2 - rendered} up to date, 0 failed" in err


def test_the_lock_notices_its_folder_removed_or_replaced(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    lock = claim_output_dir(store)
    try:
        lock.check()
        shutil.rmtree(tmp_path / "out")
        (tmp_path / "out").mkdir()  # an empty folder in its place: writing on would lose the record
        with pytest.raises(OutputStoreError) as raised:
            lock.check()
    finally:
        lock.release()
    assert str(raised.value) == (
        f"output folder {tmp_path / 'out'}: it is gone (removed or unmounted while the run used it) (.svdflow.lock, "
        "which this run locked, is no longer in it); create or mount it again, or choose another output.dir, then "
        "run again")


@pytest.mark.slow  # two runs on a failing store: several seconds
def test_a_remote_store_that_stops_answering_stops_the_run_and_the_next_run_finishes(tmp_path, monkeypatch):
    from faulty_store import FaultyMemoryFileSystem

    monkeypatch.setenv("SVDFLOW_EXTRA_PROTOCOLS", "faulty")  # a test protocol: off svdflow's allow-list

    url = f"faulty://bucket/{tmp_path.name}"
    manifest = campaign(tmp_path, out=url)
    FaultyMemoryFileSystem.down_at = "/b.mp4"
    try:
        with pytest.raises(OutputStoreError) as raised:
            run_manifest(manifest)
    finally:
        FaultyMemoryFileSystem.up()
    assert str(raised.value) == (
        f"output folder {url}: the store failed (EndpointDown: Could not connect to the endpoint URL, uploading "
        "b.mp4); check the network, the URL and the credentials for it, or choose another output.dir, then run again"
        + RECORDED_ONE)

    result = run_manifest(manifest)
    assert result.statuses == {"a": "up to date", "b": "done"}
    store = OutputStore(url)
    (b_mp4,) = RunIndex.load(store).get("b").outputs
    assert store.size("b.mp4") == b_mp4.bytes
    assert not [name for name in store.fs.find(store.root) if ".tmp-" in name]


def test_a_ray_worker_answers_a_store_failure_as_broken(tmp_path, inject, request):
    from svdflow.run.engines.ray_worker import RenderDone, RenderWorker, WorkerBroken
    from svdflow.run.engines.scheduling import Assignment
    from svdflow.run.planning import plan_run

    spec = load_run_spec(campaign(tmp_path))
    OutputStore(spec.output_dir).makedirs()
    planned = plan_run(spec)
    worker = RenderWorker("w", spec, [p.job for p in planned], [])
    request.addfinalizer(worker.close)
    inject("before-write:a.mkv=ENOSPC")

    assert isinstance(worker.render(Assignment(planned[0], 1)), RenderDone)
    answer = worker.finish(Assignment(planned[0], 1))

    assert isinstance(answer, WorkerBroken) and isinstance(answer.error, OutputStoreError)
    assert pickle.loads(pickle.dumps(answer)).error.message == answer.error.message
    assert Location.parse(answer.error.folder).path == str(tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.tmp-*"))
