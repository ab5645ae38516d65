"""A small real file system for the output folder, and ways to make it fail under a running svdflow.

`SmallDisk` mounts a tmpfs (root, or CAP_SYS_ADMIN, as on the dev machine and in CI) that a test can
fill up, remount read-only, or grow and remount read-write again (the fix). Where mounting is not
permitted it is a plain folder and each fault is injected instead, as the OSError the same call would
raise, at the same fault point (`SVDFLOW_CRASH_AT=<point>=ENOSPC`, svdflow/faults.py).

A fault "at a point" of a real disk works with `SVDFLOW_CRASH_AT=<point>=stop`: svdflow stops itself
there (SIGSTOP), the test fills or remounts the disk, and lets it go on (SIGCONT).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from conftest import SVDFLOW, run_cli

TIMEOUT = 300  # per process; a tiny render takes seconds, a loaded machine can be slow
SIZE = "16m"  # room for every test's campaign; filling it is a memory write of that much
BIGGER = "64m"
INJECTED = {"full": "ENOSPC", "read-only": "EROFS"}  # where no disk can be mounted


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (tried once, on a scratch folder)."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return False
    probe = Path(f"/tmp/svdflow-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                          capture_output=True).returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True, check=True)
        return True
    finally:
        probe.rmdir()


def env(crash_at: str | None = None, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "SVDFLOW_CRASH_AT"}
    out.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    if crash_at:
        out["SVDFLOW_CRASH_AT"] = crash_at
    return out


class SmallDisk:
    """`path`: the mount point (or plain folder); the test puts the output folder inside it."""

    def __init__(self, path: Path, real: bool):
        self.path, self.real = path, real
        path.mkdir(parents=True, exist_ok=True)
        if real:
            self._mount("size=" + SIZE)

    def _mount(self, options: str, remount: bool = False) -> None:
        args = ["mount", "-o", f"remount,{options}", str(self.path)] if remount else \
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.path)]
        subprocess.run(args, capture_output=True, check=True)

    # The faults, on a real disk ---------------------------------------------------------------

    def fill(self) -> None:
        """Fill every free byte (a file beside the output folder takes them)."""
        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            chunk = b"\0" * 4096
            while True:
                os.write(fd, chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def read_only(self) -> None:
        self._mount("ro", remount=True)

    # The fixes --------------------------------------------------------------------------------

    def grow(self) -> None:
        if self.real:
            self._mount("size=" + BIGGER, remount=True)

    def writable(self) -> None:
        if self.real:
            self._mount("rw", remount=True)

    def close(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)

    # Running svdflow under a fault -------------------------------------------------------------

    def fault_before(self, fault: str) -> str | None:
        """Make the disk fail before a run: "full" or "read-only". Returns the SVDFLOW_CRASH_AT that
        injects it instead where the disk is not real (at the output folder's lock, where a run first
        writes)."""
        if not self.real:
            return f"lock={INJECTED[fault]}"
        if fault == "full":
            self.fill()
        else:
            self.read_only()
        return None

    def run_failing_at(self, cwd: Path, args: list[str], point: str, fault: str,
                       **extra_env: str) -> subprocess.CompletedProcess:
        """`svdflow <args>` (run in `cwd`) whose output folder, `out` on this disk, fails the moment it
        reaches the fault point `point`: "full", "read-only", or "gone" (the folder removed)."""
        if fault == "gone":  # needs no mount: the folder is removed while svdflow is stopped
            return run_stopping(cwd, args, point, lambda: shutil.rmtree(self.path / "out"), **extra_env)
        if not self.real:
            return run(cwd, args, crash_at=f"{point}={INJECTED[fault]}", **extra_env)
        return run_stopping(cwd, args, point, self.fill if fault == "full" else self.read_only, **extra_env)

    def failing_at(self, point: str, fault: str) -> Callable[[], None]:
        """What `run_in_process` does at `point` so that the output folder, `out` on this disk, fails
        there: "full", "read-only", or "gone"; where the disk is not real, the OSError the write would
        raise (as SVDFLOW_CRASH_AT=<point>=ENOSPC raises it)."""
        if fault == "gone":
            return lambda: shutil.rmtree(self.path / "out")
        if self.real:
            return self.fill if fault == "full" else self.read_only
        code = getattr(errno, INJECTED[fault])

        def injected() -> None:
            raise OSError(code, os.strerror(code), point.partition(":")[2] or None)

        return injected


def run(cwd: Path, args: list[str], crash_at: str | None = None, **extra_env: str) -> subprocess.CompletedProcess:
    """`svdflow <args>` to the end."""
    return subprocess.run([*SVDFLOW, *args], cwd=cwd, env=env(crash_at, **extra_env), capture_output=True,
                          text=True, timeout=TIMEOUT)


def run_stopping(cwd: Path, args: list[str], point: str, act, **extra_env: str) -> subprocess.CompletedProcess:
    """`svdflow <args>`, stopped at `point` while `act()` changes the world, then let go on to its end."""
    out_path, err_path = cwd / f"stdout-{time.monotonic_ns()}", cwd / f"stderr-{time.monotonic_ns()}"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([*SVDFLOW, *args], cwd=cwd, env=env(f"{point}=stop", **extra_env),
                                stdout=out, stderr=err, text=True)
        try:
            if not wait_stopped(proc):
                proc.wait(timeout=TIMEOUT)
                raise AssertionError(f"svdflow ended (exit {proc.returncode}) before reaching {point}:\n"
                                     f"{err_path.read_text()}")
            act()
            os.kill(proc.pid, signal.SIGCONT)
            proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out_path.read_text(), err_path.read_text())
    out_path.unlink()
    err_path.unlink()
    return result


def run_in_process(capsys, cwd: Path, args: list[str], point: str | None = None,
                   act: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """`svdflow <args>` in `cwd`, to its end, in this process (the CLI's main), `act()` run when it
    reaches `point` (svdflow.faults.acting_at): `run_stopping` without a process's seconds of imports,
    for a test that looks at the folder and the run's words, not at the process."""
    from svdflow.faults import acting_at

    with contextlib.chdir(cwd), acting_at(point, act) if point else contextlib.nullcontext():
        code, out, err = run_cli(capsys, *args)
    return subprocess.CompletedProcess(["svdflow", *args], code, out, err)


def wait_stopped(proc: subprocess.Popen) -> bool:
    """Wait until the process has stopped itself (True) or ended (False)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            state = ""
        if state == "T":
            return True
        time.sleep(0.02)
    raise AssertionError(f"svdflow neither stopped nor ended in {TIMEOUT} s")
