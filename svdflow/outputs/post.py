"""Post-processing: a job's files are made of its rendered frames (the master's) by `post_process`:
loop, then interpolate; then the writers encode. Renders (`finish_rendered`) and re-encodes from
the master (`finish_reencoded`) both go through it, so the same parameters give the same files
whichever way they were made, and a change of loop or interpolate never renders again.

Everything here is deterministic (integer blends, ffmpeg pinned to one filter thread): output
hashes are recorded and compared on later runs. `svdflow.outputs.clip` gives the frame counts.
"""

from __future__ import annotations

import subprocess

import numpy as np

from svdflow.errors import OutputWriteError
from svdflow.outputs.clip import default_loop_frames, interpolated_frames, max_loop_frames
from svdflow.outputs.codecs import ffmpeg_exe

# ffmpeg's motion-compensated interpolation: overlapped blocks adapted to the vectors' reliability
# and variable block sizes (the settings ffmpeg's documentation suggests for smooth output), and no
# scene-change detection: a clip has no cuts, and a detected "cut" would repeat frames instead.
MINTERPOLATE = "minterpolate=fps={factor}:mi_mode=mci:mc_mode=aobmc:vsbmc=1:scd=none"
# minterpolate works on YUV; 4:4:4 keeps the colour resolution (the rendered frames are put back exactly).
INTERPOLATION_PIX_FMT = "yuv444p"


def post_process(frames: np.ndarray, params) -> np.ndarray:
    """The frames a job's files hold: its rendered frames (uint8, T x H x W x 3) looped, then interpolated."""
    loop = getattr(params, "loop", "none")
    if loop == "pingpong":
        frames = pingpong(frames)
    elif loop == "crossfade":
        loop_frames = getattr(params, "loop_frames", None) or default_loop_frames(len(frames))
        frames = crossfade(frames, loop_frames)
    factor = getattr(params, "interpolate", 1)
    if factor > 1:
        frames = interpolate(frames, factor, cyclic=loop != "none")
    return frames


def pingpong(frames: np.ndarray) -> np.ndarray:
    """The frames, then back again without repeating either end: 0 1 2 3 2 1 (then 0 when it loops)."""
    return np.concatenate([frames, frames[-2:0:-1]]) if len(frames) > 2 else frames


def crossfade(frames: np.ndarray, count: int) -> np.ndarray:
    """The clip without its last `count` frames, which are blended into its first `count` ones: frame i
    (< count) is end frame i weighed (count - i) and start frame i weighed i + 1, over count + 1. The
    clip then ends where its own continuation began, and its first frames lead from there into the start."""
    total = len(frames)
    if not 1 <= count <= max_loop_frames(total):
        raise ValueError(f"loop_frames {count} does not fit a clip of {total} frames (1 to {max_loop_frames(total)})")
    weights = np.arange(1, count + 1, dtype=np.uint32)[:, None, None, None]  # of the start frames
    start, end = frames[:count].astype(np.uint32), frames[total - count:].astype(np.uint32)
    # Integers, rounded half up: the same bytes on every machine.
    blended = (end * (count + 1 - weights) + start * weights + (count + 1) // 2) // (count + 1)
    return np.concatenate([blended.astype(np.uint8), frames[count:total - count]])


def interpolate(frames: np.ndarray, factor: int, *, cyclic: bool) -> np.ndarray:
    """`factor - 1` motion-interpolated frames between each pair (and, when `cyclic`, between the last
    frame and the first), by the bundled ffmpeg's minterpolate. The rendered frames stay exactly as they
    were, at every `factor`-th place. OutputWriteError when ffmpeg fails."""
    count = len(frames)
    wanted = interpolated_frames(count, factor, cyclic=cyclic)
    if factor == 1 or count == 1:  # nothing to interpolate between: the frame is held
        return np.repeat(frames, wanted // count, axis=0)
    source = np.concatenate([frames, frames[:1]]) if cyclic else frames
    needed = (len(source) - 1) * factor + 1
    # minterpolate holds back the last pair until it sees one more frame: give it the last again.
    padded = np.ascontiguousarray(np.concatenate([source, source[-1:]]))
    _, height, width, _ = frames.shape
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-filter_threads", "1",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "1", "-i", "pipe:0",
           "-vf", f"format={INTERPOLATION_PIX_FMT},{MINTERPOLATE.format(factor=factor)},format=rgb24",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    try:
        proc = subprocess.run(cmd, input=padded.data.cast("B"), capture_output=True, check=False)
    except OSError as exc:
        raise OutputWriteError(f"could not interpolate frames: ffmpeg did not start ({exc}); reinstall it: "
                               "pip install --force-reinstall imageio-ffmpeg") from exc
    frame_bytes = width * height * 3
    made = len(proc.stdout) // frame_bytes
    if proc.returncode != 0 or made < needed:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = lines[-1] if lines else f"{made} frames made, {needed} expected"
        raise OutputWriteError(f"could not interpolate frames (ffmpeg minterpolate: {detail}); set interpolate: 1 "
                               "to write the rendered frames as they are")
    out = np.frombuffer(proc.stdout, np.uint8, count=needed * frame_bytes).reshape(needed, height, width, 3).copy()
    out[::factor] = source
    return out[:wanted]
