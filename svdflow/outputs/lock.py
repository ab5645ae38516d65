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

LOCK_FILE = ".svdflow.lock"


class OutputLock:
    def __init__(self, output_dir: str, is_local: bool):
        if is_local:
            self.path = Path(output_dir) / LOCK_FILE
        else:
            # Remote folders cannot be flock()ed: serialise runs of this machine on a local file.
            digest = hashlib.sha256(output_dir.encode()).hexdigest()[:16]
            self.path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "svdflow" / f"{digest}.lock"
        self.output_dir = output_dir
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


def holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv[1:]}


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
