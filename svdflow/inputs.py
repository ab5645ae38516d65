"""Fetch, decode and resize one job's input image.

Every failure is an `InputError` whose message starts with the URI as the manifest gave it, names
the bad value and says what to do: a failed input fails its job, and the message is all the user
sees in the index.
"""

from __future__ import annotations

import asyncio
import hashlib
import http
import importlib.util
import io
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import fsspec.asyn
import fsspec.core
from PIL import Image, ImageOps, UnidentifiedImageError

from svdflow.errors import InputError, InputTooLarge, SvdflowError
from svdflow.locations import Location, protocol_refusal

MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_INPUT_PIXELS = 64_000_000
MIN_INPUT_SIDE = 16

RESIZE_POLICIES = ("crop", "stretch", "pad")

# Formats whose Pillow decoders are self-contained. Pillow can open more (EPS, for one, shells out
# to Ghostscript), which is not something an image URL from a manifest should be able to trigger.
_ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

# Protocols served by an optional package: (module to import, svdflow extra that installs it).
_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "hf": ("huggingface_hub", "hf"),
}

_HTTP_PROTOCOLS = ("http", "https")
_LOCAL_PROTOCOLS = ("file", "local")
_TRANSIENT_HTTP_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LoadedInput:
    """A job's input image, ready for the pipeline, with what the index records about it."""

    uri: str
    sha256: str
    image: Image.Image
    source_size: tuple[int, int]


class _Transient(Exception):
    """A failure that may go away on its own; its text is used if every attempt fails."""

    def __init__(self, what: str, reason: str | None, fix: str):
        super().__init__(what)
        self.what = what
        self.reason = reason
        self.fix = fix

    def message(self, uri: str, attempts: int) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return f"{uri}: {self.what} after {tries}{reason}; {self.fix}"


# ---------------------------------------------------------------------------------------------
# Protocols and extras


def _protocol(uri: str) -> str:
    """Where the bytes live: the innermost protocol (s3 for simplecache::s3://...), file for paths."""
    return Location.parse(uri).protocol


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_extra_for(uri: str) -> str | None:
    """The svdflow extra that `uri` needs and that is not installed, or None."""
    module_and_extra = _EXTRAS.get(_protocol(uri))
    if module_and_extra is None:
        return None
    module, extra = module_and_extra
    return None if _importable(module) else extra


def _missing_extra_message(uri: str, extra: str) -> str:
    protocol = _protocol(uri)
    module = _EXTRAS[protocol][0]
    return (
        f"{uri}: reading {protocol}:// URLs needs {module}; install it with: pip install 'svdflow[{extra}]'"
    )


# ---------------------------------------------------------------------------------------------
# Fetching


def fetch_bytes(
    uri: str,
    *,
    timeout_s: float = 30.0,
    retries: int = 3,
    backoff_s: float = 0.5,
    max_bytes: int = MAX_INPUT_BYTES,
) -> bytes:
    """The exact bytes at `uri`, at most `max_bytes` of them.

    `retries` is the number of attempts in all (at least one is always made); only transient
    failures (connection errors, timeouts, HTTP 429/500/502/503/504) are tried again, waiting
    `backoff_s`, then twice that, and so on between attempts.

    Whatever goes wrong is an `InputError` (this input's failure, never the run's): the URI may
    come from someone else's manifest, table or index, and a filesystem of fsspec can fail in its
    own ways (a TypeError, a library's own ConnectionError). A URL whose protocol svdflow does not
    open is refused before anything is opened.
    """
    if (refused := protocol_refusal(uri)) is not None:
        raise InputError(refused)
    extra = missing_extra_for(uri)
    if extra is not None:
        raise InputError(_missing_extra_message(uri, extra))
    attempts = max(1, retries)
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(uri, timeout_s=timeout_s, max_bytes=max_bytes)
        except _Transient as failure:
            if attempt == attempts:
                raise InputError(failure.message(uri, attempts)) from failure
            time.sleep(backoff_s * 2 ** (attempt - 1))
        except SvdflowError:
            raise
        except Exception as exc:  # noqa: BLE001 (see the docstring)
            raise InputError(f"{uri}: could not be read ({_failure(exc)}); check the URL") from exc
    raise AssertionError("unreachable: the last attempt returns or raises")


def _failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fetch_once(uri: str, *, timeout_s: float, max_bytes: int) -> bytes:
    location = Location.parse(uri)
    if location.is_local:
        with open_local(uri, location.path, max_bytes) as f:
            return _read_capped(f.read, uri, max_bytes)
    if location.protocols in {(p,) for p in _HTTP_PROTOCOLS}:  # chained ones go through fsspec
        return _fetch_http(uri, timeout_s=timeout_s, max_bytes=max_bytes)
    return _fetch_fsspec(uri, max_bytes=max_bytes)


_NOT_REGULAR = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
                stat.S_IFSOCK: "a socket"}


def open_local(uri: str, path: str, max_bytes: int, what: str = "an image file") -> io.BufferedReader:
    """The local file at `path` opened for reading, once it is known to be a regular file of at most
    `max_bytes` (`what`: what it should be, for the message). Opened without blocking first: opening
    a FIFO to read waits for a writer, forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(uri, exc, what) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{uri}: is a folder, not a file; point to {what}")
        if not stat.S_ISREG(info.st_mode):
            kind = _NOT_REGULAR.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise InputError(f"{uri}: is {kind}, not a file; point to {what}")
        if info.st_size > max_bytes:
            raise _too_large(uri, max_bytes, info.st_size)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _too_large(uri: str, max_bytes: int, size: int | None = None) -> InputTooLarge:
    known = f" ({size} bytes)" if size is not None else ""
    return InputTooLarge(f"{uri}: larger than the {max_bytes}-byte limit{known}; use a smaller image", size, max_bytes)


def _read_capped(read: Callable[[int], bytes], uri: str, max_bytes: int) -> bytes:
    # Reading one byte past the cap is how an oversize file is told apart from one exactly at it,
    # without downloading the rest.
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        chunk = read(min(_CHUNK_BYTES, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise _too_large(uri, max_bytes)
    return b"".join(chunks)


def _fetch_fsspec(uri: str, *, max_bytes: int) -> bytes:
    try:
        fs, path = _filesystem_for(uri)  # some filesystems connect here (ftp, sftp)
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise _too_large(uri, max_bytes, size)
        with fs.open(path, "rb") as f:
            return _read_capped(f.read, uri, max_bytes)
    except (ConnectionError, TimeoutError, asyncio.TimeoutError) as exc:
        raise _Transient(
            "could not read", str(exc) or type(exc).__name__, "check the network and try again"
        ) from exc
    except OSError as exc:
        raise _unreadable(uri, exc, "an image file", str(exc)) from exc


def _unreadable(uri: str, exc: OSError, what: str, detail: str | None = None) -> InputError:
    """The InputError of a file that could not be opened or read (`detail`: the cause in the message)."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return InputError(_not_found_message(uri))
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{uri}: is a folder, not a file; point to {what}")
    if isinstance(exc, PermissionError):
        return InputError(f"{uri}: permission denied; check that the file is readable")
    return InputError(f"{uri}: could not read ({detail or exc.strerror}); check the file and try again")


def _filesystem_for(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    protocol = _protocol(uri)
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        raise InputError(
            f"{uri}: reading {protocol}:// URLs needs a package that is not installed ({exc}); "
            "install it and try again"
        ) from exc
    except ValueError as exc:
        raise InputError(
            f"{uri}: unsupported URL scheme '{protocol}://'; use a local path or a "
            "file://, http(s)://, s3://, gs://, hf:// or memory:// URL"
        ) from exc


def _not_found_message(uri: str) -> str:
    if _protocol(uri) in _LOCAL_PROTOCOLS:
        return f"{uri}: file not found; check the path (relative paths are resolved against the manifest's folder)"
    return f"{uri}: not found; check the URL"


def _http_filesystem(timeout_s: float) -> fsspec.AbstractFileSystem:
    import aiohttp  # only for http(s) inputs: it costs ~0.3 s of start-up that `plan` need not pay

    # fsspec caches one instance per set of options, so jobs with the same timeout share one
    # aiohttp session (and its connection pool) instead of opening one per image.
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    return fsspec.filesystem("http", client_kwargs={"timeout": timeout})


def _fetch_http(uri: str, *, timeout_s: float, max_bytes: int) -> bytes:
    import aiohttp

    fs = _http_filesystem(timeout_s)
    try:
        status, reason, body = fsspec.asyn.sync(fs.loop, _get_capped, fs, uri, max_bytes)
    except (TimeoutError, asyncio.TimeoutError) as exc:
        raise _Transient(
            "timed out",
            f"no response within {timeout_s:g} s",
            "check that the server is up, or try again later",
        ) from exc
    except aiohttp.ClientConnectorError as exc:
        raise _Transient(
            "could not connect", _connect_reason(exc), "check that the server is up and the URL is right"
        ) from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise _Transient(
            "connection failed", str(exc) or type(exc).__name__, "check the network and try again"
        ) from exc
    except aiohttp.InvalidURL as exc:
        raise InputError(f"{uri}: not a valid URL; check the URL") from exc
    except aiohttp.ClientError as exc:
        raise InputError(f"{uri}: request failed ({exc}); check the URL") from exc
    if body is None:
        _raise_for_status(uri, status, reason)
    return body


async def _get_capped(fs, uri: str, max_bytes: int) -> tuple[int, str, bytes | None]:
    # A plain streaming GET on fsspec's session rather than fs.open(): fs.open() first probes the
    # size with HEAD (and GET), and folds every failure, 503 included, into FileNotFoundError,
    # which would make transient errors look permanent.
    session = await fs.set_session()
    async with session.get(fs.encode_url(uri)) as response:
        reason = response.reason or _status_phrase(response.status)
        if response.status >= 400:
            return response.status, reason, None
        declared = response.content_length
        if declared is not None and declared > max_bytes:
            response.close()  # drop the connection instead of draining a body we will not use
            raise _too_large(uri, max_bytes, declared)
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = await response.content.read(min(_CHUNK_BYTES, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            response.close()
            raise _too_large(uri, max_bytes)
        return response.status, reason, b"".join(chunks)


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _raise_for_status(uri: str, status: int, reason: str) -> None:
    what = f"HTTP {status} {reason}"
    if status == 429:
        raise _Transient(what, None, "the server is limiting requests, try again later")
    if status in _TRANSIENT_HTTP_STATUS:
        raise _Transient(what, None, "the server is failing, try again later")
    if status in (401, 403):
        raise InputError(f"{uri}: {what}; check the URL and that the image is readable without credentials")
    raise InputError(f"{uri}: {what}; check the URL")


def _connect_reason(exc) -> str:
    # asyncio words a refused connection as "Connect call failed (host, port)"; the errno's own
    # text ("Connection refused") is what users recognise.
    os_error = exc.os_error
    if isinstance(os_error, socket.gaierror):
        return os_error.strerror or str(os_error)
    if os_error.errno:
        return os.strerror(os_error.errno)
    return str(os_error) or type(os_error).__name__


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_image(data: bytes, uri: str) -> Image.Image:
    """`data` as an RGB image, turned upright according to its EXIF orientation."""
    image = _open_checked(data, uri)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{uri}: image data is truncated or corrupt ({exc}); re-export the file") from exc
    _check_min_side(image, uri)
    return _to_rgb(image)


def _open_checked(data: bytes, uri: str) -> Image.Image:
    # Image.open reads only the header, so the pixel limit is enforced before anything is decoded.
    try:
        image = Image.open(io.BytesIO(data), formats=_ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        raise InputError(
            f"{uri}: not a readable image (cannot identify image file); "
            "check that the file is a PNG, JPEG or WebP image"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses (or, with warnings as errors, warns about) very large images before we
        # see their size; its message carries the pixel count.
        raise InputError(
            f"{uri}: image is {_bomb_pixels(exc)}, over the {_pixel_limit()}-pixel limit; downscale it first"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{uri}: image data is truncated or corrupt ({exc}); re-export the file") from exc
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        raise InputError(
            f"{uri}: image is {width}x{height} pixels, over the {MAX_INPUT_PIXELS}-pixel limit; downscale it first"
        )
    return image


def _pixel_limit() -> int:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return MAX_INPUT_PIXELS if pillow_limit is None else min(MAX_INPUT_PIXELS, 2 * pillow_limit)


def _bomb_pixels(exc: Exception) -> str:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{match.group(1)} pixels" if match else "too many pixels"


def _check_min_side(image: Image.Image, uri: str) -> None:
    width, height = image.size
    if min(width, height) < MIN_INPUT_SIDE:
        raise InputError(
            f"{uri}: image is {width}x{height} pixels, smaller than the {MIN_INPUT_SIDE}-pixel minimum side; "
            "use a larger image"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "I" or image.mode.startswith("I;16"):
        return _sixteen_bit_to_rgb(image)
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        return _flatten_on_white(image)
    return image.convert("RGB")


def _flatten_on_white(image: Image.Image) -> Image.Image:
    # White, not black: transparent areas of logos and cut-outs are meant to be seen on a light
    # page, and dropping alpha would instead reveal whatever colour the hidden pixels happen to hold.
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's own conversion clips 16-bit values at 255, which turns most of a 16-bit PNG white;
    # scaling keeps the tones. Mode "I" is treated as 16-bit because that is how Pillow loads
    # 16-bit PNGs and TIFFs.
    import numpy as np

    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    eight_bit = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(eight_bit).convert("RGB")


# ---------------------------------------------------------------------------------------------
# Resizing


def _resize_problem(width: int, height: int, policy: str) -> str | None:
    if policy not in RESIZE_POLICIES:
        return f"resize policy {policy!r} is not one of crop, stretch, pad; use one of those"
    if width < 1 or height < 1:
        return f"target size {width}x{height} is not positive; use a width and height of at least 1"
    return None


def resize_image(image: Image.Image, width: int, height: int, policy: str) -> Image.Image:
    """`image` at exactly (width, height): `crop` center-crops to the target aspect ratio first,
    `stretch` ignores the aspect ratio, `pad` fits the whole image and fills the rest with black."""
    problem = _resize_problem(width, height, policy)
    if problem is not None:
        raise InputError(problem)
    size = (width, height)
    if policy == "crop":
        return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    if policy == "stretch":
        return image.resize(size, Image.Resampling.LANCZOS)
    return ImageOps.pad(image, size, method=Image.Resampling.LANCZOS, color=(0, 0, 0), centering=(0.5, 0.5))


def load_input(uri: str, width: int, height: int, resize: str, **fetch_kwargs) -> LoadedInput:
    """Fetch, decode and resize the image at `uri`; `fetch_kwargs` go to `fetch_bytes`."""
    # Checked before fetching so that a bad setting does not cost a download first.
    problem = _resize_problem(width, height, resize)
    if problem is not None:
        raise InputError(f"{uri}: {problem}")
    data = fetch_bytes(uri, **fetch_kwargs)
    try:
        image = decode_image(data, uri)
        resized = resize_image(image, width, height, resize)
    except SvdflowError:
        raise
    except Exception as exc:  # noqa: BLE001 (a decoder's own failure on hostile bytes: this input's only)
        raise InputError(f"{uri}: image data could not be decoded ({_failure(exc)}); re-export the file") from exc
    return LoadedInput(uri=uri, sha256=hashlib.sha256(data).hexdigest(), image=resized, source_size=image.size)
