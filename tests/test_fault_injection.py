"""Fault injection through real `svdflow` processes: the output folder on a small disk that fills up, is
remounted read-only or is removed at the moment each stage writes (lock, master, mp4, gif, webp,
frames, hevc, prores, webm, sidecar, the record's compaction, report, re-encode), and a remote store that stops
answering mid-run.

Every case: exit 3, one `error:` line naming the folder, the cause and the fix, no traceback, no
partial file under a final name and no temporary left, then, once the cause is fixed (the disk grown
or remounted read-write), a run that renders only what is missing. One run of each fault (a full disk,
one remounted read-only, the folder removed, a disk full at the lock) is a real process, as a user
sees it; the other faulted runs and every run after a fix (`rerun`) are the CLI in this test's process,
the fault made where svdflow reaches its point (svdflow.faults.acting_at): what they show is the folder
and the run's words, which need no process of their own, and each process spends seconds importing
torch and diffusers before it renders anything. The disk is a tmpfs mounted by
the test (tests/disks.py); where mounting is not permitted, the same errno is raised at the same
point instead (SVDFLOW_TEST_NO_MOUNT=1 runs the suite that way here). The Ray and torchrun cases are
in tests/test_ray.py and tests/test_distributed.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import pytest
from conftest import REPO, run_cli, write_image, write_manifest
from disks import TIMEOUT, env, run, run_in_process
from PIL import Image

# A real svdflow process is ~8 s; the runs in this process render on one thread as the processes do
# (tests/disks.py: OMP_NUM_THREADS=1).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

HEADER = """
svdflow: 1
name: f
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: OUT, formats: FORMATS}
defaults: {num_frames: 2, num_inference_steps: 2, width: 64, height: 64, fps: 7}
items:
  - {id: a, image: a.png}
  - {id: b, image: a.png, seed: 7}
"""
FRAMES = 2
FULL = ("its disk is full (No space left on device, {doing}); free some space on it or choose another output.dir, "
        "then run again")
READ_ONLY = ("it is read-only (Read-only file system, {doing}); remount it read-write or choose another output.dir, "
             "then run again")
GONE = ("it is gone (removed or unmounted while the run used it) ({detail}); create or mount it again, or choose "
        "another output.dir, then run again")
RECORDED_ONE = " (1 job finished in this run is recorded; the next run renders only what is missing)"


def campaign(folder: Path, formats: str = "[mp4]", out: str = "disk/out") -> Path:
    write_image(folder / "a.png", width=64, height=64)
    return write_manifest(folder, HEADER.replace("OUT", out).replace("FORMATS", formats))


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def rerun(capsys, folder: Path, *args: str) -> str:
    """`svdflow run m.yaml` in `folder` once the fault is fixed, in this process: its summary (as "1
    rendered, 0 re-encoded, 1 up to date, 0 failed")."""
    code, _, err = run_cli(capsys, "run", str(folder / "m.yaml"), *args)
    assert code == 0 and "Traceback" not in err, err
    return next(line for line in err.splitlines() if " rendered, " in line).split(" in ")[0]


def failing_run(capsys, disk, folder: Path, args: list[str], point: str, fault: str,
                process: bool = False) -> subprocess.CompletedProcess:
    """`svdflow <args>` in `folder` whose output folder fails ("full", "read-only", "gone") the moment
    the run reaches `point`: a real process (stopped there while the disk is changed) or this one."""
    if process:
        return disk.run_failing_at(folder, args, point, fault)
    return run_in_process(capsys, folder, args, point, disk.failing_at(point, fault))


def check_folder(out: Path) -> None:
    """Only whole files under final names, and no temporary left."""
    if not out.exists():
        return
    leftovers = [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    assert leftovers == [], leftovers
    for path in out.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".mp4", ".mkv", ".mov", ".webm"):
            reader = imageio_ffmpeg.read_frames(str(path))
            next(reader)
            assert sum(1 for _ in reader) == FRAMES, path
        elif path.suffix in (".gif", ".webp"):
            with Image.open(path) as image:
                assert image.n_frames >= 1
                image.seek(image.n_frames - 1)
                image.load()
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>")


# (formats, fault point, what was being written)
STAGES = {
    "master": ("[mp4]", "before-write:b.mkv", "writing .svdflow/masters/b.mkv"),
    "mp4": ("[mp4]", "before-write:b.mp4", "writing b.mp4"),
    "hevc": ("[hevc]", "before-write:b.hevc.mp4", "writing b.hevc.mp4"),
    "prores": ("[prores]", "before-write:b.mov", "writing b.mov"),
    "webm": ("[webm]", "before-write:b.webm", "writing b.webm"),
    "gif": ("[gif]", "before-write:b.gif", "writing b.gif"),
    "webp": ("[webp]", "before-write:b.webp", "writing b.webp"),
    "frames": ("[frames]", "before-write:b_frames", "writing b_frames"),
    "sidecar": ("[mp4]", "before-write:b.json", "writing b.json"),
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_at_each_stage_stops_the_run_and_the_next_run_renders_the_rest(stage, tmp_path, capsys, small_disk):
    formats, point, doing = STAGES[stage]
    campaign(tmp_path, formats)
    out = small_disk.path / "out"

    failed = failing_run(capsys, small_disk, tmp_path, ["run", "m.yaml"], point, "full", process=stage == "mp4")

    assert failed.returncode == 3, failed.stderr
    assert error_lines(failed) == [f"error: output folder {out}: {FULL.format(doing=doing)}{RECORDED_ONE}"]
    check_folder(out)
    small_disk.grow()
    assert rerun(capsys, tmp_path) == "1 rendered, 0 re-encoded, 1 up to date, 0 failed"
    check_folder(out)


def test_a_full_disk_at_the_last_index_write(tmp_path, capsys, small_disk):
    campaign(tmp_path)
    out = small_disk.path / "out"

    # The record's compaction at the run's end (index.jsonl): both jobs are recorded by their sidecars.
    failed = failing_run(capsys, small_disk, tmp_path, ["run", "m.yaml"], "before-write:index.jsonl", "full")

    assert failed.returncode == 3, failed.stderr
    assert error_lines(failed) == [
        f"error: output folder {out}: {FULL.format(doing='writing index.jsonl')} (2 jobs finished in this run are "
        "recorded; the next run renders only what is missing)"]
    check_folder(out)
    small_disk.grow()
    assert rerun(capsys, tmp_path) == "0 rendered, 0 re-encoded, 2 up to date, 0 failed"
    check_folder(out)


@pytest.mark.parametrize("stage", ["mp4", "sidecar"])
def test_a_disk_remounted_read_only_mid_run_stops_it_and_the_next_run_renders_the_rest(stage, tmp_path, capsys,
                                                                                       small_disk):
    formats, point, doing = STAGES[stage]
    campaign(tmp_path, formats)
    out = small_disk.path / "out"

    failed = failing_run(capsys, small_disk, tmp_path, ["run", "m.yaml"], point, "read-only", process=stage == "mp4")

    assert failed.returncode == 3, failed.stderr
    assert error_lines(failed) == [f"error: output folder {out}: {READ_ONLY.format(doing=doing)}{RECORDED_ONE}"]
    check_folder(out)
    small_disk.writable()
    assert rerun(capsys, tmp_path) == "1 rendered, 0 re-encoded, 1 up to date, 0 failed"
    check_folder(out)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_disk_is_said_at_the_lock_before_anything_renders(fault, tmp_path, capsys, small_disk):
    campaign(tmp_path)
    out = small_disk.path / "out"
    out.mkdir()
    crash_at = small_disk.fault_before(fault)

    if fault == "full":
        failed = run(tmp_path, ["run", "m.yaml", "--json"], crash_at=crash_at)
    else:  # in this process; where no disk is mounted, the fault is raised at the lock as crash_at says
        act = None if crash_at is None else small_disk.failing_at("lock", fault)
        failed = run_in_process(capsys, tmp_path, ["run", "m.yaml", "--json"], "lock" if act else None, act)

    assert failed.returncode == 3, failed.stderr
    message = (FULL if fault == "full" else READ_ONLY).format(doing="locking it")
    assert error_lines(failed) == [f"error: output folder {out}: {message}"]
    assert failed.stdout == ""  # not even run_started: nothing was planned or rendered
    small_disk.grow() if fault == "full" else small_disk.writable()
    assert rerun(capsys, tmp_path) == "2 rendered, 0 re-encoded, 0 up to date, 0 failed"
    check_folder(out)


def test_a_full_disk_while_re_encoding_from_the_masters(tmp_path, capsys, small_disk):
    campaign(tmp_path, "[mp4]")
    assert rerun(capsys, tmp_path) == "2 rendered, 0 re-encoded, 0 up to date, 0 failed"
    campaign(tmp_path, "[mp4, gif]")  # only the files change: both jobs re-encode from their masters
    out = small_disk.path / "out"

    failed = failing_run(capsys, small_disk, tmp_path, ["run", "m.yaml"], "before-write:b.gif", "full")

    assert failed.returncode == 3, failed.stderr
    assert error_lines(failed) == [f"error: output folder {out}: {FULL.format(doing='writing b.gif')}{RECORDED_ONE}"]
    check_folder(out)
    small_disk.grow()
    assert rerun(capsys, tmp_path) == "0 rendered, 1 re-encoded, 1 up to date, 0 failed"
    check_folder(out)


def test_a_full_disk_while_writing_the_report(tmp_path, capsys, small_disk):
    campaign(tmp_path)
    out = small_disk.path / "out"

    failed = failing_run(capsys, small_disk, tmp_path, ["run", "m.yaml", "--report"], "before-write:index.html",
                         "full")

    assert failed.returncode == 3, failed.stderr
    assert "2 rendered, 0 re-encoded, 0 up to date, 0 failed" in failed.stderr  # the run itself was done
    assert error_lines(failed) == [f"error: output folder {out}: {FULL.format(doing='writing index.html')}"]
    assert not (out / "index.html").exists()
    check_folder(out)
    small_disk.grow()
    assert rerun(capsys, tmp_path, "--report") == "0 rendered, 0 re-encoded, 2 up to date, 0 failed"
    check_folder(out)
    assert (out / "index.html").exists()


def test_the_output_folder_removed_mid_run(tmp_path, capsys, small_disk):
    campaign(tmp_path)
    out = small_disk.path / "out"

    failed = failing_run(capsys, small_disk, tmp_path, ["run", "m.yaml"], "before-write:b.mp4", "gone", process=True)

    assert failed.returncode == 3, failed.stderr
    assert error_lines(failed) == [
        f"error: output folder {out}: {GONE.format(detail='No such file or directory, writing b.mp4')} (1 job "
        "finished in this run is recorded in the folder that went away)"]
    assert not out.exists()  # not made again, empty, by the rest of the run
    assert rerun(capsys, tmp_path) == "2 rendered, 0 re-encoded, 0 up to date, 0 failed"
    check_folder(out)


def test_the_output_folder_replaced_by_another_mid_run(tmp_path, capsys, small_disk):
    """An empty folder made (or a share mounted) where the run's was: b's files land there, but b is
    not recorded in a folder that is not the run's, and the run stops."""
    campaign(tmp_path)
    out = small_disk.path / "out"

    def replace() -> None:
        shutil.rmtree(out)
        out.mkdir()

    failed = run_in_process(capsys, tmp_path, ["run", "m.yaml"], "before-write:b.mkv", replace)

    assert failed.returncode == 3, failed.stderr
    assert error_lines(failed) == [
        f"error: output folder {out}: {GONE.format(detail='.svdflow.lock, which this run locked, is no longer in it')}"
        " (1 job finished in this run is recorded in the folder that went away)"]
    assert not (out / "b.json").exists() and not (out / "index.jsonl").exists()
    assert rerun(capsys, tmp_path) == "2 rendered, 0 re-encoded, 0 up to date, 0 failed"


DRIVER = """
import json, os, sys
sys.path.insert(0, {tests!r})
import fsspec
import faulty_store
from faulty_store import FaultyMemoryFileSystem
from svdflow.cli import main

FaultyMemoryFileSystem.down_at = "/b.mp4"
for label in ("down", "up"):
    print("=== " + label, file=sys.stderr, flush=True)
    try:
        main(["run", "m.yaml"])
    except SystemExit as exc:
        print("=== exit " + str(exc.code), file=sys.stderr, flush=True)
    FaultyMemoryFileSystem.up()
fs = fsspec.filesystem("faulty")
for path in fs.find("/bucket"):  # the store's files, for the test to look at
    local = os.path.join("dump", path.lstrip("/"))
    os.makedirs(os.path.dirname(local), exist_ok=True)
    fs.get_file(path, local)
"""


def test_a_remote_store_that_stops_answering_mid_run(tmp_path):
    """One process, two `svdflow run`s: the memory store lives as long as the process."""
    campaign(tmp_path, out="faulty://bucket/out")
    proc = subprocess.run([sys.executable, "-c", DRIVER.format(tests=str(REPO / "tests"))], cwd=tmp_path,
                          env=env(XDG_CACHE_HOME=str(tmp_path / "cache"), SVDFLOW_EXTRA_PROTOCOLS="faulty"),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert "Traceback" not in proc.stderr, proc.stderr
    down, up = proc.stderr.split("=== up\n")
    assert down.rstrip().endswith("=== exit 3"), down
    assert [line for line in down.splitlines() if line.startswith("error:")] == [
        "error: output folder faulty://bucket/out: the store failed (EndpointDown: Could not connect to the endpoint "
        "URL, uploading b.mp4); check the network, the URL and the credentials for it, or choose another "
        "output.dir, then run again" + RECORDED_ONE]
    assert up.rstrip().endswith("=== exit 0"), up
    assert "1 rendered, 0 re-encoded, 1 up to date, 0 failed" in up
    check_folder(tmp_path / "dump" / "bucket" / "out")
    assert sorted(p.name for p in (tmp_path / "dump" / "bucket" / "out").iterdir()) == [
        ".svdflow", "a.json", "a.mp4", "b.json", "b.mp4", "index.jsonl", "runs.jsonl"]
