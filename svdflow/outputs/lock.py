"""One run per output folder: an advisory lock the kernel releases when its holder dies.

flock() rather than a pid file: a process killed with -9 cannot leave a stale lock behind, so
there is nothing to "take over" by guessing whether a pid is alive. The file only tells a refused
run who holds the folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from svdflow.errors import LockHeldError
from svdflow.locations import Location
from svdflow.outputs.atomic import remove_stale_temps
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
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeldError(f"{self.output_dir} is being rendered by another svdflow run ({holder}); "
                                "wait for it to finish, or stop it and run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info()).encode() + b"\n", 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def claim_output_dir(store: OutputStore) -> OutputLock:
    """Create and lock the output folder, then clear a killed run's temporaries: under the lock no
    other writer is live (and under a launcher no rank writes before rank 0 broadcasts the plan)."""
    store.makedirs()
    lock = OutputLock(store.location).acquire()
    if store.is_local:
        remove_stale_temps(store.root)
        remove_stale_temps(os.path.join(store.root, MASTERS_DIR))
    return lock


def holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv[1:]}


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
