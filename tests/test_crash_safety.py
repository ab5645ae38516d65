"""Crash safety, interruption, the output lock and incremental reruns, with real `svdflow` processes.

Crashes are made deterministic with SVDFLOW_CRASH_AT (svdflow/faults.py): the process SIGKILLs
itself at a named point, exactly what `kill -9` would do at that moment. After every kill the
folder must hold only whole files under final names, and the next run must finish only what was
left unfinished. The runs that are killed, stopped or locked out are real processes; a run or plan
that only has to finish after them is the CLI in this test's process (`in_process`), on one thread
as the processes are: each process spends seconds importing torch and diffusers.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
from conftest import SVDFLOW, index_lines, run_cli, write_image
from conftest import recorded as recorded_entries
from disks import wait_stopped
from test_run import tiny_manifest

# Real processes killed with SIGKILL: ~70 s in all. Frames are compared across processes and this one,
# so every render uses one thread (the processes: OMP_NUM_THREADS=1 below).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TIMEOUT = 300  # per process; a tiny render takes seconds, a loaded CI machine can be slow

A = "  - id: a\n    image: a.png\n"
B = "  - id: b\n    image: a.png\n    seed: 7\n"
C = "  - id: c\n    image: a.png\n    motion_bucket_id: 60\n"
N = "  - id: n\n    image: n.png\n"
THREE_JOBS = A + B + C


def _env(crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SVDFLOW_CRASH_AT"}
    env["HF_HUB_OFFLINE"] = "1"
    # At these toy sizes OpenMP threads only wait on each other; on a busy 2-core machine their
    # spinning makes renders several times slower. Every run here uses the same count.
    env["OMP_NUM_THREADS"] = "1"
    if crash_at:
        env["SVDFLOW_CRASH_AT"] = crash_at
    return env


def svdflow(cwd: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI to the end; the result also carries the process id (`.pid`)."""
    with subprocess.Popen([*SVDFLOW, *args], cwd=cwd, env=_env(crash_at), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    result.pid = proc.pid
    return result


def in_process(capsys, cwd: Path, command: str, *args: str) -> subprocess.CompletedProcess:
    """`svdflow <command> m.yaml <args>` in `cwd`, to its end, in this process."""
    code, out, err = run_cli(capsys, command, str(cwd / "m.yaml"), *args)
    return subprocess.CompletedProcess([command, *args], code, out, err)


class Running:
    """`svdflow run --json` in the background, its events read as they come."""

    def __init__(self, cwd: Path, *args: str, crash_at: str | None = None):
        self.stderr_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([*SVDFLOW, "run", "m.yaml", "--json", *args], cwd=cwd, env=_env(crash_at),
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.events: list[dict] = []
        # A hung process must fail the test, not hang it: readline() below has no timeout.
        self._watchdog = threading.Timer(TIMEOUT, self.proc.kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def wait_for(self, predicate, required: bool = True) -> dict | None:
        for line in self.proc.stdout:
            event = json.loads(line)
            self.events.append(event)
            if predicate(event):
                return event
        assert not required, f"the run ended before the expected event: {self.events}\n{self.stderr()}"
        return None

    def finish(self, events: bool = True) -> int:
        out, _ = self.proc.communicate(timeout=TIMEOUT)
        if events:  # a killed run may have died mid-line
            self.events += [json.loads(line) for line in out.splitlines()]
        self._watchdog.cancel()
        self._stderr.close()
        return self.proc.returncode

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(events=False)


def step_of(job_id: str):
    return lambda event: event["event"] == "job_step" and event["id"] == job_id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mp4_frames(path: Path) -> int:
    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)  # metadata
    return sum(1 for _ in reader)


def check_folder(out: Path, records_match: bool = True) -> dict[str, dict]:
    """Assert what must hold after any kill; return the done entries a next run sees (index + sidecars).

    Every final-named file is whole: each mp4 decodes to all 4 frames and each .json parses. With
    `records_match`, each done entry's outputs are on disk with the recorded sha256.
    """
    for path in sorted(out.iterdir()):
        if path.name.startswith("."):  # temporaries and the lock
            continue
        if path.suffix == ".mp4":
            assert mp4_frames(path) == 4, path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
    recorded = recorded_entries(out)
    done = {job_id: e for job_id, e in recorded.items() if e["status"] == "done"}
    for entry in done.values() if records_match else ():
        for output in entry["outputs"]:
            assert sha256(out / output["file"]) == output["sha256"], output
    return done


def temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp-" in p.name)


def index_entries(out: Path) -> dict[str, dict]:
    """The jobs index.jsonl holds (whole entries, each line with its run's shared parts)."""
    compacted = index_lines(out)
    return {job_id: entry for job_id, entry in recorded_entries(out).items() if job_id in compacted}


def assert_unchanged(before: dict[str, dict], after: dict[str, dict]) -> None:
    """Jobs done before a rerun were not rendered again."""
    for job_id, entry in before.items():
        assert after[job_id]["finished_unix"] == entry["finished_unix"], job_id
        assert after[job_id]["outputs"] == entry["outputs"], job_id


def test_kill_9_at_each_critical_point_then_rerun_finishes_only_the_rest(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    tiny_manifest(tmp_path, THREE_JOBS)
    out = tmp_path / "out"

    def crash(point: str) -> None:
        proc = svdflow(tmp_path, "run", "m.yaml", crash_at=point)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        # The dead run's lock file still names it; its flock died with it, so it blocks nobody.
        assert json.loads((out / ".svdflow.lock").read_text())["pid"] == proc.pid

    # Mid-denoise of b (a's two steps come first): nothing of b exists.
    crash("denoise-step@3")
    done = check_folder(out)
    assert set(done) <= {"a"} and not (out / "b.mp4").exists()

    # Mid-encode of b: its temporary is complete, the final name does not exist yet.
    crash("before-rename:b.mp4")
    after = check_folder(out)
    assert_unchanged(done, after)
    assert set(after) == {"a"} and not (out / "b.mp4").exists()
    [partial] = [name for name in temporaries(out) if name.startswith(".b.mp4.tmp-")]
    assert mp4_frames(out / partial) == 4
    done = after

    # Mid compaction, after b's and c's sidecars: no index.jsonl yet (nothing compacted it before);
    # the sidecars and the run's record hold the run.
    crash("before-rename:index.jsonl")
    after = check_folder(out)
    assert_unchanged(done, after)
    assert set(after) == {"a", "b", "c"} and index_entries(out) == {}
    assert partial not in temporaries(out)  # this run cleaned the previous crash's leftovers
    recorded_b = after["b"]

    # b changes, and the run dies after replacing b.mp4 but before recording it: the old record
    # now sits beside a new, whole b.mp4.
    tiny_manifest(tmp_path, A + B.replace("seed: 7", "seed: 8") + C)
    crash("before-rename:b.json")
    after = check_folder(out, records_match=False)
    assert_unchanged(done, after)
    assert after["b"] == recorded_b and sha256(out / "b.mp4") != recorded_b["outputs"][0]["sha256"]
    assert [name for name in temporaries(out) if name.startswith(".b.json.tmp-")]

    # Back to the recorded b: its file is not the recorded one, so b renders again, and c for the
    # first time; a is untouched and no temporaries are left.
    tiny_manifest(tmp_path, THREE_JOBS)
    proc = in_process(capsys, tmp_path, "run", "--json")
    assert proc.returncode == 0, proc.stderr
    finished = json.loads(proc.stdout.splitlines()[-1])
    assert (finished["rendered"], finished["up_to_date"], finished["failed"]) == (1, 2, 0)
    after = check_folder(out)
    assert_unchanged(done, after)
    assert set(after) == {"a", "b", "c"} and index_entries(out).keys() == {"a", "b", "c"}
    assert after["b"]["frames_sha256"] == recorded_b["frames_sha256"]
    assert temporaries(out) == []
    assert "Traceback" not in proc.stderr


def test_kill_9_while_a_decode_waits_for_the_next_job_then_rerun_finishes_the_rest(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    manifest = tiny_manifest(tmp_path, THREE_JOBS)
    manifest.write_text(manifest.read_text().replace("{profile: cpu}", "{profile: cpu, overlap_decode: true}"))
    out = tmp_path / "out"

    # b's first step: a's deferred decode has just handed its frames to the writer, which may or
    # may not have written them.
    proc = svdflow(tmp_path, "run", "m.yaml", crash_at="denoise-step@3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    done = check_folder(out)
    assert set(done) <= {"a"} and not (out / "b.mp4").exists()

    proc = in_process(capsys, tmp_path, "run", "--json")
    assert proc.returncode == 0, proc.stderr
    after = check_folder(out)
    assert_unchanged(done, after)
    assert set(after) == {"a", "b", "c"} and all(e["hardware"]["overlap_decode"] for e in after.values())
    assert temporaries(out) == []


def test_kill_9_during_a_re_encode_leaves_no_truncated_file_and_the_rerun_finishes(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    manifest = tiny_manifest(tmp_path, THREE_JOBS)
    out = tmp_path / "out"
    masters = out / ".svdflow" / "masters"
    # Killed while writing c's master: a complete temporary, no master under its name, c unrecorded.
    proc = svdflow(tmp_path, "run", "m.yaml", crash_at="before-rename:c.mkv")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert set(check_folder(out)) == {"a", "b"} and not (masters / "c.mkv").exists()
    assert [name for name in os.listdir(masters) if name.startswith(".c.mkv.tmp-")]
    proc = in_process(capsys, tmp_path, "run")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(masters)) == ["a.mkv", "b.mkv", "c.mkv"]  # the dead run's temporary is gone
    rendered = check_folder(out)
    manifest.write_text(manifest.read_text().replace("formats: [mp4]", "formats: [mp4], crf: 30"))

    # b's new mp4 is encoded and not yet renamed; a was re-encoded and recorded before it.
    proc = svdflow(tmp_path, "run", "m.yaml", crash_at="before-rename:b.mp4")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    after = check_folder(out)
    assert after["a"]["output"]["crf"] == 30 and after["b"] == rendered["b"] and after["c"] == rendered["c"]
    assert [name for name in temporaries(out) if name.startswith(".b.mp4.tmp-")]

    # Killed between re-encoding c's mp4 and recording it: the new file sits beside the old record.
    proc = svdflow(tmp_path, "run", "m.yaml", crash_at="before-rename:c.json")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    after = check_folder(out, records_match=False)
    assert after["b"]["output"]["crf"] == 30 and after["c"] == rendered["c"]

    proc = in_process(capsys, tmp_path, "run", "--json")
    assert proc.returncode == 0, proc.stderr
    finished = json.loads(proc.stdout.splitlines()[-1])
    assert (finished["rendered"], finished["re_encoded"], finished["up_to_date"]) == (0, 1, 2)
    assert not any(e["event"] == "job_stage" and e["stage"] in ("load model", "denoise")
                   for e in map(json.loads, proc.stdout.splitlines()))
    after = check_folder(out)
    assert all(e["output"]["crf"] == 30 and e["frames_sha256"] == rendered[job_id]["frames_sha256"]
               for job_id, e in after.items())
    assert temporaries(out) == [] and sorted(os.listdir(masters)) == ["a.mkv", "b.mkv", "c.mkv"]


def test_kill_9_at_random_moments_then_rerun_renders_only_unfinished_jobs(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    tiny_manifest(tmp_path, THREE_JOBS + "  - id: d\n    image: a.png\n    seed: 3\n")
    out = tmp_path / "out"
    rng = random.Random(3)
    done: dict[str, dict] = {}
    for _ in range(2):
        run = Running(tmp_path)
        # Counted from the first denoising step, so that the kill lands among renders, encodes and
        # index writes (the four jobs take about 1.5 s there) rather than in imports and model load.
        if run.wait_for(lambda event: event["event"] == "job_step", required=False):
            time.sleep(rng.uniform(0.0, 1.5))
        run.kill()
        after = check_folder(out)
        assert_unchanged(done, after)
        done = after
        if run.proc.returncode == 0:  # it finished before the kill: nothing left to interrupt
            break
        assert run.proc.returncode == -signal.SIGKILL
    proc = in_process(capsys, tmp_path, "run", "--json")
    assert proc.returncode == 0, proc.stderr
    finished = json.loads(proc.stdout.splitlines()[-1])
    assert finished["event"] == "run_finished"
    assert (finished["rendered"], finished["up_to_date"]) == (4 - len(done), len(done))
    after = check_folder(out)
    assert_unchanged(done, after)
    assert set(after) == {"a", "b", "c", "d"} and index_entries(out).keys() == {"a", "b", "c", "d"}
    assert temporaries(out) == []


def test_lock_interrupts_orphans_and_plan_over_one_campaign(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "n.png", seed=2)
    tiny_manifest(tmp_path, THREE_JOBS)
    out = tmp_path / "out"
    resume = f"error: interrupted; 1 job finished and recorded in {out}/index.jsonl; run again to render the rest"

    # The run stops itself at b's first step (2 steps a job), mid-render, holding the lock: a second run
    # on the folder is refused, naming the holder. (Stopped by the fault knob, not by a signal sent on
    # seeing an event: on a loaded machine the run can be jobs ahead of the events the test has read.)
    run = Running(tmp_path, crash_at="denoise-step@3=stop")
    try:
        assert wait_stopped(run.proc), run.stderr()
        holder = json.loads((out / ".svdflow.lock").read_text())
        assert holder["pid"] == run.proc.pid
        second = svdflow(tmp_path, "run", "m.yaml")
        assert second.returncode == 3
        assert (f"error: {out} is being rendered by another svdflow run (pid {run.proc.pid} on "
                f"{socket.gethostname()}, started {holder['started']}); wait for it to finish, or stop it and run "
                "again") in second.stderr.splitlines()
        # Ctrl-C during the second job: a is recorded, b abandoned, exit 130 with how to resume.
        run.proc.send_signal(signal.SIGINT)  # taken as the run goes on
    finally:
        run.proc.send_signal(signal.SIGCONT)
    assert run.finish() == 130
    assert resume in run.stderr().splitlines() and "Traceback" not in run.stderr()
    assert run.events[-1]["event"] == "run_finished" and run.events[-1]["exit_code"] == 130
    recorded = index_entries(out)
    assert recorded.keys() == {"a"} and recorded["a"]["status"] == "done"
    done = check_folder(out)

    # SIGTERM (CI, schedulers) stops the same way: b, the first job left, finishes; c is abandoned.
    run = Running(tmp_path, crash_at="denoise-step@3=stop")  # c's first step
    assert wait_stopped(run.proc), run.stderr()
    run.proc.send_signal(signal.SIGTERM)
    run.proc.send_signal(signal.SIGCONT)
    assert run.finish() == 130
    assert resume in run.stderr().splitlines() and "Traceback" not in run.stderr()
    assert index_entries(out).keys() == {"a", "b"}
    after = check_folder(out)
    assert_unchanged(done, after)
    assert set(after) == {"a", "b"} and not (out / "c.mp4").exists()

    plan = in_process(capsys, tmp_path, "plan", "--json", "--check")
    assert plan.returncode == 1, plan.stderr
    assert [(p["id"], p["status"]) for p in json.loads(plan.stdout)] == [
        ("a", "up to date"), ("b", "up to date"), ("c", "new")]

    # A lock file left by a dead process does not block the next run: the flock died with it.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".svdflow.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                   "started": "2020-01-01T00:00:00Z", "argv": ["run"]}))
    # b leaves the manifest, n arrives first: b is orphaned and kept; a's frames do not depend on
    # which other items exist or where a sits (--force renders it again to compare).
    tiny_manifest(tmp_path, N + A + C)
    proc = in_process(capsys, tmp_path, "run", "--json", "--force")
    assert proc.returncode == 0, proc.stderr
    finished = json.loads(proc.stdout.splitlines()[-1])
    assert (finished["rendered"], finished["orphaned"]) == (3, ["b"])
    assert "orphaned (no longer in the manifest, files kept): b" in proc.stderr.splitlines()
    assert (out / "b.mp4").exists() and (out / "b.json").exists()
    recorded = index_entries(out)
    assert recorded.keys() == {"n", "a", "b", "c"} and recorded["b"] == after["b"]
    assert recorded["a"]["frames_sha256"] == after["a"]["frames_sha256"]
    assert recorded["a"]["finished_unix"] > after["a"]["finished_unix"]

    # One changed parameter: plan names it, --check says so, run renders exactly that job.
    tiny_manifest(tmp_path, N + A + C.replace("motion_bucket_id: 60", "motion_bucket_id: 90"))
    plan = in_process(capsys, tmp_path, "plan", "--json", "--check")
    assert plan.returncode == 1, plan.stderr
    assert [(p["id"], p["status"], p["reason"]) for p in json.loads(plan.stdout)] == [
        ("n", "up to date", ""), ("a", "up to date", ""), ("c", "changed", "motion_bucket_id 60 -> 90")]
    proc = in_process(capsys, tmp_path, "run", "--json")
    assert proc.returncode == 0, proc.stderr
    finished = json.loads(proc.stdout.splitlines()[-1])
    assert (finished["rendered"], finished["up_to_date"], finished["orphaned"]) == (1, 2, ["b"])
    after = index_entries(out)
    assert {job_id: after[job_id] for job_id in "nab"} == {job_id: recorded[job_id] for job_id in "nab"}
    assert after["c"]["params"]["motion_bucket_id"] == 90 and after["c"]["key"] != recorded["c"]["key"]
