"""SIGTERM (Make, CI, schedulers) stops a run the way Ctrl-C does: as a KeyboardInterrupt in the
main thread, which every engine turns into "record what finished, exit 130".

SIGINT too, even in a process that started with it ignored: a shell runs a script's background jobs
(`svdflow run m.yaml &`, `make test > log &`) with SIGINT ignored, Python then installs no handler
of its own, and a `kill -INT` sent to the run (by a scheduler, a supervisor, a test) would be lost:
the run would render on to the end and exit 0."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM and SIGINT raise KeyboardInterrupt; the previous handlers are put back
    after. Only the main thread can set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, handler)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int is signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous_int)
