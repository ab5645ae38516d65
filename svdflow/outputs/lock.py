"""One run per output folder: an advisory lock the kernel releases when its holder dies.

flock() rather than a pid file: a process killed with -9 cannot leave a stale lock behind, so
there is nothing to "take over" by guessing whether a pid is alive. The file only tells a refused
run who holds the folder. The lock is held on a read-only descriptor (flock does not care), so a
run keeps no file open for writing between writes: a file system remounted read-only under it
fails the run's next write, not the remount.
"""

from __future__ import annotations

import errno
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
from svdflow.outputs.atomic import LinkInFolder, real_folder, remove_stale_temps
from svdflow.outputs.failures import folder_gone, storing
from svdflow.outputs.index import RECORD_DIR
from svdflow.outputs.masters import MASTERS_DIR
from svdflow.outputs.ownership import check_folder_is_ours, mark_folder
from svdflow.outputs.store import OutputStore
from svdflow.settings import user_cache_dir

LOCK_FILE = ".svdflow.lock"


class OutputLock:
    def __init__(self, output_dir: Location):
        if output_dir.is_local:
            self.path = Path(output_dir.path) / LOCK_FILE
        else:
            # Remote folders cannot be flock()ed: serialise runs of this machine on a local file.
            digest = hashlib.sha256(output_dir.text.encode()).hexdigest()[:16]
            self.path = Path(user_cache_dir()) / f"{digest}.lock"
        self.output_dir = output_dir.text
        self.local = output_dir.is_local
        self._fd: int | None = None
        self.taken_over: str | None = None  # a killed holder's "pid N on HOST, started T" (see acquire)

    def acquire(self) -> OutputLock:
        # A remote folder's lock is a local file: a failure there names the lock's own folder.
        folder = self.output_dir if self.local else str(self.path.parent)
        with storing(folder, "locking it"):
            crash_point("lock")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = _open_nofollow(self.path, os.O_RDONLY | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockHeldError(f"{self.output_dir} is being rendered by another svdflow run ({holder}); "
                                    "wait for it to finish, or stop it and run again") from None
            # A holder that ended normally emptied the file; one that left its name was killed (kill -9,
            # OOM, power cut) and the kernel dropped its flock: this run takes over, and says so.
            if os.pread(fd, 1, 0):
                self.taken_over = _read_holder(fd)
            try:
                # Written at once: a folder that cannot take these few bytes cannot take a video either.
                _write_holder(self.path, json.dumps(holder_info()).encode() + b"\n")
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        return self

    def takeover_warning(self) -> str | None:
        """What to tell the user when this run took the folder over from a killed run, else None."""
        if self.taken_over is None:
            return None
        return (f"warning: {self.output_dir} was last being rendered by a run that was killed ({self.taken_over}); "
                "taking it over: the jobs that run had in flight were not recorded and are rendered again")

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
    """Check that the output folder is new, empty or svdflow's (FolderNotOurs: exit 2, before anything
    is written), create, lock and mark it, then clear a killed run's temporaries: under the lock no
    other writer is live (and under a launcher no rank writes before rank 0 broadcasts the plan).
    OutputStoreError when the folder cannot be created, locked or written, or a symbolic link is where
    svdflow's own files go."""
    check_folder_is_ours(store)
    store.makedirs()
    lock = OutputLock(store.location).acquire()
    try:
        mark_folder(store)
        if store.is_local:
            with storing(store.url, "removing a killed run's temporary files"):
                for folder in ("", MASTERS_DIR, RECORD_DIR, os.path.dirname(RECORD_DIR)):
                    remove_stale_temps(real_folder(store.root, folder, create=False) if folder else store.root)
    except BaseException:
        lock.release()
        raise
    return lock


def _open_nofollow(path: Path, flags: int) -> int:
    """Open the lock file itself, never what a link in its place points to (it would be truncated)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LinkInFolder(str(path), LOCK_FILE) from None
        raise


def _write_holder(path: Path, data: bytes) -> None:
    fd = _open_nofollow(path, os.O_WRONLY)
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
