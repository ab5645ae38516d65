"""A long loop of independent steps (a plan's decision, or its JSON, for each of 100,000 jobs) shared
with forked copies of this process: each child works through its share of the items into a file of
its own while this process works through the first share, and this process then takes the children's
files in order (`map_forked`: a compact form of each result, turned back into the full one;
`write_forked`: the bytes to write, copied as they are).

Forked, not spawned: a child starts with everything this process has loaded (the campaign, the
record, the folder's listing) and reads it in place; only the compact results come back. So only on
Linux, and only while no other thread runs (a child of a threaded process may inherit a lock that some
thread held, and wait on it for ever). Whatever a child does not hand back (it failed or was killed,
or a result has no compact form) is computed here: the outcome is the plain loop's in every case.
"""

from __future__ import annotations

import contextlib
import marshal
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_SHARE = 10_000  # items per process below which a fork costs more than it saves
MAX_PROCESSES = 8


CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup: Path = CGROUP) -> int:
    """The CPUs this process may run on, capped by its container's CPU quota (a pod's or `docker
    --cpus` limit, which the affinity mask does not show), rounded up."""
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in CPUs: cgroup v2's `cpu.max` ("200000 100000"; "max" where none), or
    v1's `cpu/cpu.cfs_quota_us` over its period (-1 where none). None where no quota is set or none
    can be read (as a container sees its own cgroup at the root)."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text()
        except OSError:
            return None
    try:
        microseconds, per = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return microseconds / per if microseconds > 0 and per > 0 else None


def only_thread() -> bool:
    """No other thread runs in this process (Python's own: a library's C threads are not seen)."""
    return threading.active_count() == 1


def processes_for(count: int) -> int:
    """How many processes (this one included) share a loop of `count` items: 1 where forking is not
    safe (not Linux, another thread running) or does not pay."""
    if sys.platform != "linux" or not only_thread():
        return 1
    return max(1, min(available_cpus(), MAX_PROCESSES, count // MIN_SHARE))


def map_forked(items: Sequence[T], compute: Callable[[T], R], pack: Callable[[R], tuple | None],
               unpack: Callable[[T, tuple], R]) -> list[R]:
    """[compute(item) for item in items], the items shared among forked children and this process.
    `pack(result)`: a tuple of what `marshal` writes (str, int, float, bool, None, tuples of them), or
    None where the result has no compact form (it is computed again here); `unpack(item, packed)`: the
    result back. An exception `compute` raises for an item is raised here, as the loop would."""
    def child(share: Sequence[T], results_file: IO[bytes]) -> None:
        results_file.write(marshal.dumps([pack(compute(item)) for item in share]))

    with _shared(items, child) as shares:
        results = []
        for share in shares:
            packed = _unmarshalled(share.wait(), len(share.items))
            if packed is None:
                results += [compute(item) for item in share.items]
            else:
                results += [compute(item) if one is None else unpack(item, one) for item, one in zip(share.items, packed)]
        return results


def write_forked(items: Sequence[T], render: Callable[[T], bytes], out: BinaryIO, separator: bytes,
                 chunk: int = 1000) -> None:
    """out.write(separator.join(render(item) for item in items)), the items rendered `chunk` at a time
    (never all held at once) and shared among forked children and this process."""
    with _shared(items, lambda share, file: _write(share, render, file, separator, chunk)) as shares:
        for number, share in enumerate(shares):
            if number:
                out.write(separator)
            written = share.wait()
            if written is None:
                _write(share.items, render, out, separator, chunk)
            else:
                shutil.copyfileobj(written, out)


def _write(items: Sequence[T], render: Callable[[T], bytes], out: IO[bytes], separator: bytes, chunk: int) -> None:
    for start in range(0, len(items), chunk):
        out.write(separator * (start > 0) + separator.join([render(item) for item in items[start:start + chunk]]))


@dataclass
class _Share:
    """A run of the items: this process's (no child), or a child's and the file it writes them into."""

    items: Sequence[Any]
    pid: int | None = None
    file: IO[bytes] | None = None

    def wait(self) -> IO[bytes] | None:
        """Once its child has exited: the file it wrote, read from its start; None if it failed (or this
        process is to do the share)."""
        if self.pid is None:
            return None
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if os.waitstatus_to_exitcode(status) != 0:
            return None
        self.file.seek(0)
        return self.file


@contextmanager
def _shared(items: Sequence[T], child: Callable[[Sequence[T], IO[bytes]], None]) -> Iterator[list[_Share]]:
    """The items in shares, one per process (`processes_for`): each share after the first is worked
    through by `child(share, file)` in a forked child. Leaving early (an exception, Ctrl-C) kills the
    children not waited for yet."""
    processes = processes_for(len(items))
    bounds = [len(items) * k // processes for k in range(processes + 1)]
    shares = [_Share(items[bounds[k]:bounds[k + 1]]) for k in range(processes)]
    try:
        for share in shares[1:]:
            try:
                share.file = tempfile.TemporaryFile()
                share.pid = os.fork()
            except OSError:  # no file or process to be had (disk, memory, a limit): this one does the rest
                break
            if share.pid == 0:
                _child(share.items, child, share.file)
        yield shares
    finally:
        for share in shares:
            if share.pid is not None:
                with contextlib.suppress(ProcessLookupError, ChildProcessError):
                    os.kill(share.pid, signal.SIGKILL)
                    os.waitpid(share.pid, 0)
            if share.file is not None:
                share.file.close()


def _child(share: Sequence[Any], child: Callable[[Sequence[Any], IO[bytes]], None], file: IO[bytes]) -> None:
    """A forked child's whole life: its share into `file`, then exit, with nothing of the parent's run
    on the way out (no atexit, no buffered output flushed twice)."""
    code = 1
    try:
        child(share, file)
        file.flush()
        code = 0
    except BaseException:  # noqa: BLE001 - the parent does this share itself
        pass
    finally:
        os._exit(code)


def _unmarshalled(file: IO[bytes] | None, count: int) -> list | None:
    if file is None:
        return None
    try:
        packed = marshal.loads(file.read())
    except (EOFError, ValueError, TypeError):
        return None
    return packed if isinstance(packed, list) and len(packed) == count else None
