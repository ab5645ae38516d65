"""Encode one job's frames in each output format, crash-safe and byte-reproducible, each file
carrying the job's provenance.

Output hashes are recorded in the index and compared on later runs, so every encoder here is
pinned to settings that give the same bytes for the same frames on any machine with the same
ffmpeg/Pillow builds (`svdflow.outputs.codecs` says what that took per codec); the provenance is
stored as `svdflow.outputs.provenance` describes.
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
from PIL import Image, PngImagePlugin

from svdflow.errors import OutputStoreError, OutputWriteError
from svdflow.locations import Location
from svdflow.manifest.schema import OUTPUT_FORMATS
from svdflow.outputs.atomic import (
    atomic_local_dir,
    atomic_local_path,
    publish_local_dir,
    publish_local_file,
    real_folder,
)
from svdflow.outputs.codecs import (
    CODEC_NAMES,
    PRORES_PROFILES,
    VIDEO_FORMATS,
    encode_command,
    frame_rate,
    needs_even_size,
    pix_fmt,
)
from svdflow.outputs.failures import errno_named_in, scratch_failure, store_failure, storing
from svdflow.outputs.provenance import PNG_KEYWORD, ffmetadata, xmp_packet

__all__ = [
    "FORMATS",
    "EncodeSettings",
    "WrittenOutput",
    "encode_gif",
    "encode_video",
    "encode_webp",
    "hash_output",
    "output_path",
    "write_file",
    "write_outputs",
    "write_png_frames",
]

FORMATS = OUTPUT_FORMATS
SUFFIXES = {"mp4": ".mp4", "hevc": ".hevc.mp4", "prores": ".mov", "webm": ".webm", "gif": ".gif", "webp": ".webp",
            "frames": "_frames", "master": ".mkv"}

GIF_PALETTE_SAMPLE_PIXELS = 250_000
# GIF delays are whole centiseconds.
GIF_DELAY_UNIT_MS = 10
WEBP_QUALITY = 90
WEBP_METHOD = 4


@dataclass(frozen=True)
class EncodeSettings:
    """How a job's files are encoded: the output block's settings, the job's playback rate, and the
    provenance JSON every file carries ("" for none)."""

    playback_fps: float
    crf: int = 18
    prores_profile: str = "hq"
    provenance: str = ""

    def check(self) -> None:
        _check_fps(self.playback_fps)
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be between 0 and 51, got {self.crf}")
        if self.prores_profile not in PRORES_PROFILES:
            raise ValueError(f"unknown prores_profile {self.prores_profile!r}; expected one of "
                             f"{', '.join(PRORES_PROFILES)}")


@dataclass(frozen=True)
class WrittenOutput:
    """One encoded output of a job, as recorded in the index."""

    format: str
    path: str  # final path or URL; for "frames" the folder
    sha256: str  # of the file's bytes; for "frames" see `hash_output`
    bytes: int  # file size; for "frames" the PNGs' total


class _EncodeFailed(Exception):
    def __init__(self, reason: str, fix: str, code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.fix = fix
        self.code = code  # the errno ffmpeg reported, when it said one


# A job's own path problems; the store's (disk full, read-only...) are svdflow.outputs.failures'.
_FIX_BY_ERRNO = {
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


def _within(path: str, root: str) -> str:
    """`path` as named in a message about the folder `root`: relative to it when inside it."""
    root = root.rstrip("/")
    if path.startswith(root + "/") or path.startswith(root + os.sep):
        return path[len(root) + 1:]
    return os.path.basename(path.rstrip("/"))


@contextmanager
def _reporting(shown: str, root: str, *, scratch: bool = False) -> Iterator[None]:
    """Turn the ways writing `shown` fails into an OutputStoreError when the output folder `root` (or,
    with `scratch`, the local temporary folder) is at fault, else an OutputWriteError naming the fix."""
    try:
        yield
    except (OutputWriteError, OutputStoreError):
        raise
    except Exception as exc:
        cause = OSError(exc.code, os.strerror(exc.code)) if isinstance(exc, _EncodeFailed) and exc.code else exc
        doing = f"{'encoding' if scratch else 'writing'} {_within(shown, root)}"
        failure = scratch_failure(cause, doing) if scratch else store_failure(cause, root, doing)
        if failure is not None:
            raise failure from exc
        if isinstance(exc, _EncodeFailed):
            raise OutputWriteError(f"{shown}: {exc.reason}; {exc.fix}") from exc
        if isinstance(exc, OSError):
            fix = _FIX_BY_ERRNO.get(exc.errno, _GENERIC_FIX)
            raise OutputWriteError(f"{shown}: could not write ({_reason(exc)}); {fix}") from exc
        raise


def output_path(out_dir: str, job_id: str, fmt: str) -> str:
    """`<out_dir>/<id>.mp4|.hevc.mp4|.mov|.webm|.gif|.webp`, or `<out_dir>/<id>_frames` for PNG frames."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _join(str(out_dir), job_id + SUFFIXES[fmt])


def _join(out_dir: str, name: str) -> str:
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


def frame_delays(count: int, fps, unit_ms: int) -> list[int]:
    """Each frame's display time in ms, whole multiples of `unit_ms` (GIF: 10, WebP: 1), such that the
    first k frames always end at k/fps rounded to the unit: the roundings do not add up, so the clip
    lasts count/fps to within half a unit (one delay rounded and repeated made a 28 fps GIF play at 33)."""
    per_second = Fraction(1000, unit_ms)
    rate = Fraction(frame_rate(fps))
    ends = [math.floor(per_second * k / rate + Fraction(1, 2)) for k in range(count + 1)]
    return [(b - a) * unit_ms for a, b in zip(ends, ends[1:])]


# ---------------------------------------------------------------------------------------------
# mp4


def _encode_video(frames: np.ndarray, path: str, *, fmt: str, settings: EncodeSettings, fps=None) -> None:
    """`fmt` is a video format or `master`; `fps` overrides the settings' playback rate (masters)."""
    _, height, width, _ = frames.shape
    name = CODEC_NAMES[fmt]
    if needs_even_size(fmt, settings.prores_profile) and (width % 2 or height % 2):
        raise _EncodeFailed(
            f"could not encode {fmt} (width {width} and height {height} must both be even for {name} "
            f"with {pix_fmt(fmt, settings.prores_profile)})",
            "use an even width and height, or another format",
        )
    with _metadata_file(settings.provenance) as metadata:
        try:
            cmd = encode_command(fmt, path, width, height, fps=fps or settings.playback_fps, crf=settings.crf,
                                 prores_profile=settings.prores_profile, metadata=metadata)
        except RuntimeError as exc:  # imageio-ffmpeg found no ffmpeg binary
            raise _EncodeFailed(
                f"could not encode {fmt} ({exc})", "reinstall it: pip install --force-reinstall imageio-ffmpeg"
            ) from exc
        data = np.ascontiguousarray(frames).data.cast("B")
        # ffmpeg is run directly rather than through imageio_ffmpeg.write_frames: write_frames leaves
        # ffmpeg's stderr on our terminal and ignores its exit status, so a failure while writing the
        # trailer (disk full during the +faststart rewrite) would publish a broken file silently.
        # Feeding the raw frames ourselves also means no macro_block_size rescale can ever happen.
        proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        detail = lines[-1] if lines else "no error output"
        # ffmpeg names the errno early ("Could not write header: No space left on device") and often
        # ends on something vaguer ("Nothing was written into output file").
        raise _EncodeFailed(f"could not encode {fmt} (ffmpeg exited with status {proc.returncode}: {detail})",
                            "check the ffmpeg message above and the output folder", errno_named_in(text))


@contextmanager
def _metadata_file(provenance: str) -> Iterator[str | None]:
    """The provenance as an ffmetadata file in the local temporary folder, for ffmpeg to read (None
    when there is none); removed afterwards."""
    if not provenance:
        yield None
        return
    with _reporting("the provenance for ffmpeg", tempfile.gettempdir(), scratch=True):
        fd, path = tempfile.mkstemp(prefix="svdflow-", suffix=".ffmetadata")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(ffmetadata(provenance))
        except BaseException:
            os.unlink(path)
            raise
    try:
        yield path
    finally:
        os.unlink(path)


def encode_video(frames: np.ndarray, path: str, fmt: str, settings: EncodeSettings) -> None:
    """Encode mp4, hevc, prores or webm to a local path (not atomic; `write_outputs` adds that).

    The provenance is stored as the container's comment tag (`svdflow.outputs.provenance` reads it).
    """
    _check_frames(frames)
    settings.check()
    if fmt not in VIDEO_FORMATS:
        raise ValueError(f"not a video format: {fmt!r}; expected one of {', '.join(VIDEO_FORMATS)}")
    with _reporting(path, os.path.dirname(path)):
        _encode_video(frames, path, fmt=fmt, settings=settings)


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


def _encode_gif(frames: np.ndarray, path: str, *, settings: EncodeSettings) -> None:
    palette = _gif_palette(frames)
    # No dithering: error diffusion differs from frame to frame, which shows as crawling noise in
    # an animation and nearly doubles the file size.
    images = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in _pil_frames(frames)]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=frame_delays(len(images), settings.playback_fps, GIF_DELAY_UNIT_MS),
        # Given the palette, Pillow writes it once, as the global colour table; without, it repeats it
        # as a local table in every frame after the first (768 bytes a frame).
        palette=palette.getpalette(),
        loop=0,
        optimize=False,
        **({"comment": settings.provenance.encode("utf-8")} if settings.provenance else {}),
    )


def _encode_webp(frames: np.ndarray, path: str, *, settings: EncodeSettings) -> None:
    images = _pil_frames(frames)
    images[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=frame_delays(len(images), settings.playback_fps, 1),
        loop=0,
        lossless=False,
        quality=WEBP_QUALITY,
        method=WEBP_METHOD,
        **({"xmp": xmp_packet(settings.provenance)} if settings.provenance else {}),
    )


def _png_name(index: int) -> str:
    return f"{index:05d}.png"


def _write_pngs(frames: np.ndarray, folder: str, provenance: str = "") -> None:
    info = None
    if provenance:
        info = PngImagePlugin.PngInfo()
        info.add_itxt(PNG_KEYWORD, provenance, zip=True)
    for index, image in enumerate(_pil_frames(frames)):
        image.save(os.path.join(folder, _png_name(index)), format="PNG", pnginfo=info)


def encode_gif(frames: np.ndarray, path: str, settings: EncodeSettings) -> None:
    """Encode an endlessly looping GIF to a local path (not atomic; `write_outputs` adds that).

    GIF stores delays in hundredths of a second, so at 7 fps the delays run 14, 15, 14, 14, 14, 15, 14
    cs...: each frame ends at its exact time rounded (`frame_delays`), and the clip lasts its exact
    length. Pillow merges consecutive identical frames into one longer frame, so a still video has
    fewer frames.
    """
    _check_frames(frames)
    settings.check()
    with _reporting(path, os.path.dirname(path)):
        _encode_gif(frames, path, settings=settings)


def encode_webp(frames: np.ndarray, path: str, settings: EncodeSettings) -> None:
    """Encode a looping lossy animated WebP to a local path (not atomic; `write_outputs` adds that)."""
    _check_frames(frames)
    settings.check()
    with _reporting(path, os.path.dirname(path)):
        _encode_webp(frames, path, settings=settings)


def write_png_frames(frames: np.ndarray, folder: str, provenance: str = "") -> None:
    """Write 00000.png, 00001.png, ... into an existing local folder (not atomic on its own)."""
    _check_frames(frames)
    with _reporting(folder, os.path.dirname(folder.rstrip("/"))):
        _write_pngs(frames, Location.parse(folder).path, provenance)


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
    if fmt not in SUFFIXES:
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


def _encoder(fmt: str, settings: EncodeSettings) -> Callable[[np.ndarray, str], None]:
    if fmt == "gif":
        return lambda frames, path: _encode_gif(frames, path, settings=settings)
    if fmt == "webp":
        return lambda frames, path: _encode_webp(frames, path, settings=settings)
    return lambda frames, path: _encode_video(frames, path, fmt=fmt, settings=settings)


def _make_out_dir(out_dir: str, root: str, make_root: bool) -> None:
    """Create the folder (the output folder, or one inside it: the masters'); any failure is the store's.
    Without `make_root` a local output folder must be there already: one removed during a run is gone,
    not made again empty (the run's record of the jobs before would be gone with it)."""
    with storing(root, f"creating {_within(out_dir, root)}" if out_dir != root else "creating it"):
        if Location.parse(out_dir).is_local:
            local_root, local_dir = Location.parse(root).path, Location.parse(out_dir).path
            if not make_root and not os.path.isdir(local_root):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), root)
            if os.path.normpath(local_dir) == os.path.normpath(local_root):
                os.makedirs(local_dir, exist_ok=True)  # the output folder itself may be a link: the user chose it
            else:  # one inside it (the masters'): made part by part, never through a link
                os.makedirs(local_root, exist_ok=True)
                real_folder(local_root, os.path.relpath(local_dir, local_root))
        else:
            fs, rpath = fsspec.core.url_to_fs(out_dir)
            fs.makedirs(rpath, exist_ok=True)


def _write_file(frames: np.ndarray, final: str, fmt: str, encode: Callable, root: str) -> WrittenOutput:
    if Location.parse(final).is_local:
        with _reporting(final, root), atomic_local_path(final, suffix=SUFFIXES[fmt]) as tmp:
            encode(frames, tmp)
            sha, size = _sha256_file(tmp)
        return WrittenOutput(fmt, final, sha, size)
    # Encoded locally first (ffmpeg and Pillow write files), then uploaded.
    with _reporting(final, root, scratch=True), tempfile.TemporaryDirectory(prefix="svdflow-") as scratch:
        tmp = os.path.join(scratch, "out" + SUFFIXES[fmt])
        encode(frames, tmp)
        sha, size = _sha256_file(tmp)
        with storing(root, f"uploading {_within(final, root)}"):
            publish_local_file(tmp, final)
    return WrittenOutput(fmt, final, sha, size)


def _write_frames(frames: np.ndarray, final: str, provenance: str, root: str) -> WrittenOutput:
    if Location.parse(final).is_local:
        with _reporting(final, root), atomic_local_dir(final) as tmp:
            _write_pngs(frames, tmp, provenance)
            sha, size = _sha256_frames(_local_png_items(tmp))
        return WrittenOutput("frames", final, sha, size)
    with _reporting(final, root, scratch=True), tempfile.TemporaryDirectory(prefix="svdflow-") as scratch:
        tmp = os.path.join(scratch, "frames")
        os.mkdir(tmp)
        _write_pngs(frames, tmp, provenance)
        sha, size = _sha256_frames(_local_png_items(tmp))
        with storing(root, f"uploading {_within(final, root)}"):
            publish_local_dir(tmp, final)
    return WrittenOutput("frames", final, sha, size)


def write_file(frames: np.ndarray, folder: str, name: str, fmt: str, settings: EncodeSettings,
               fps=None, root: str | None = None, make_root: bool = True) -> WrittenOutput:
    """Encode `<folder>/<name>` (local or fsspec URL) in a video format or as a `master`, atomically;
    `fps` overrides the settings' playback rate. `root`: the output folder `folder` is in (default:
    `folder`), which an OutputStoreError names; `make_root`: create it if it is not there."""
    if fmt not in (*VIDEO_FORMATS, "master"):
        raise ValueError(f"not a video format: {fmt!r}")
    root = root or folder
    _make_out_dir(folder, root, make_root)

    def encode(frames: np.ndarray, path: str) -> None:
        _encode_video(frames, path, fmt=fmt, settings=settings, fps=fps)

    return _write_file(frames, _join(folder, name), fmt, encode, root)


def write_outputs(
    frames: np.ndarray,
    out_dir: str,
    job_id: str,
    formats: Sequence[str],
    *,
    playback_fps: float,
    crf: int = 18,
    prores_profile: str = "hq",
    provenance: str = "",
    make_folder: bool = True,
) -> list[WrittenOutput]:
    """Encode `frames` (uint8, T×H×W×3) in each format into `out_dir` (local or fsspec URL), each file
    carrying `provenance` (the job's JSON; "" for none). `make_folder`: create `out_dir` if it is not
    there (a run's folder was made when the run began: if it is gone, that is an OutputStoreError).

    Each output replaces any previous one atomically: readers see the old file or the new one,
    never a partial one. Raises OutputStoreError when the output folder fails (disk full, read-only,
    gone, a remote store not answering), OutputWriteError naming the output and the fix when the job's
    own files cannot be encoded or written; outputs finished before the failure stay in place.
    """
    _check_frames(frames)
    settings = EncodeSettings(playback_fps=playback_fps, crf=crf, prores_profile=prores_profile,
                              provenance=provenance)
    settings.check()
    if isinstance(formats, str):
        raise ValueError(f"formats must be a sequence of format names, got the string {formats!r}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s) {unknown}; expected some of {', '.join(FORMATS)}")
    if len(set(formats)) != len(formats):
        raise ValueError(f"formats must not repeat, got {list(formats)}")

    _make_out_dir(out_dir, out_dir, make_folder)
    written = []
    for fmt in formats:
        final = output_path(out_dir, job_id, fmt)
        if fmt == "frames":
            written.append(_write_frames(frames, final, provenance, out_dir))
        else:
            written.append(_write_file(frames, final, fmt, _encoder(fmt, settings), out_dir))
    return written
