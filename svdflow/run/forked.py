"""A long loop of independent steps (a plan's decision for each of 100,000 jobs) shared with forked
copies of this process: each child works through its share of the items and hands back a compact
form of each result, which this process turns back into the full one while it works through its own
share.

Forked, not spawned: a child starts with everything this process has loaded (the campaign, the
record, the folder's listing) and reads it in place; only the compact results come back. So only on
Linux, and only while no other thread runs (a child of a threaded process may inherit a lock that some
thread held, and wait on it for ever). Whatever a child does not hand back (it failed or was killed,
or a result has no compact form) is computed here: the outcome is the plain loop's in every case.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_SHARE = 10_000  # items per process below which a fork costs more than it saves
MAX_PROCESSES = 8


def available_cpus() -> int:
    return len(os.sched_getaffinity(0))


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
    processes = processes_for(len(items))
    if processes == 1:
        return [compute(item) for item in items]
    bounds = [len(items) * k // processes for k in range(processes + 1)]
    children: dict[int, tuple[int, IO[bytes]]] = {}  # share -> its child's pid, its results' file
    try:
        for k in range(1, processes):
            results_file = tempfile.TemporaryFile()
            try:
                pid = os.fork()
            except OSError:  # no process to be had (memory, a process limit): this one does the rest
                results_file.close()
                break
            if pid == 0:
                _child(items[bounds[k]:bounds[k + 1]], compute, pack, results_file)
            children[k] = pid, results_file
        results = [compute(item) for item in items[:bounds[1]]]
        for k in range(1, processes):
            share = items[bounds[k]:bounds[k + 1]]
            packed = None
            if k in children:
                packed = _collect(*children[k])
                del children[k]
            if packed is None or len(packed) != len(share):
                results += [compute(item) for item in share]
            else:
                results += [compute(item) if one is None else unpack(item, one) for item, one in zip(share, packed)]
        return results
    finally:
        for pid, results_file in children.values():  # this process is leaving early (an exception, Ctrl-C)
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            results_file.close()


def _child(share: Sequence[Any], compute: Callable, pack: Callable, results_file: IO[bytes]) -> None:
    """A forked child's whole life: its share's packed results into `results_file`, then exit, with
    nothing of the parent's run on the way out (no atexit, no buffered output flushed twice)."""
    code = 1
    try:
        results_file.write(marshal.dumps([pack(compute(item)) for item in share]))
        results_file.flush()
        code = 0
    except BaseException:  # noqa: BLE001 - the parent computes this share itself
        pass
    finally:
        os._exit(code)


def _collect(pid: int, results_file: IO[bytes]) -> list | None:
    """A child's packed results once it has exited; None if it failed."""
    try:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            return None
        results_file.seek(0)
        packed = marshal.loads(results_file.read())
    except (EOFError, ValueError, TypeError):
        return None
    finally:
        results_file.close()
    return packed if isinstance(packed, list) else None
