"""Encode one job's frames to mp4, gif, webp or PNG frames, crash-safe and byte-reproducible.

Output hashes are recorded in the index and compared on later runs, so every encoder here is
pinned to settings that give the same bytes for the same frames on any machine with the same
ffmpeg/Pillow builds (see `encode_mp4` for what that took with x264).
"""

from __future__ import annotations

import errno
import hashlib
import math
import numbers
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import fsspec
import numpy as np
from PIL import Image

from svdflow.errors import OutputWriteError
from svdflow.locations import Location
from svdflow.outputs.atomic import (
    atomic_local_dir,
    atomic_local_path,
    publish_local_dir,
    publish_local_file,
)

__all__ = [
    "FORMATS",
    "WrittenOutput",
    "encode_gif",
    "encode_mp4",
    "encode_webp",
    "hash_output",
    "output_path",
    "read_mp4_comment",
    "write_outputs",
    "write_png_frames",
]

FORMATS = ("mp4", "gif", "webp", "frames")
_SUFFIX = {"mp4": ".mp4", "gif": ".gif", "webp": ".webp", "frames": "_frames"}

MP4_PRESET = "medium"
# x264 is deterministic for a given thread count, but its default thread count follows the CPU
# count and changes the bitstream (frame threads limit motion search and the options SEI records
# threads=N). A fixed count makes the bytes the same on a laptop and on a 64-core render node.
MP4_THREADS = 4

GIF_PALETTE_SAMPLE_PIXELS = 250_000
WEBP_QUALITY = 90
WEBP_METHOD = 4


@dataclass(frozen=True)
class WrittenOutput:
    """One encoded output of a job, as recorded in the index."""

    format: str
    path: str  # final path or URL; for "frames" the folder
    sha256: str  # of the file's bytes; for "frames" see `hash_output`
    bytes: int  # file size; for "frames" the PNGs' total


class _EncodeFailed(Exception):
    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


_FIX_BY_ERRNO = {
    errno.EACCES: "check that the output folder is writable",
    errno.EPERM: "check that the output folder is writable",
    errno.ENOSPC: "free some disk space or choose another output.dir",
    errno.EDQUOT: "free some disk space or choose another output.dir",
    errno.EROFS: "the file system is read-only; choose another output.dir",
    errno.ENOTDIR: "a parent of this path is a file, not a folder: move that file or choose another output.dir",
    errno.EISDIR: "a folder is in the way of this file: remove it or choose another output.dir",
    errno.EEXIST: "a file is in the way of the output folder: remove it or choose another output.dir",
    errno.ENAMETOOLONG: "use a shorter job id or output.dir",
}
_GENERIC_FIX = "check the output folder and try again"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextmanager
def _reporting(shown: str, action: str = "could not write", remote: bool = False) -> Iterator[None]:
    """Turn the ways a write fails into one OutputWriteError that names `shown` and the fix."""
    try:
        yield
    except OutputWriteError:
        raise
    except _EncodeFailed as exc:
        raise OutputWriteError(f"{shown}: {exc.reason}; {exc.fix}") from exc
    except OSError as exc:
        fix = _FIX_BY_ERRNO.get(exc.errno, _GENERIC_FIX)
        if remote and exc.errno is None:
            fix = "check the output URL and the credentials for it"
        raise OutputWriteError(f"{shown}: {action} ({_reason(exc)}); {fix}") from exc
    except Exception as exc:
        if not remote:
            raise
        # fsspec back ends raise their own exception types (botocore, gcsfs, aiohttp...).
        raise OutputWriteError(
            f"{shown}: {action} ({_reason(exc)}); check the output URL and the credentials for it"
        ) from exc


def output_path(out_dir: str, job_id: str, fmt: str) -> str:
    """`<out_dir>/<id>.mp4|.gif|.webp`, or `<out_dir>/<id>_frames` for PNG frames."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    name, out_dir = job_id + _SUFFIX[fmt], str(out_dir)
    if Location.parse(out_dir).is_local:
        return os.path.join(out_dir, name)  # as given: relative stays relative
    return Location.parse(out_dir).join(name).text


def _check_frames(frames) -> None:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
        raise ValueError(f"frames must have shape (T, H, W, 3) with T, H, W > 0, got {frames.shape}")


def _check_fps(fps) -> None:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not fps > 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")


def _frame_duration_ms(fps: float) -> int:
    return max(1, round(1000 / fps))


# ---------------------------------------------------------------------------------------------
# mp4


def _ffmpeg() -> str:
    # Imported here: a run that writes only frames, GIF or WebP needs no ffmpeg binary.
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _mp4_command(
    path: str, width: int, height: int, *, fps, crf: int, comment: str, preset: str
) -> list[str]:
    rate = str(Fraction(fps).limit_denominator(1001 * 1000)) if not isinstance(fps, Fraction) else str(fps)
    cmd = [
        _ffmpeg(),
        "-hide_banner",
        "-loglevel", "error",
        "-y",
        "-f", "rawvideo",
        "-pix_fmt", "rgb24",
        "-s", f"{width}x{height}",
        "-r", rate,
        "-i", "pipe:0",
        "-an",
        "-map_metadata", "-1",
        "-c:v", "libx264",
        "-preset", preset,
        "-crf", str(crf),
        "-pix_fmt", "yuv420p",
        "-threads", str(MP4_THREADS),
        # Without these the file embeds the libavformat/libavcodec versions ("Lavf61.7.100"),
        # so upgrading imageio-ffmpeg would change every hash even for identical video.
        "-fflags", "+bitexact",
        "-flags:v", "+bitexact",
        "-movflags", "+faststart",
    ]  # fmt: skip
    if comment:
        cmd += ["-metadata", f"comment={comment}"]
    cmd += ["-f", "mp4", path]
    return cmd


def _encode_mp4(frames: np.ndarray, path: str, *, fps, crf: int, comment: str, preset: str) -> None:
    _, height, width, _ = frames.shape
    if width % 2 or height % 2:
        raise _EncodeFailed(
            f"could not encode mp4 (width {width} and height {height} must both be even for H.264 "
            "with yuv420p)",
            "use an even width and height, or another format",
        )
    try:
        cmd = _mp4_command(path, width, height, fps=fps, crf=crf, comment=comment, preset=preset)
    except RuntimeError as exc:  # imageio-ffmpeg found no ffmpeg binary
        raise _EncodeFailed(
            f"could not encode mp4 ({exc})", "reinstall it: pip install --force-reinstall imageio-ffmpeg"
        ) from exc
    data = np.ascontiguousarray(frames).data.cast("B")
    # ffmpeg is run directly rather than through imageio_ffmpeg.write_frames: write_frames leaves
    # ffmpeg's stderr on our terminal and ignores its exit status, so a failure while writing the
    # trailer (disk full during the +faststart rewrite) would publish a broken file silently.
    # Feeding the raw frames ourselves also means no macro_block_size rescale can ever happen.
    proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        detail = lines[-1] if lines else "no error output"
        fix = "check the ffmpeg message above and the output folder"
        for code, text in _FIX_BY_ERRNO.items():
            if os.strerror(code) in detail:
                fix = text
                break
        raise _EncodeFailed(
            f"could not encode mp4 (ffmpeg exited with status {proc.returncode}: {detail})", fix
        )


def encode_mp4(
    frames: np.ndarray, path: str, *, fps, crf: int, comment: str, preset: str = MP4_PRESET
) -> None:
    """Encode H.264/yuv420p mp4 to a local path (not atomic; `write_outputs` adds that).

    `comment` is stored as the container's comment tag; `read_mp4_comment` reads it back.
    """
    _check_frames(frames)
    _check_fps(fps)
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be between 0 and 51, got {crf}")
    with _reporting(path):
        _encode_mp4(frames, path, fps=fps, crf=crf, comment=comment, preset=preset)


def _parse_ffmetadata(text: str) -> dict[str, str]:
    # ffmetadata escapes '=', ';', '#', '\\' and newline with a backslash, so a value may span
    # physical lines; only an unescaped newline ends an entry. The first (global) value wins.
    tags: dict[str, str] = {}
    key: list[str] = []
    value: list[str] = []
    in_value = False
    chars = iter(text + "\n")
    for ch in chars:
        if ch == "\\":
            (value if in_value else key).append(next(chars, ""))
        elif ch == "\n":
            if in_value:
                tags.setdefault("".join(key), "".join(value))
            key, value, in_value = [], [], False
        elif ch == "=" and not in_value:
            in_value = True
        else:
            (value if in_value else key).append(ch)
    return tags


def read_mp4_comment(path: str) -> str | None:
    """The comment tag of a local mp4 (svdflow stores the job's content key there), or None."""
    proc = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", Location.parse(path).path,
         "-f", "ffmetadata", "-"],
        capture_output=True,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise OutputWriteError(
            f"{path}: could not read metadata ({proc.stderr.decode('utf-8', 'replace').strip()}); "
            "check that the file is a complete mp4"
        )
    return _parse_ffmetadata(proc.stdout.decode("utf-8", "replace")).get("comment")


# ---------------------------------------------------------------------------------------------
# gif, webp, png


def _pil_frames(frames: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(frame, mode="RGB") for frame in frames]


def _gif_palette(frames: np.ndarray) -> Image.Image:
    # One palette for the whole clip: per-frame palettes make colours flicker from frame to frame,
    # and Pillow's default (median cut on every full frame) takes ~1 s per 1024x576 frame. Median
    # cut over a strided sample of up to 8 frames gives nearly the same error in ~0.5 s per clip.
    count, height, width, _ = frames.shape
    picks = np.unique(np.linspace(0, count - 1, num=min(8, count)).round().astype(int))
    stride = max(1, math.ceil(math.sqrt(len(picks) * height * width / GIF_PALETTE_SAMPLE_PIXELS)))
    sample = np.concatenate([frames[i, ::stride, ::stride] for i in picks], axis=0)
    return Image.fromarray(sample, mode="RGB").quantize(256, method=Image.Quantize.MEDIANCUT)


def _encode_gif(frames: np.ndarray, path: str, *, fps) -> None:
    palette = _gif_palette(frames)
    # No dithering: error diffusion differs from frame to frame, which shows as crawling noise in
    # an animation and nearly doubles the file size.
    images = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in _pil_frames(frames)]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=_frame_duration_ms(fps),
        loop=0,
        optimize=False,
    )


def _encode_webp(frames: np.ndarray, path: str, *, fps) -> None:
    images = _pil_frames(frames)
    images[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=_frame_duration_ms(fps),
        loop=0,
        lossless=False,
        quality=WEBP_QUALITY,
        method=WEBP_METHOD,
    )


def _png_name(index: int) -> str:
    return f"{index:05d}.png"


def _write_pngs(frames: np.ndarray, folder: str) -> None:
    for index, image in enumerate(_pil_frames(frames)):
        image.save(os.path.join(folder, _png_name(index)), format="PNG")


def encode_gif(frames: np.ndarray, path: str, *, fps) -> None:
    """Encode an endlessly looping GIF to a local path (not atomic; `write_outputs` adds that).

    GIF stores delays in hundredths of a second, so 7 fps plays at 1/0.14 s. Pillow merges
    consecutive identical frames into one longer frame, so a still video has fewer frames.
    """
    _check_frames(frames)
    _check_fps(fps)
    with _reporting(path):
        _encode_gif(frames, path, fps=fps)


def encode_webp(frames: np.ndarray, path: str, *, fps) -> None:
    """Encode a looping lossy animated WebP to a local path (not atomic; `write_outputs` adds that)."""
    _check_frames(frames)
    _check_fps(fps)
    with _reporting(path):
        _encode_webp(frames, path, fps=fps)


def write_png_frames(frames: np.ndarray, folder: str) -> None:
    """Write 00000.png, 00001.png, ... into an existing local folder (not atomic on its own)."""
    _check_frames(frames)
    with _reporting(folder):
        _write_pngs(frames, Location.parse(folder).path)


# ---------------------------------------------------------------------------------------------
# hashing


def _sha256_file(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _sha256_frames(items: Iterator[tuple[str, bytes]]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for name, data in items:
        digest.update(f"{name}\n{len(data)}\n".encode())
        digest.update(data)
        size += len(data)
    return digest.hexdigest(), size


def _local_png_items(folder: str) -> Iterator[tuple[str, bytes]]:
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".png")):
        with open(os.path.join(folder, name), "rb") as f:
            yield name, f.read()


def hash_output(path: str, fmt: str) -> tuple[str, int]:
    """(sha256, bytes) of an existing output, local or remote, as `WrittenOutput` records them.

    For "frames" the digest runs over the folder's `*.png` files sorted by name, feeding for
    each `"<name>\\n<size>\\n"` (UTF-8) and then the file's bytes; the size is their total.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if Location.parse(path).is_local:
        local = Location.parse(path).path
        return _sha256_frames(_local_png_items(local)) if fmt == "frames" else _sha256_file(local)
    fs, rpath = fsspec.core.url_to_fs(path)
    if fmt != "frames":
        data = fs.cat_file(rpath)
        return hashlib.sha256(data).hexdigest(), len(data)
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(rpath, detail=False))
    rpath = rpath.rstrip("/")
    return _sha256_frames((n, fs.cat_file(f"{rpath}/{n}")) for n in names if n.endswith(".png"))


# ---------------------------------------------------------------------------------------------
# one job


def _encoder(fmt: str, *, fps, crf: int, comment: str) -> Callable[[np.ndarray, str], None]:
    if fmt == "mp4":
        return lambda frames, path: _encode_mp4(
            frames, path, fps=fps, crf=crf, comment=comment, preset=MP4_PRESET
        )
    if fmt == "gif":
        return lambda frames, path: _encode_gif(frames, path, fps=fps)
    return lambda frames, path: _encode_webp(frames, path, fps=fps)


def _make_out_dir(out_dir: str) -> None:
    remote = not Location.parse(out_dir).is_local
    with _reporting(out_dir, "could not create the output folder", remote=remote):
        if remote:
            fs, rpath = fsspec.core.url_to_fs(out_dir)
            fs.makedirs(rpath, exist_ok=True)
        else:
            os.makedirs(Location.parse(out_dir).path, exist_ok=True)


def _write_file(frames: np.ndarray, final: str, fmt: str, encode: Callable, remote: bool) -> WrittenOutput:
    if not remote:
        with _reporting(final), atomic_local_path(final, suffix=_SUFFIX[fmt]) as tmp:
            encode(frames, tmp)
            sha, size = _sha256_file(tmp)
        return WrittenOutput(fmt, final, sha, size)
    with _reporting(final), tempfile.TemporaryDirectory(prefix="svdflow-") as scratch:
        tmp = os.path.join(scratch, "out" + _SUFFIX[fmt])
        encode(frames, tmp)
        sha, size = _sha256_file(tmp)
        with _reporting(final, "could not upload", remote=True):
            publish_local_file(tmp, final)
    return WrittenOutput(fmt, final, sha, size)


def _write_frames(frames: np.ndarray, final: str, remote: bool) -> WrittenOutput:
    if not remote:
        with _reporting(final), atomic_local_dir(final) as tmp:
            _write_pngs(frames, tmp)
            sha, size = _sha256_frames(_local_png_items(tmp))
        return WrittenOutput("frames", final, sha, size)
    with _reporting(final), tempfile.TemporaryDirectory(prefix="svdflow-") as scratch:
        tmp = os.path.join(scratch, "frames")
        os.mkdir(tmp)
        _write_pngs(frames, tmp)
        sha, size = _sha256_frames(_local_png_items(tmp))
        with _reporting(final, "could not upload", remote=True):
            publish_local_dir(tmp, final)
    return WrittenOutput("frames", final, sha, size)


def write_outputs(
    frames: np.ndarray,
    out_dir: str,
    job_id: str,
    formats: Sequence[str],
    *,
    playback_fps: float,
    crf: int = 18,
    comment: str = "",
) -> list[WrittenOutput]:
    """Encode `frames` (uint8, T×H×W×3) in each format into `out_dir` (local or fsspec URL).

    Each output replaces any previous one atomically: readers see the old file or the new one,
    never a partial one. Raises OutputWriteError naming the output and the fix when encoding or
    writing fails; outputs finished before the failure stay in place.
    """
    _check_frames(frames)
    _check_fps(playback_fps)
    if isinstance(formats, str):
        raise ValueError(f"formats must be a sequence of format names, got the string {formats!r}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s) {unknown}; expected some of {', '.join(FORMATS)}")
    if len(set(formats)) != len(formats):
        raise ValueError(f"formats must not repeat, got {list(formats)}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be between 0 and 51, got {crf}")

    remote = not Location.parse(out_dir).is_local
    _make_out_dir(out_dir)
    written = []
    for fmt in formats:
        final = output_path(out_dir, job_id, fmt)
        if fmt == "frames":
            written.append(_write_frames(frames, final, remote))
        else:
            encode = _encoder(fmt, fps=playback_fps, crf=crf, comment=comment)
            written.append(_write_file(frames, final, fmt, encode, remote))
    return written
