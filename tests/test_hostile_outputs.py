"""Hostile output folders and run endings (issue 23, cases 2, 3, 5, 7 and the killed holder of 8).

svdflow writes only into a folder that is new, empty or its own, never replaces a file its record does
not list, never writes through a link inside the folder, and every way a run ends leaves no hang and
no lock. Real files, real symlinks, real subprocesses; exact messages.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SVDFLOW, recorded, run_cli, write_image, write_manifest
from disks import wait_stopped
from test_index import RELEASE, never_built, smoke_campaign
from test_run import tiny_manifest

from svdflow.api import run_manifest
from svdflow.errors import InternalError
from svdflow.locations import Location
from svdflow.outputs.lock import OutputLock
from svdflow.pipeline.session import PipelineSession
from svdflow.run.progress import Reporter

TIMEOUT = 300
ONE = "  - id: a\n    image: a.png\n"
FOUR = "".join(f"  - id: j{n}\n    image: a.png\n    seed: {n}\n" for n in range(4))


def _env(crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SVDFLOW_CRASH_AT"}
    env["OMP_NUM_THREADS"] = "1"
    if crash_at:
        env["SVDFLOW_CRASH_AT"] = crash_at
    return env


def _tree(folder) -> dict[str, bytes | None]:
    """Every file under `folder` (links as their target's text), to show nothing changed."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[rel] = f"-> {os.readlink(path)}".encode()
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    found[rel] = f.read()
            else:
                found[rel] = None
    return found


# -- case 2: no write, truncate or delete through a link inside the folder -------------------------

def _link_refused(out, link: str, target, doing: str) -> str:
    return (f"error: output folder {out}: a symbolic link is in the way ({link} is a symbolic link to {target}, "
            f"{doing}); remove the link (svdflow writes nothing through a link inside its output folder) or "
            "choose another output.dir, then run again")


def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    tiny_manifest(tmp_path, ONE)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".svdflow.lock").symlink_to(victim)

    code, _, err = run_cli(capsys, "run", str(tmp_path / "m.yaml"))

    assert code == 3
    assert err.splitlines() == [_link_refused(tmp_path / "out", ".svdflow.lock", victim, "locking it")]
    assert victim.read_text() == "precious"
    assert sorted(os.listdir(tmp_path / "out")) == [".svdflow.lock"]


def test_a_linked_masters_folder_is_refused_and_nothing_is_written_or_removed_there(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    tiny_manifest(tmp_path, ONE)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "x.mkv").write_bytes(b"mine")
    (victim / ".x.mkv.tmp-999999999-abcd.mkv").write_bytes(b"looks like a dead writer's temporary")
    (tmp_path / "out" / ".svdflow").mkdir(parents=True)
    (tmp_path / "out" / ".svdflow" / "masters").symlink_to(victim)
    before = _tree(victim)

    code, _, err = run_cli(capsys, "run", str(tmp_path / "m.yaml"))

    assert code == 3
    assert err.splitlines() == [_link_refused(tmp_path / "out", ".svdflow/masters", victim,
                                              "removing a killed run's temporary files")]
    assert _tree(victim) == before


def test_a_linked_report_folder_is_refused_and_its_images_kept(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    tiny_manifest(tmp_path, ONE)
    assert run_manifest(tmp_path / "m.yaml").statuses == {"a": "done"}
    victim = tmp_path / "photos"
    victim.mkdir()
    (victim / "holiday.jpg").write_bytes(b"jpeg")
    (tmp_path / "out" / "report").mkdir()
    (tmp_path / "out" / "report" / "posters").symlink_to(victim)

    code, out, err = run_cli(capsys, "report", str(tmp_path / "out"))

    assert code == 3
    assert err.splitlines() == [_link_refused(tmp_path / "out", "report/posters", victim,
                                              "writing the report's images in report/")]
    assert _tree(victim) == {"holiday.jpg": b"jpeg"}

    # The folder itself may be a link: the user chose it.
    (tmp_path / "out" / "report" / "posters").unlink()
    (tmp_path / "linked").symlink_to(tmp_path / "out")
    code, out, err = run_cli(capsys, "report", str(tmp_path / "linked"))
    assert code == 0, err
    assert (tmp_path / "out" / "report" / "posters" / "a.jpg").is_file()


# -- case 3: only svdflow's folder, only its own files ------------------------------------------------

def _home_like(folder):
    folder.mkdir()
    (folder / "package.json").write_text('{"name": "mine"}')
    (folder / "photos.mp4").write_bytes(b"my holiday")
    (folder / "photos_frames").mkdir()
    (folder / "photos_frames" / "notes.txt").write_text("notes")


PACKAGE_AND_PHOTOS = "  - id: package\n    image: a.png\n  - id: photos\n    image: a.png\n"


def test_a_folder_of_other_files_is_refused_before_anything_is_written(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    write_manifest(tmp_path, """
        svdflow: 1
        model: {source: "builtin:tiny"}
        hardware: {profile: cpu}
        output: {dir: home, formats: [mp4, frames]}
        defaults: {num_frames: 4, num_inference_steps: 2, width: 112, height: 64}
        items:
          - {id: package, image: a.png}
          - {id: photos, image: a.png}
        """)
    home = tmp_path / "home"
    _home_like(home)
    before = _tree(home)

    code, _, err = run_cli(capsys, "run", str(tmp_path / "m.yaml"))

    assert code == 2
    assert err.splitlines() == [
        f"error: output folder {home}: it holds files svdflow did not write (package.json, photos.mp4, "
        "photos_frames) and is not an svdflow output folder; choose a new or empty output.dir, or let svdflow "
        f"write among them by marking it as one (mkdir {home}/.svdflow)"]
    assert _tree(home) == before

    # Opted in: the jobs whose names clash fail, the user's files stay as they were.
    (home / ".svdflow").mkdir()
    code, _, err = run_cli(capsys, "run", str(tmp_path / "m.yaml"))
    assert code == 1
    assert (f"failed: package: job 'package': package.json in {home} is not svdflow's (no record of this job "
            "lists it), so svdflow leaves it alone; move or rename it, or give the item another id") in err.splitlines()
    assert (f"failed: photos: job 'photos': photos.mp4, photos_frames in {home} are not svdflow's (no record of "
            "this job lists them), so svdflow leaves them alone; move or rename them, or give the item another "
            "id") in err.splitlines()
    after = _tree(home)
    assert {name: after[name] for name in before} == before
    assert {job_id: entry["status"] for job_id, entry in recorded(home).items()} == {
        "package": "failed", "photos": "failed"}


def test_a_folder_an_earlier_release_wrote_is_still_svdflows(tmp_path, capsys, monkeypatch):
    """0.1 left no .svdflow mark (and no masters): only its index.json, which says whose folder it is."""
    out = tmp_path / "renders" / "smoke"
    shutil.copytree(RELEASE, out)
    manifest = smoke_campaign(tmp_path)
    monkeypatch.setattr(PipelineSession, "load", never_built)  # every job is up to date: nothing renders

    code, _, err = run_cli(capsys, "run", str(manifest))

    assert code == 0, err
    assert (out / ".svdflow" / "README.txt").is_file()  # marked from now on


def test_names_from_the_file_and_system_folders_are_refused_where_they_are_written(tmp_path, capsys):
    header = ('svdflow: 1\nmodel: {source: "builtin:tiny"}\noutput:\n  dir: "DIR"\n'
              "items:\n  - {id: a, image: a.png}\n")
    write_image(tmp_path / "a.png")
    (tmp_path / "...yaml").write_text(header.replace("DIR", "{name}"))
    (tmp_path / "root.yaml").write_text(header.replace("DIR", "/"))
    (tmp_path / "etc.yaml").write_text(header.replace("DIR", "/etc"))

    code, _, err = run_cli(capsys, "validate", str(tmp_path / "...yaml"), str(tmp_path / "root.yaml"),
                           str(tmp_path / "etc.yaml"))

    assert code == 2
    lines = err.splitlines()
    assert (f"error: {tmp_path}/...yaml:4:8: output.dir: {{name}} would be '..', the manifest file's stem, which is "
            "not a usable name (letters, digits, '.', '_', '-', starting with a letter or digit); add `name: NAME` "
            "to the manifest or rename the file") in lines
    assert (f"error: {tmp_path}/root.yaml:4:8: output.dir: '/' is /, a system folder; svdflow writes only into a "
            "folder of its own: choose a new one, such as renders/{name}") in lines
    assert (f"error: {tmp_path}/etc.yaml:4:8: output.dir: '/etc' is /etc, a system folder; svdflow writes only "
            "into a folder of its own: choose a new one, such as renders/{name}") in lines


# -- case 5: a thread's unexpected failure ends the run, promptly, without the lock ------------------

class _BrokenDisplay(Reporter):
    """A progress display that fails on the second finished job (as any bug in a reporter might)."""

    def __init__(self):
        self.finished = 0

    def job_finished(self, job_id, status, info, worker=None):
        self.finished += 1
        if self.finished == 2:
            raise RuntimeError("display went away")


def test_a_writer_thread_failure_stops_the_run_and_frees_the_folder(tmp_path):
    write_image(tmp_path / "a.png")
    tiny_manifest(tmp_path, FOUR)
    out = tmp_path / "out"

    with pytest.raises(InternalError) as raised:
        run_manifest(tmp_path / "m.yaml", reporter=_BrokenDisplay())

    assert str(raised.value) == (
        "the writer thread failed: RuntimeError: display went away; 2 jobs finished and recorded in "
        f"{out}/index.jsonl; run again to render the rest")
    recorded_ids = set(recorded(out))
    assert recorded_ids == {"j0", "j1"}  # the render loop stopped: no more than the job in flight after
    assert (out / ".svdflow.lock").read_text() == ""
    OutputLock(Location.parse(str(out))).acquire().release()  # nobody holds it


@pytest.mark.slow
def test_a_closed_pipe_silences_the_run_which_goes_on_to_its_end(tmp_path):
    """`svdflow run m.yaml 2>&1 | head -2`: used to hang forever in the writer, holding the lock."""
    write_image(tmp_path / "a.png")
    tiny_manifest(tmp_path, FOUR)
    proc = subprocess.Popen([*SVDFLOW, "run", "m.yaml"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()  # the reader is gone: head -2 exits
    assert proc.wait(timeout=TIMEOUT) == 0
    assert first[0].decode().startswith(f"svdflow: t: 4 jobs -> {tmp_path}/out")
    assert [(job_id, entry["status"]) for job_id, entry in recorded(tmp_path / "out").items()] == [
        (f"j{n}", "done") for n in range(4)]
    assert (tmp_path / "out" / ".svdflow.lock").read_text() == ""


# -- case 8: a killed holder is taken over, and the user is told ----------------------------------------

@pytest.mark.slow
def test_a_killed_holder_is_taken_over_with_a_warning(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    manifest = tiny_manifest(tmp_path, ONE)
    out = tmp_path / "out"
    killed = subprocess.run([*SVDFLOW, "run", "m.yaml"], cwd=tmp_path, env=_env("denoise-step@1=kill"),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert killed.returncode == -9, killed.stderr
    holder = json.loads((out / ".svdflow.lock").read_text())

    # The runs after it need no process of their own (a process spends seconds on its imports).
    code, _, err = run_cli(capsys, "run", str(manifest))

    assert code == 0, err
    assert err.splitlines()[0] == (
        f"warning: {out} was last being rendered by a run that was killed (pid {holder['pid']} on "
        f"{socket.gethostname()}, started {holder['started']}); taking it over: the jobs that run had in flight "
        "were not recorded and are rendered again")
    # A run that ended normally let go of the folder: the next one says nothing.
    code, _, err = run_cli(capsys, "run", str(manifest))
    assert code == 0 and "warning" not in err, err



# -- case 7: a Ctrl-C is never lost ------------------------------------------------------------------

IGNORING_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, [sys.executable, '-m', 'svdflow', *sys.argv[1:]])")


@pytest.mark.slow
def test_sigint_stops_a_run_started_with_sigint_ignored(tmp_path):
    """A shell starts a script's background jobs (`make test > log &`) with SIGINT ignored, and so
    Python with no handler of its own: a `kill -INT` sent to the run rendered on to the end, exit 0
    (issue 23, case 7: both of its flaky tests were this). Stopped by the fault knob at b's first step,
    so that the signal comes mid-render however loaded the machine."""
    write_image(tmp_path / "a.png")
    tiny_manifest(tmp_path, "  - id: a\n    image: a.png\n  - id: b\n    image: a.png\n    seed: 7\n")
    proc = subprocess.Popen([sys.executable, "-c", IGNORING_SIGINT, "run", "m.yaml"], cwd=tmp_path,
                            env=_env("denoise-step@3=stop"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert wait_stopped(proc)
        proc.send_signal(signal.SIGINT)
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=TIMEOUT)

    assert proc.returncode == 130, err
    assert (f"error: interrupted; 1 job finished and recorded in {tmp_path}/out/index.jsonl; run again to render "
            "the rest") in err.splitlines()
    recorded_ids = set(recorded(tmp_path / "out"))
    assert recorded_ids == {"a"}


def test_a_bug_is_one_line_and_its_traceback_a_file_for_the_report(capsys, monkeypatch):
    import svdflow.cli

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(svdflow.cli.cli, "main", broken)
    code, _, err = run_cli(capsys, "validate", "m.yaml")
    assert code == 1
    prefix = ("error: svdflow failed unexpectedly: TypeError: a bug (a bug in svdflow; please report it with the "
              "command that ran and ")
    assert err.startswith(prefix) and err.endswith(".txt)\n") and err.count("\n") == 1, err
    saved = Path(err[len(prefix):-2])
    assert saved.read_text().splitlines()[-1] == "TypeError: a bug"
    saved.unlink()


def test_a_remote_folder_an_earlier_release_wrote_is_recognised_from_its_index_first_bytes(monkeypatch):
    """A 100,000-job index.json of 0.1 is 400 MB: one ranged read of its head says whose it is."""
    import fsspec

    from svdflow.outputs.ownership import is_svdflow_folder
    from svdflow.outputs.store import OutputStore

    fs = fsspec.filesystem("memory")
    fs.pipe("/legacy-big/index.json", b'{"svdflow_index": 1, "entries": [' + b" " * 5_000_000 + b"]}")
    fs.pipe("/foreign/index.json", b'{"name": "someone else\'s index"}')
    asked = []
    cat_file = type(fs).cat_file

    def spied(self, path, start=None, end=None, **kwargs):
        asked.append((path, start, end))
        return cat_file(self, path, start=start, end=end, **kwargs)

    monkeypatch.setattr(type(fs), "cat_file", spied)
    try:
        assert is_svdflow_folder(OutputStore("memory://legacy-big"))
        assert not is_svdflow_folder(OutputStore("memory://foreign"))
    finally:
        fs.rm(["/legacy-big", "/foreign"], recursive=True)
    assert asked == [("/legacy-big/index.json", 0, 4096), ("/foreign/index.json", 0, 4096)]


def test_a_local_listing_leaves_out_links_and_stats_a_name_when_asked(tmp_path):
    """The output folder's listing reads names at once (no lstat per name) and a file's size when
    asked: links are left out, and a file removed or replaced by a link since is missing then."""
    from svdflow.outputs.store import FileInfo, LocalListing

    (tmp_path / "a.mp4").write_bytes(b"12345")
    (tmp_path / "b.mp4").write_bytes(b"1")
    (tmp_path / "c.json").write_bytes(b"{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.mp4").symlink_to(tmp_path / "a.mp4")
    listing = LocalListing(str(tmp_path))
    assert sorted(listing) == ["a.mp4", "b.mp4", "c.json", "sub"] and "link.mp4" not in listing
    assert listing["a.mp4"].size == 5 and listing.get("sub").size is None and listing.get("link.mp4") is None
    (tmp_path / "b.mp4").unlink()
    (tmp_path / "c.json").unlink()
    (tmp_path / "c.json").symlink_to(tmp_path / "a.mp4")
    assert listing.get("b.mp4") is None and listing.get("c.json") is None
    assert sorted((name, info.size or 0) for name, info in listing.items()) == [("a.mp4", 5), ("sub", 0)]
    assert isinstance(listing["a.mp4"], FileInfo)
