"""Lossless masters: each rendered job's frames, kept so that a change of formats, crf or
playback rate encodes the files again from them instead of rendering again.

A master is FFV1 (planar RGB, lossless) in Matroska at `<output.dir>/.svdflow/masters/<id>.mkv`,
carrying the job's provenance like every other file. Its entry records its sha256 and size: a plan
checks the size of every master it relies on and the sha256 of those it will re-encode from, and a
re-encode checks that the decoded frames hash to the entry's frames_sha256.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np

from svdflow.errors import MasterError
from svdflow.outputs.codecs import ffmpeg_exe
from svdflow.outputs.entry import MasterRecord
from svdflow.outputs.failures import storing
from svdflow.outputs.store import OutputStore
from svdflow.outputs.writers import EncodeSettings, hash_output, write_file

MASTERS_DIR = ".svdflow/masters"


def master_name(job_id: str) -> str:
    """The master's path in the output folder."""
    return f"{MASTERS_DIR}/{job_id}.mkv"


def write_master(frames: np.ndarray, store: OutputStore, job_id: str, *, fps: float, provenance: str) -> MasterRecord:
    """Encode the job's frames as its master, atomically (OutputStoreError when the output folder fails,
    OutputWriteError when the job's frames cannot be encoded)."""
    written = write_file(frames, store.path(MASTERS_DIR), f"{job_id}.mkv", "master",
                         EncodeSettings(playback_fps=fps, provenance=provenance), root=store.url, make_root=False)
    return MasterRecord(file=master_name(job_id), codec="ffv1", sha256=written.sha256, bytes=written.bytes)


def remove_master(store: OutputStore, job_id: str) -> None:
    """A job rendered again without a master loses the old one: it holds other pixels."""
    store.remove(master_name(job_id))


def master_problem(store: OutputStore, record: MasterRecord, *, verify: bool) -> str | None:
    """What is wrong with a recorded master, or None: missing, another size, or (with `verify`,
    which reads it whole) other bytes."""
    size = store.size(record.file)
    if size is None:
        return f"master {record.file} is missing"
    if size != record.bytes:
        return f"master {record.file} has {size} bytes, recorded {record.bytes}"
    if verify:
        with storing(store.url, f"reading {record.file}", every=False):
            digest, _ = hash_output(store.path(record.file), "master")
        if digest != record.sha256:
            return f"master {record.file} is damaged (sha256 {digest[:12]}, recorded {record.sha256[:12]})"
    return None


def read_master(store: OutputStore, record: MasterRecord, width: int, height: int) -> np.ndarray:
    """The master's frames, uint8 (T, H, W, 3). MasterError when it cannot be decoded whole."""
    if store.is_local:
        return _decode(os.path.join(store.root, record.file), record, width, height)
    with tempfile.TemporaryDirectory(prefix="svdflow-") as scratch:
        local = os.path.join(scratch, "master.mkv")
        with storing(store.url, f"reading {record.file}", every=False):
            store.fs.get_file(f"{store.root.rstrip('/')}/{record.file}", local)
        return _decode(local, record, width, height)


def _decode(path: str, record: MasterRecord, width: int, height: int) -> np.ndarray:
    # -xerror: a slice whose CRC fails stops the decode instead of concealing the damage.
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-xerror", "-i", path,
                           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], capture_output=True, check=False)
    frame_bytes = width * height * 3
    if proc.returncode != 0 or not proc.stdout or len(proc.stdout) % frame_bytes:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = lines[-1] if lines else f"{len(proc.stdout)} bytes, not whole {width}x{height} frames"
        raise MasterError(f"master {record.file} could not be decoded ({detail})")
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, height, width, 3)
