"""Crash points for svdflow's own crash-safety tests.

`SVDFLOW_CRASH_AT=<point>[@N]` makes the process kill itself with SIGKILL the N-th time (default 1)
it reaches `<point>`: the only way to test "kill -9 at any moment" at the moments that matter
(mid-denoise, mid-encode, between writing a temporary and renaming it) deterministically. The
variable is read once per process; unset, a crash point costs one comparison.
"""

from __future__ import annotations

import functools
import os
import signal
import threading

from svdflow.errors import DeviceError
from svdflow.settings import load_settings

_counts: dict[str, int] = {}
_lock = threading.Lock()


@functools.cache
def _wanted() -> tuple[str, int] | None:
    try:
        wanted = load_settings().crash_at
    except DeviceError:  # another knob is bad: the run reports that where it reads it
        return None
    if not wanted:
        return None
    point, _, nth = wanted.partition("@")
    return point, int(nth or 1)


def crash_point(name: str) -> None:
    wanted = _wanted()
    if wanted is None or wanted[0] != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        reached = _counts[name]
    if reached == wanted[1]:
        os.kill(os.getpid(), signal.SIGKILL)
