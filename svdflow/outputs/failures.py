"""The one place that tells the output store failing from a job's own write problem.

A full disk (ENOSPC, EDQUOT), a read-only file system (EROFS), permissions (EACCES, EPERM), a folder
that vanished or a mount that went away, a disk reporting I/O errors, a remote fsspec store that
stops answering: every job after the first such error would fail the same way, so it becomes an
`OutputStoreError` (exit 3) naming the folder, the cause and the fix, and the run stops. What is
left (an odd width for H.264, a folder in the way of one file, a name too long) fails that job only.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from svdflow.errors import OutputStoreError
from svdflow.locations import Location

__all__ = ["errno_named_in", "folder_gone", "scratch_failure", "store_failure", "storing"]

_WRITABLE = "make it readable and writable for this user (chmod, chown) or choose another output.dir"
_REMOUNT = "mount it again or choose another output.dir"
_ANSWER = "check the network and the mount, or choose another output.dir"
# errno -> (what is wrong with the folder, what to do)
_CAUSES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("its disk is full", "free some space on it or choose another output.dir"),
    errno.EDQUOT: ("your disk quota on it is used up",
                   "free some space, ask for a larger quota, or choose another output.dir"),
    errno.EFBIG: ("its file system refuses a file this large", "choose another output.dir"),
    errno.EROFS: ("it is read-only", "remount it read-write or choose another output.dir"),
    errno.EACCES: ("this user may not use it", _WRITABLE),
    errno.EPERM: ("this user may not use it", _WRITABLE),
    errno.EIO: ("its disk failed to read or write", "check the disk or its mount (dmesg) or choose another "
                                                    "output.dir"),
    errno.ESTALE: ("its network mount went stale", _REMOUNT),
    errno.ENOTCONN: ("its mount is no longer connected", _REMOUNT),
    errno.ENODEV: ("its device is gone", _REMOUNT),
    errno.ENXIO: ("its device is gone", _REMOUNT),
    errno.ETIMEDOUT: ("it stopped answering", _ANSWER),
    errno.EHOSTDOWN: ("it stopped answering", _ANSWER),
    errno.EHOSTUNREACH: ("it stopped answering", _ANSWER),
    errno.ENETUNREACH: ("it stopped answering", _ANSWER),
    errno.ECONNRESET: ("it stopped answering", _ANSWER),
    errno.ECONNREFUSED: ("it stopped answering", _ANSWER),
}
# A link inside the output folder: whatever svdflow wrote there would land where the link points.
_LINK = ("a symbolic link is in the way", "remove the link (svdflow writes nothing through a link inside its "
                                          "output folder) or choose another output.dir")
# Only for the store's own files and folders (with `every`): for one job's file they are its own problem.
_IN_THE_WAY: dict[int, tuple[str, str]] = {
    errno.ENOTDIR: ("a file is in the way (a parent of it is a file, not a folder)",
                    "move that file or choose another output.dir"),
    errno.EEXIST: ("a file is in the way (it is a file, not a folder)", "move that file or choose another output.dir"),
}
_MOUNT_GONE = frozenset({errno.ESTALE, errno.ENOTCONN, errno.ENODEV, errno.ENXIO})
_GONE = ("it is gone (removed or unmounted while the run used it)", "create or mount it again, or choose another "
                                                                    "output.dir")
_REMOTE_FIX = "check the network, the URL and the credentials for it, or choose another output.dir"


def store_failure(exc: BaseException, folder: str, doing: str, *, every: bool = False) -> OutputStoreError | None:
    """The OutputStoreError for `exc`, raised while `doing` something ("writing b.gif") in the output
    folder `folder` (a path or URL), or None when it is a job's own problem.

    `every`: the store's own files (lock, index, sidecars): whatever fails there stops the run. On a
    remote store any failure does: fsspec back ends raise their own types (botocore, aiohttp...).
    """
    if isinstance(exc, OutputStoreError):
        return exc
    if not isinstance(exc, Exception):
        return None  # KeyboardInterrupt, SystemExit: not the store's
    remote = not Location.parse(folder).is_local
    code = exc.errno if isinstance(exc, OSError) else None
    if code in _CAUSES:
        cause, fix = _CAUSES[code]
    elif code == errno.ELOOP and not remote:
        cause, fix = _LINK
    elif code == errno.ENOENT and not remote and not os.path.isdir(Location.parse(folder).path):
        return OutputStoreError(folder, f"{_GONE[0]} ({_detail(exc)}, {doing})", _GONE[1], gone=True)
    elif remote:
        cause, fix = "the store failed", _REMOTE_FIX
    elif every and code in _IN_THE_WAY:
        cause, fix = _IN_THE_WAY[code]
    elif every and isinstance(exc, OSError):
        cause, fix = "it cannot be used", "check it or choose another output.dir"
    else:
        return None
    return OutputStoreError(folder, f"{cause} ({_detail(exc)}, {doing})", fix, gone=code in _MOUNT_GONE)


def folder_gone(folder: str, detail: str) -> OutputStoreError:
    """The output folder is not the one the run began in: removed, or another mounted or made in its place."""
    cause, fix = _GONE
    return OutputStoreError(folder, f"{cause} ({detail})", fix, gone=True)


def scratch_failure(exc: BaseException, doing: str) -> OutputStoreError | None:
    """A full or read-only local temporary folder (where files for a remote store are encoded first)."""
    if not isinstance(exc, OSError) or exc.errno not in _CAUSES:
        return None
    cause, _ = _CAUSES[exc.errno]
    folder = tempfile.gettempdir()
    return OutputStoreError(folder, f"{cause} ({_detail(exc)}, {doing})",
                            "free some space there or point TMPDIR at another folder", label="temporary folder")


@contextmanager
def storing(folder: str, doing: str, *, every: bool = True) -> Iterator[None]:
    """Inside, the store's failures become OutputStoreError (with `every`, all of them); others pass."""
    try:
        yield
    except Exception as exc:
        failure = store_failure(exc, folder, doing, every=every)
        if failure is None or failure is exc:
            raise
        raise failure from exc


def errno_named_in(text: str) -> int | None:
    """The store errno whose message a tool printed (ffmpeg says "No space left on device"), or None."""
    for code in _CAUSES:
        if os.strerror(code) in text:
            return code
    return None


def _detail(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
