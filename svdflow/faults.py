"""Crash points for svdflow's own crash-safety tests.

`SVDFLOW_CRASH_AT=<point>[@N]` makes the process kill itself with SIGKILL the N-th time (default 1)
it reaches `<point>`: the only way to test "kill -9 at any moment" at the moments that matter
(mid-denoise, mid-encode, between writing a temporary and renaming it) deterministically. Unset,
a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_counts: dict[str, int] = {}
_lock = threading.Lock()


def crash_point(name: str) -> None:
    wanted = os.environ.get("SVDFLOW_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        reached = _counts[name]
    if reached == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
