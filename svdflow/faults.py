"""Fault points for svdflow's own crash-safety and fault-injection tests.

`SVDFLOW_CRASH_AT=<point>[@N][=<what>]` acts the N-th time (default 1) the process reaches `<point>`:

- `kill` (the default): SIGKILL itself, the only way to test "kill -9 at any moment" at the moments
  that matter (mid-denoise, mid-encode, between writing a temporary and renaming it) deterministically;
- `stop`: SIGSTOP itself, so that a test can change the world at that moment (fill the disk,
  remount it read-only, remove the folder) and let it go on with SIGCONT;
- an errno name (`ENOSPC`, `EROFS`, `EACCES`...): raise that OSError there, as the call would on a
  full or read-only disk, where a test cannot mount one.

Points: `denoise-step`, `lock` (before taking the output folder's lock), `before-write:<name>` (before
the first byte of a file or folder of that name is written), `before-rename:<name>`. The variable is
read once per process; unset, a fault point costs one comparison.

`acting_at(point, act)` is `stop`'s counterpart for a test that runs svdflow in its own process (the
API or the CLI's `main`): `act()` runs, in the thread that reached the point, the first time it is
reached, and may change the world there or raise. It spares such a test a process (and its seconds of
importing torch and diffusers) where the process is not what the test looks at.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from svdflow.errors import DeviceError
from svdflow.settings import load_settings

_counts: dict[str, int] = {}
_lock = threading.Lock()
_acts: dict[str, Callable[[], None]] = {}


@dataclass(frozen=True)
class _Fault:
    point: str
    nth: int
    what: str  # kill | stop | an errno name


@functools.cache
def _wanted() -> _Fault | None:
    try:
        wanted = load_settings().crash_at
    except DeviceError:  # another knob is bad: the run reports that where it reads it
        return None
    if not wanted:
        return None
    wanted, _, what = wanted.partition("=")
    point, _, nth = wanted.partition("@")
    return _Fault(point, int(nth or 1), what or "kill")


@contextmanager
def acting_at(point: str, act: Callable[[], None]) -> Iterator[None]:
    """Within the `with`, run `act()` the first time this process reaches the fault point `point`."""
    _acts[point] = act
    try:
        yield
    finally:
        _acts.pop(point, None)


def crash_point(name: str) -> None:
    if _acts and (act := _acts.pop(name, None)) is not None:
        act()
    wanted = _wanted()
    if wanted is None or wanted.point != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        reached = _counts[name]
    if reached != wanted.nth:
        return
    if wanted.what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted.what == "stop":
        # To this thread: a stop sent to the process may be taken by another thread first, and this one
        # would run on (into the write the test wants to see fail) until the group stop reaches it.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    else:
        code = getattr(errno, wanted.what)
        raise OSError(code, os.strerror(code), name.partition(":")[2] or None)
