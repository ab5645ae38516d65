"""One run per output folder: an advisory lock the kernel releases when its holder dies.

flock() rather than a pid file: a process killed with -9 cannot leave a stale lock behind, so
there is nothing to "take over" by guessing whether a pid is alive. The file only tells a refused
run who holds the folder. The lock is held on a read-only descriptor (flock does not care), so a
run keeps no file open for writing between writes: a file system remounted read-only under it
fails the run's next write, not the remount.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path

from svdflow.errors import LockHeldError
from svdflow.faults import crash_point
from svdflow.locations import Location
from svdflow.outputs.atomic import remove_stale_temps
from svdflow.outputs.failures import folder_gone, storing
from svdflow.outputs.index import RECORD_DIR
from svdflow.outputs.masters import MASTERS_DIR
from svdflow.outputs.store import OutputStore

LOCK_FILE = ".svdflow.lock"


class OutputLock:
    def __init__(self, output_dir: Location):
        if output_dir.is_local:
            self.path = Path(output_dir.path) / LOCK_FILE
        else:
            # Remote folders cannot be flock()ed: serialise runs of this machine on a local file.
            digest = hashlib.sha256(output_dir.text.encode()).hexdigest()[:16]
            self.path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "svdflow" / f"{digest}.lock"
        self.output_dir = output_dir.text
        self.local = output_dir.is_local
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        # A remote folder's lock is a local file: a failure there names the lock's own folder.
        folder = self.output_dir if self.local else str(self.path.parent)
        with storing(folder, "locking it"):
            crash_point("lock")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockHeldError(f"{self.output_dir} is being rendered by another svdflow run ({holder}); "
                                    "wait for it to finish, or stop it and run again") from None
            try:
                # Written at once: a folder that cannot take these few bytes cannot take a video either.
                _write_holder(self.path, json.dumps(holder_info()).encode() + b"\n")
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        return self

    def check(self) -> None:
        """OutputStoreError when the locked folder is no longer at its path: removed, or another folder
        made or mounted in its place (whose writes would not be this run's). A remote folder's lock
        is a local file: its store says when it fails."""
        if self._fd is None or not self.local:
            return
        held = os.fstat(self._fd)
        try:
            there = os.stat(self.path)
        except OSError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (held.st_dev, held.st_ino):
            raise folder_gone(self.output_dir, f"{LOCK_FILE}, which this run locked, is no longer in it")

    def release(self) -> None:
        if self._fd is not None:
            with suppress(OSError):  # only tells a refused run who held it; a read-only folder keeps it
                _write_holder(self.path, b"")
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def claim_output_dir(store: OutputStore) -> OutputLock:
    """Create and lock the output folder, then clear a killed run's temporaries: under the lock no
    other writer is live (and under a launcher no rank writes before rank 0 broadcasts the plan).
    OutputStoreError when the folder cannot be created, locked or written."""
    store.makedirs()
    lock = OutputLock(store.location).acquire()
    try:
        if store.is_local:
            with storing(store.url, "removing a killed run's temporary files"):
                for folder in ("", MASTERS_DIR, RECORD_DIR, os.path.dirname(RECORD_DIR)):
                    remove_stale_temps(os.path.join(store.root, folder))
    except BaseException:
        lock.release()
        raise
    return lock


def _write_holder(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
        if data:
            os.pwrite(fd, data, 0)
            os.fsync(fd)
    finally:
        os.close(fd)


def holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv[1:]}


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
