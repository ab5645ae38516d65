"""Crash-safe writes: a final name only ever points at a complete file or folder.

Everything is written under a temporary name first and renamed into place once complete, so a
run killed at any moment (kill -9, OOM, power cut after the fsyncs) leaves either the previous
output or the new one under the final name, never a truncated file. What a killed run leaves
behind are hidden temporaries named `.<name>.tmp-<pid>-<rand><suffix>`; `remove_stale_temps`
clears them on the next run.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import fsspec

from svdflow.faults import crash_point
from svdflow.locations import Location

__all__ = [
    "LinkInFolder",
    "atomic_local_dir",
    "atomic_local_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "publish_local_dir",
    "publish_local_file",
    "real_folder",
    "refuse_link",
    "remove_stale_temps",
]

# Matches every temporary this module creates locally: the leading dot keeps it out of globs
# such as `*.mp4`, and the pid lets a later run tell a dead writer's leftovers from live ones.
_STALE_TEMP = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[0-9a-f]+")


class LinkInFolder(OSError):
    """A name inside an output folder that svdflow would write into, truncate or delete through is a
    symbolic link. The output folder itself may be a link (the user chose it); nothing inside it may,
    or a write meant for the folder lands wherever the link points (ELOOP, as O_NOFOLLOW reports it)."""

    def __init__(self, path: str, shown: str):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        super().__init__(errno.ELOOP, f"{shown} is a symbolic link to {target}", path)


def refuse_link(path: str, shown: str) -> None:
    """LinkInFolder when `path` is a symbolic link; nothing when it is anything else or missing."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise LinkInFolder(path, shown)
    except FileNotFoundError:
        pass


def real_folder(root: str, sub: str, *, create: bool = True) -> str:
    """`root/sub` as a real folder: each of its parts below `root` made if missing (with `create`) and
    never a symbolic link (LinkInFolder), so writes and deletes meant for it stay inside `root`.
    The one check every folder inside an output folder goes through before svdflow writes there."""
    path, shown = root, ""
    for part in sub.strip("/").split("/"):
        path, shown = os.path.join(path, part), f"{shown}/{part}" if shown else part
        if create:
            with suppress(FileExistsError):
                os.mkdir(path, 0o777)
        refuse_link(path, shown)
    return path


def _temp_name(final_name: str, suffix: str = "") -> str:
    return f".{final_name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _remote_temp(final: str) -> str:
    # Not hidden on purpose: object stores have no hidden names, and a visible `.tmp-` key is
    # easier to spot and clean by hand than one that only differs by a leading dot.
    return f"{final}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def _reserve_temp_file(folder: str, final_name: str, suffix: str) -> str:
    while True:
        tmp = os.path.join(folder, _temp_name(final_name, suffix))
        try:
            # O_EXCL claims the name so two writers never share a temporary; mode 0o666 lets the
            # umask decide permissions, as for any other file the user creates (mkstemp's 0o600
            # would leave outputs unreadable to the rest of a team).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable. Some file systems (and Windows) refuse fsync on a folder;
    # the rename has already happened then, so durability is best effort rather than a failure.
    with suppress(OSError):
        _fsync_path(folder or ".")


def _remove_quietly(path: str) -> None:
    with suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


@contextmanager
def atomic_local_path(final_path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside `final_path`; on clean exit it replaces `final_path`.

    The temporary is hidden (`.<name>.tmp-<pid>-<rand><suffix>`) and lives in the same folder so
    that `os.replace` stays on one file system and is atomic. The body may write it any way it
    likes (open, ffmpeg, Pillow). On exception the temporary is removed and nothing else changes.
    """
    final = Location.parse(final_path).path
    folder, name = os.path.split(final)
    crash_point(f"before-write:{name}")
    tmp = _reserve_temp_file(folder, name, suffix)
    try:
        yield tmp
        # Data must reach the disk before the rename does, or a power cut could leave the final
        # name pointing at an empty inode on file systems that reorder metadata and data.
        _fsync_path(tmp)
        crash_point(f"before-rename:{name}")
        os.replace(tmp, final)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(folder)


def _fsync_tree(folder: str) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            _fsync_path(os.path.join(root, name))
        _fsync_dir(root)


def _swap_dir_into_place(tmp: str, final: str) -> None:
    folder, name = os.path.split(final)
    old = None
    # rename(2) cannot replace a non-empty folder, so the previous one steps aside first. A crash
    # between the two renames leaves no folder under the final name (the old one survives as a
    # hidden temporary), which is still never a partial one. Linux's RENAME_EXCHANGE would close
    # that window but is not reachable from the standard library.
    if os.path.lexists(final):
        old = os.path.join(folder, _temp_name(name, ".old"))
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            with suppress(OSError):
                os.rename(old, final)
        raise
    _fsync_dir(folder)
    if old is not None:
        _remove_quietly(old)


@contextmanager
def atomic_local_dir(final_path: str) -> Iterator[str]:
    """Yield a hidden temporary folder beside `final_path`; on clean exit it replaces it whole."""
    final = Location.parse(final_path).path
    folder, name = os.path.split(final)
    crash_point(f"before-write:{name}")
    while True:
        tmp = os.path.join(folder, _temp_name(name))
        try:
            os.mkdir(tmp, 0o777)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _fsync_tree(tmp)
        _swap_dir_into_place(tmp, final)
    except BaseException:
        _remove_quietly(tmp)
        raise


# Stores where one upload is atomic: an object appears whole when its PUT (or multipart upload)
# completes, or not at all. There a temporary and a move (a copy and a delete: 6 requests for a
# sidecar) would buy nothing; on file-like back ends (sftp, smb, webdav) an upload is visible while
# it runs, so they keep the temporary.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})


def _puts_atomically(path: str) -> bool:
    protocols = Location.parse(path).protocols
    return len(protocols) == 1 and protocols[0] in OBJECT_STORES


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to a local path or fsspec URL so that readers never see a partial file."""
    if not Location.parse(path).is_local:
        fs, rpath = fsspec.core.url_to_fs(path)
        if _puts_atomically(path):
            fs.pipe_file(rpath, bytes(data))
            return
        tmp = _remote_temp(rpath)
        try:
            fs.pipe_file(tmp, bytes(data))
            fs.mv(tmp, rpath)
        except BaseException:
            with suppress(Exception):
                fs.rm(tmp)
            raise
        return
    with atomic_local_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_json(path: str, obj) -> None:
    """`atomic_write_bytes` of `obj` as indented UTF-8 JSON with a final newline."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def publish_local_file(local_tmp: str, final: str) -> None:
    """Move a finished local file to `final` (local path or fsspec URL), atomically as possible.

    `local_tmp` is consumed: renamed into place, or uploaded and then deleted.
    """
    if not Location.parse(final).is_local:
        fs, rpath = fsspec.core.url_to_fs(final)
        if _puts_atomically(final):
            fs.put_file(local_tmp, rpath)
            os.remove(local_tmp)
            return
        tmp = _remote_temp(rpath)
        # Upload beside the final name and move it there afterwards: on object stores (s3, gcs)
        # `mv` is a server-side copy, which makes the final key appear whole or not at all; on
        # file-like back ends (sftp, smb, webdav) it is a rename, and an upload straight to the
        # final name would be visible half-written while it runs. This is the best atomicity
        # fsspec offers across back ends.
        try:
            fs.put_file(local_tmp, tmp)
            fs.mv(tmp, rpath)
        except BaseException:
            with suppress(Exception):
                fs.rm(tmp)
            raise
        os.remove(local_tmp)
        return
    final_local = Location.parse(final).path
    _fsync_path(local_tmp)
    try:
        os.replace(local_tmp, final_local)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # A temporary on another file system (e.g. /tmp on tmpfs) cannot be renamed across; copy
        # it beside the final name first so the last step is still a same-folder rename.
        with atomic_local_path(final_local) as tmp:
            shutil.copyfile(local_tmp, tmp)
        os.remove(local_tmp)
        return
    _fsync_dir(os.path.dirname(final_local))


def publish_local_dir(local_dir: str, final: str) -> None:
    """Move a finished local folder (flat, files only) to `final`, replacing any previous one.

    `local_dir` is consumed. For URLs the files are uploaded to a temporary folder beside
    `final`, which then replaces the previous folder; readers may briefly see no folder, never
    a partial one (except on stores whose folder move is not atomic, which is most of them: a
    move there is a copy of each file then a delete).
    """
    names = sorted(os.listdir(local_dir))
    if Location.parse(final).is_local:
        final_local = Location.parse(final).path
        with atomic_local_dir(final_local) as tmp:
            for name in names:
                shutil.copyfile(os.path.join(local_dir, name), os.path.join(tmp, name))
        shutil.rmtree(local_dir, ignore_errors=True)
        return
    fs, rpath = fsspec.core.url_to_fs(final)
    rpath = rpath.rstrip("/")
    tmp = _remote_temp(rpath)
    old = None
    try:
        fs.makedirs(tmp, exist_ok=True)
        for name in names:
            fs.put_file(os.path.join(local_dir, name), f"{tmp}/{name}")
        if fs.exists(rpath):
            old = f"{_remote_temp(rpath)}.old"
            fs.mv(rpath, old, recursive=True)
        fs.mv(tmp, rpath, recursive=True)
    except BaseException:
        with suppress(Exception):
            fs.rm(tmp, recursive=True)
        if old is not None:
            with suppress(Exception):
                if not fs.exists(rpath):
                    fs.mv(old, rpath, recursive=True)
        raise
    if old is not None:
        with suppress(Exception):
            fs.rm(old, recursive=True)
    shutil.rmtree(local_dir, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def remove_stale_temps(dir_path: str) -> list[str]:
    """Delete the temporaries that dead writers left in a local folder; return their names.

    A temporary is stale when the process named in it is gone. Temporaries of this process and
    of live processes are kept, since they may be in the middle of a write. (A dead writer whose
    pid was reused keeps its leftovers until the next run; that costs disk, never an output.)
    """
    folder = Location.parse(dir_path).path
    try:
        # Only hidden names can be temporaries: a folder of 200,000 outputs keeps no entry of theirs.
        entries = [entry for entry in os.scandir(folder) if entry.name.startswith(".")]
    except FileNotFoundError:
        return []
    removed = []
    me = os.getpid()
    for entry in entries:
        match = _STALE_TEMP.match(entry.name)
        if match is None:
            continue
        pid = int(match["pid"])
        if pid == me or _pid_alive(pid):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):
                os.remove(entry.path)
        removed.append(entry.name)
    return sorted(removed)
