"""The report's own images, under `<output folder>/report/`: input thumbnails and first-frame posters.

They live inside the output folder so the page keeps working when the folder is zipped or synced
elsewhere; every function here returns paths relative to that folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import re

from PIL import Image

from svdflow.errors import InputError
from svdflow.outputs.atomic import atomic_write_bytes, real_folder
from svdflow.outputs.entry import OutputFile

ASSETS_DIR = "report"
INPUTS_DIR = f"{ASSETS_DIR}/inputs"
POSTERS_DIR = f"{ASSETS_DIR}/posters"
ASSET_DIRS = (POSTERS_DIR, INPUTS_DIR)
INPUT_THUMB_SIDE = 320
POSTER_SIDE = 640
# Remote inputs are fetched once per report (then cached by content hash); a slow server should
# cost a placeholder, not a hung report.
FETCH_TIMEOUT_S = 15.0
FETCH_RETRIES = 2
# Cheapest source of a first frame first: a PNG needs no video decoder, an animated image only Pillow.
POSTER_SOURCES = ("frames", "webp", "gif", "mp4", "webm", "hevc", "prores")
VIDEO_FORMATS = ("mp4", "webm", "hevc", "prores")  # read with ffmpeg

_SHA256 = re.compile(r"[0-9a-f]{64}")


def make_asset_dirs(root: str) -> None:
    """The report's folders, never through a link (LinkInFolder): their old images are deleted here."""
    for sub in ASSET_DIRS:
        real_folder(root, sub)


def input_thumbnail(root: str, uri: str, recorded_sha: str | None) -> tuple[str | None, str | None]:
    """(relative path of the input's thumbnail, note), or (None, why there is none)."""
    from svdflow.inputs import decode_image, fetch_bytes

    # Thumbnails are named by the input's content hash, so a recorded hash finds its thumbnail
    # without fetching the input again: rerunning the report on a big remote campaign is cheap.
    if recorded_sha and _SHA256.fullmatch(recorded_sha):
        cached = f"{INPUTS_DIR}/{recorded_sha[:20]}.jpg"
        if os.path.isfile(os.path.join(root, cached)):
            return cached, None
    try:
        data = fetch_bytes(uri, timeout_s=FETCH_TIMEOUT_S, retries=FETCH_RETRIES)
        image = decode_image(data, uri)
    except InputError as exc:
        return None, str(exc)
    except Exception as exc:  # a broken input is shown as a placeholder, never fails the report
        return None, f"{uri}: could not be read ({type(exc).__name__}: {exc})"
    sha = hashlib.sha256(data).hexdigest()
    thumb = f"{INPUTS_DIR}/{sha[:20]}.jpg"
    _write_jpeg(os.path.join(root, thumb), image, INPUT_THUMB_SIDE)
    note = None
    if recorded_sha and sha != recorded_sha:
        note = "the input has changed since this job was rendered; this is the current image"
    return thumb, note


def poster(root: str, outputs: list[OutputFile], stem: str) -> tuple[str | None, str | None]:
    """(relative path of the first-frame poster `<stem>.jpg`, None), or (None, why there is none).

    `outputs` are files known to be in the folder; with none that holds frames there is no poster
    and nothing to say.
    """
    by_format: dict[str, OutputFile] = {}
    for output in outputs:
        by_format.setdefault(output.format, output)
    sources = [by_format[fmt] for fmt in POSTER_SOURCES if fmt in by_format]
    if not sources:
        return None, None
    relative = f"{POSTERS_DIR}/{stem}.jpg"
    path = os.path.join(root, relative)
    reasons = []
    for source in sources:
        source_path = os.path.join(root, source.file)
        if _is_fresh(path, source_path):
            return relative, None
        try:
            frame = _first_frame(source_path, source.format)
        except Exception as exc:
            reasons.append(f"{source.file}: {type(exc).__name__}: {exc}")
            continue
        _write_jpeg(path, frame, POSTER_SIDE)
        return relative, None
    return None, "no first frame could be read (" + "; ".join(reasons) + ")"


def remove_unused_assets(root: str, listed: dict[str, set[str]], used: set[str | None]) -> None:
    """Drop thumbnails and posters not in `used` (their jobs left the index). `listed`: the names in
    each of ASSET_DIRS, as this report listed them before it made its own (those are all used)."""
    for sub in ASSET_DIRS:
        real_folder(root, sub, create=False)
        for name in listed[sub]:
            if name.endswith(".jpg") and not name.startswith(".") and f"{sub}/{name}" not in used:
                try:
                    os.remove(os.path.join(root, sub, name))
                except OSError:
                    pass


def _is_fresh(derived: str, source: str) -> bool:
    try:
        return os.stat(derived).st_mtime >= os.stat(source).st_mtime
    except OSError:
        return False


def _first_frame(path: str, fmt: str) -> Image.Image:
    if fmt == "frames":
        names = sorted(n for n in os.listdir(path) if n.endswith(".png") and not n.startswith("."))
        if not names:
            raise FileNotFoundError("no PNG frames in the folder")
        with Image.open(os.path.join(path, names[0])) as image:
            return image.convert("RGB")
    if fmt in VIDEO_FORMATS:
        import imageio_ffmpeg

        frames = imageio_ffmpeg.read_frames(path)
        try:
            meta = next(frames)
            first = next(frames)
        finally:
            frames.close()  # stops ffmpeg: only the first frame is needed
        return Image.frombytes("RGB", tuple(meta["size"]), first)
    with Image.open(path) as image:
        image.seek(0)
        return image.convert("RGB")


def _write_jpeg(path: str, image: Image.Image, side: int) -> None:
    image = image.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, optimize=True)
    atomic_write_bytes(path, buffer.getvalue())
