"""stdout and stderr that outlive their reader: a closed pipe silences them, it does not stop the run.

`svdflow run m.yaml | head -2`, a log shipper that dies, an ssh session whose reader is gone: the
progress lines are a courtesy, the campaign's product is the output folder. So once a stream's reader
has gone, what is written to it is dropped (its descriptor now points at /dev/null, for every thread,
library and child process that shares it) and the run goes on to its normal end and exit code.
Python ignores SIGPIPE, so without this the first progress line after the reader left raises
BrokenPipeError in whichever thread writes it.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _PipeSafeRaw(io.RawIOBase):
    """Raw writes to a descriptor; the first EPIPE turns the descriptor into /dev/null."""

    def __init__(self, fd: int):
        self._fd = fd
        self.reader_gone = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data) -> int:
        if self.reader_gone:
            return len(data)
        try:
            return os.write(self._fd, data)
        except BrokenPipeError:
            self.reader_gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._fd)
            finally:
                os.close(devnull)
            return len(data)

    def close(self) -> None:  # the descriptor is the process's (1 or 2): never closed here
        self.flush()
        super().close()


def _pipe_safe(stream: io.TextIOWrapper) -> io.TextIOWrapper:
    raw = _PipeSafeRaw(stream.fileno())
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding, errors=stream.errors,
                            line_buffering=stream.line_buffering, write_through=True)


@contextmanager
def pipe_safe_streams() -> Iterator[None]:
    """While inside, sys.stdout and sys.stderr survive a closed pipe (see the module's docstring).
    Only the interpreter's own streams are replaced: a caller's (pytest's capture, a notebook's) are left."""
    replaced = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or stream is not getattr(sys, f"__{name}__"):
            continue
        try:
            stream.flush()
            replaced[name] = (stream, _pipe_safe(stream))
        except (OSError, ValueError, AttributeError):  # no descriptor, or already closed
            continue
        setattr(sys, name, replaced[name][1])
    try:
        yield
    finally:
        for name, (original, safe) in replaced.items():
            try:
                safe.flush()
            except (OSError, ValueError):
                pass
            setattr(sys, name, original)
