"""svdflow.inputs against real files, fsspec's memory filesystem and a loopback HTTP server."""

from __future__ import annotations

import collections
import hashlib
import io
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fsspec
import numpy as np
import pytest
from PIL import Image

from svdflow import inputs
from svdflow.errors import InputError

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

FAST = {"backoff_s": 0.01}


# ---------------------------------------------------------------------------------------------
# Image helpers


def encode(image: Image.Image, fmt: str = "PNG", **save_kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **save_kwargs)
    return buf.getvalue()


def solid(size: tuple[int, int], color=GREEN) -> Image.Image:
    return Image.new("RGB", size, color)


def banded(
    size: tuple[int, int], bands: list[tuple[float, float, tuple[int, int, int]]], axis: str
) -> Image.Image:
    """A green image with bands of colour between fractions of its width (axis x) or height (y)."""
    width, height = size
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:] = GREEN
    for start, stop, color in bands:
        if axis == "x":
            arr[:, int(start * width) : int(stop * width)] = color
        else:
            arr[int(start * height) : int(stop * height), :] = color
    return Image.fromarray(arr)


def noise_png(size=(64, 64)) -> bytes:
    # Random pixels do not compress, so cutting the file in half really cuts the pixel data.
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)))


def png_header_only(width: int, height: int) -> bytes:
    """A 1-bit PNG that declares (width, height) but carries no pixels: a decompression bomb's
    header, made without allocating the image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def pillow_load_error(data: bytes) -> str:
    """What Pillow itself says when loading `data`; the message must quote it."""
    try:
        Image.open(io.BytesIO(data)).load()
    except OSError as exc:
        return str(exc)
    raise AssertionError("expected Pillow to fail")


def close_to(pixel, color, tolerance=12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, color, strict=True))


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Loopback HTTP server

GOOD_PNG = encode(banded((64, 32), [(0, 0.5, RED), (0.5, 1, BLUE)], "x"))
CUT_PNG = noise_png()[:600]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def handle(self):
        # The client is expected to hang up on slow or oversize responses.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        hits = self.server.hits
        hits[self.path] += 1
        route = getattr(self, "route_" + self.path.strip("/").replace(".", "_").replace("-", "_"), None)
        if route is None:
            self.send_error(404)
        else:
            route(hits[self.path])

    def reply(self, body: bytes, status: int = 200, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "image/png")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def route_good_png(self, hit):
        self.reply(GOOD_PNG, length=len(GOOD_PNG))

    def route_forbidden_png(self, hit):
        self.send_error(403)

    def route_flaky_png(self, hit):
        if hit < 3:
            self.send_error(503)
        else:
            self.reply(GOOD_PNG, length=len(GOOD_PNG))

    def route_down_png(self, hit):
        self.send_error(503)

    def route_busy_png(self, hit):
        self.send_error(429)

    def route_slow_png(self, hit):
        time.sleep(1.0)
        self.reply(GOOD_PNG, length=len(GOOD_PNG))

    def route_big_declared_png(self, hit):
        # Declares a huge body, then stalls: only a client that trusts Content-Length fails fast
        # with the size error; one that starts reading would time out instead.
        self.reply(b"\x89PNG", length=10_000_000_000)
        self.wfile.flush()
        time.sleep(2.0)

    def route_big_streamed_png(self, hit):
        # No Content-Length: the body ends when the connection closes. 2048 bytes then a stall,
        # so a client that does not stop at its cap times out instead of reporting the size.
        self.reply(b"\0" * 2048)
        self.wfile.flush()
        time.sleep(2.0)
        self.wfile.write(b"\0" * 2048)

    def route_exact_png(self, hit):
        self.reply(b"\0" * 1024)

    def route_cut_png(self, hit):
        self.reply(CUT_PNG, length=len(CUT_PNG))

    def route_notes_png(self, hit):
        body = b"these are notes, not pixels\n"
        self.reply(body, length=len(body))


class Server:
    def __init__(self, httpd: ThreadingHTTPServer):
        self.httpd = httpd
        self.hits: collections.Counter[str] = httpd.hits

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.hits = collections.Counter()
    # A short poll interval keeps shutdown() from adding half a second to every test.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Fetching over HTTP


def test_http_fetch_returns_exact_bytes(server):
    assert inputs.fetch_bytes(server.url("good.png"), **FAST) == GOOD_PNG
    assert server.hits["/good.png"] == 1


def test_http_404_fails_at_once(server):
    url = server.url("missing.png")
    assert error_of(inputs.fetch_bytes, url, **FAST) == f"{url}: HTTP 404 Not Found; check the URL"
    assert server.hits["/missing.png"] == 1


def test_http_403_fails_at_once(server):
    url = server.url("forbidden.png")
    assert error_of(inputs.fetch_bytes, url, **FAST) == (
        f"{url}: HTTP 403 Forbidden; check the URL and that the image is readable without credentials"
    )
    assert server.hits["/forbidden.png"] == 1


def test_http_503_is_retried_until_it_succeeds(server):
    assert inputs.fetch_bytes(server.url("flaky.png"), retries=3, **FAST) == GOOD_PNG
    assert server.hits["/flaky.png"] == 3


def test_http_503_that_persists_fails_after_all_attempts(server):
    url = server.url("down.png")
    assert error_of(inputs.fetch_bytes, url, retries=3, **FAST) == (
        f"{url}: HTTP 503 Service Unavailable after 3 attempts; the server is failing, try again later"
    )
    assert server.hits["/down.png"] == 3


def test_http_429_is_retried(server):
    url = server.url("busy.png")
    assert error_of(inputs.fetch_bytes, url, retries=2, **FAST) == (
        f"{url}: HTTP 429 Too Many Requests after 2 attempts; the server is limiting requests, try again later"
    )
    assert server.hits["/busy.png"] == 2


def test_http_timeout_is_retried_then_reported(server):
    url = server.url("slow.png")
    started = time.monotonic()
    message = error_of(inputs.fetch_bytes, url, timeout_s=0.2, retries=2, **FAST)
    assert message == (
        f"{url}: timed out after 2 attempts (no response within 0.2 s); "
        "check that the server is up, or try again later"
    )
    assert server.hits["/slow.png"] == 2
    assert time.monotonic() - started < 1.5


def test_connection_refused_is_retried_then_reported():
    url = f"http://127.0.0.1:{free_port()}/a.png"
    message = error_of(inputs.fetch_bytes, url, retries=3, **FAST)
    # The reason between the parentheses is the platform's wording of ECONNREFUSED.
    assert message.startswith(f"{url}: could not connect after 3 attempts (")
    assert message.endswith("); check that the server is up and the URL is right")


def test_invalid_http_url_fails_at_once():
    assert (
        error_of(inputs.fetch_bytes, "http:///a.png", **FAST)
        == "http:///a.png: not a valid URL; check the URL"
    )


def test_one_attempt_is_worded_in_the_singular():
    url = f"http://127.0.0.1:{free_port()}/a.png"
    assert error_of(inputs.fetch_bytes, url, retries=1, **FAST).startswith(
        f"{url}: could not connect after 1 attempt ("
    )


def test_oversize_download_with_content_length_is_refused_from_the_header(server):
    url = server.url("big-declared.png")
    assert error_of(inputs.fetch_bytes, url, max_bytes=1024, timeout_s=1.0, **FAST) == (
        f"{url}: larger than the 1024-byte limit (10000000000 bytes); use a smaller image"
    )
    assert server.hits["/big-declared.png"] == 1


def test_oversize_download_without_content_length_is_cut_off(server):
    url = server.url("big-streamed.png")
    assert error_of(inputs.fetch_bytes, url, max_bytes=1024, timeout_s=1.0, **FAST) == (
        f"{url}: larger than the 1024-byte limit; use a smaller image"
    )
    assert server.hits["/big-streamed.png"] == 1


def test_download_exactly_at_the_limit_is_accepted(server):
    assert inputs.fetch_bytes(server.url("exact.png"), max_bytes=1024, **FAST) == b"\0" * 1024


def test_truncated_png_over_http(server):
    url = server.url("cut.png")
    assert error_of(inputs.load_input, url, 64, 64, "crop", **FAST) == (
        f"{url}: image data is truncated or corrupt ({pillow_load_error(CUT_PNG)}); re-export the file"
    )


def test_text_file_named_png_over_http(server):
    url = server.url("notes.png")
    assert error_of(inputs.load_input, url, 64, 64, "crop", **FAST) == (
        f"{url}: not a readable image (cannot identify image file); "
        "check that the file is a PNG, JPEG or WebP image"
    )


def test_load_input_over_http(server):
    loaded = inputs.load_input(server.url("good.png"), 32, 16, "stretch", **FAST)
    assert loaded.uri == server.url("good.png")
    assert loaded.sha256 == hashlib.sha256(GOOD_PNG).hexdigest()
    assert loaded.source_size == (64, 32)
    assert loaded.image.size == (32, 16)


def test_bad_resize_policy_fails_before_fetching(server):
    url = server.url("good.png")
    assert error_of(inputs.load_input, url, 64, 64, "zoom", **FAST) == (
        f"{url}: resize policy 'zoom' is not one of crop, stretch, pad; use one of those"
    )
    assert server.hits["/good.png"] == 0


# ---------------------------------------------------------------------------------------------
# Fetching files, file:// and memory://


def test_local_file_sha256_and_source_size(tmp_path):
    data = encode(solid((40, 30)))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    loaded = inputs.load_input(str(path), 20, 10, "crop")
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.source_size == (40, 30)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (20, 10)


def test_file_url(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(GOOD_PNG)
    assert inputs.fetch_bytes(path.as_uri()) == GOOD_PNG


def test_missing_relative_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert error_of(inputs.fetch_bytes, "images/x.png") == (
        "images/x.png: file not found; check the path (relative paths are resolved against the manifest's folder)"
    )


def test_missing_file_url(tmp_path):
    uri = (tmp_path / "x.png").as_uri()
    assert error_of(inputs.fetch_bytes, uri) == (
        f"{uri}: file not found; check the path (relative paths are resolved against the manifest's folder)"
    )


def test_folder_instead_of_file(tmp_path):
    assert (
        error_of(inputs.fetch_bytes, str(tmp_path))
        == f"{tmp_path}: is a folder, not a file; point to an image file"
    )


def test_local_file_over_the_limit(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * 2048)
    assert error_of(inputs.fetch_bytes, str(path), max_bytes=1024) == (
        f"{path}: larger than the 1024-byte limit (2048 bytes); use a smaller image"
    )


def test_memory_round_trip():
    fs = fsspec.filesystem("memory")
    fs.pipe("/svdflow-test-inputs/a.png", GOOD_PNG)
    try:
        loaded = inputs.load_input("memory://svdflow-test-inputs/a.png", 64, 32, "crop")
    finally:
        fs.rm("/svdflow-test-inputs", recursive=True)
    assert loaded.sha256 == hashlib.sha256(GOOD_PNG).hexdigest()
    assert close_to(loaded.image.getpixel((5, 16)), RED)
    assert close_to(loaded.image.getpixel((58, 16)), BLUE)


def test_memory_missing():
    assert error_of(inputs.fetch_bytes, "memory://svdflow-test-inputs/none.png") == (
        "memory://svdflow-test-inputs/none.png: not found; check the URL"
    )


def test_unknown_scheme():
    assert error_of(inputs.fetch_bytes, "foo://bucket/a.png") == (
        "'foo://bucket/a.png' uses the protocol foo, which svdflow does not open; use a local path or a file, http, "
        "https, s3, gs, gcs, az, abfs, hf or memory URL (simplecache, filecache or blockcache may wrap one: "
        "simplecache::s3://...), or, if you trust every manifest, table and index you run, add foo to "
        "SVDFLOW_EXTRA_PROTOCOLS"
    )


def test_a_scheme_fsspec_does_not_know_once_allowed(monkeypatch):
    monkeypatch.setenv("SVDFLOW_EXTRA_PROTOCOLS", "foo")
    assert error_of(inputs.fetch_bytes, "foo://bucket/a.png") == (
        "foo://bucket/a.png: unsupported URL scheme 'foo://'; use a local path or a "
        "file://, http(s)://, s3://, gs://, hf:// or memory:// URL"
    )


# ---------------------------------------------------------------------------------------------
# Optional extras


def test_missing_extra_for_s3(monkeypatch):
    monkeypatch.setattr(inputs, "_importable", lambda module: module != "s3fs")
    assert inputs.missing_extra_for("s3://bucket/a.png") == "s3"
    assert error_of(inputs.fetch_bytes, "s3://bucket/a.png") == (
        "s3://bucket/a.png: reading s3:// URLs needs s3fs; install it with: pip install 'svdflow[s3]'"
    )


def test_missing_extras_for_gcs_and_hf(monkeypatch):
    monkeypatch.setattr(inputs, "_importable", lambda module: False)
    assert inputs.missing_extra_for("gs://bucket/a.png") == "gcs"
    assert inputs.missing_extra_for("gcs://bucket/a.png") == "gcs"
    assert inputs.missing_extra_for("hf://datasets/o/r/a.png") == "hf"
    assert error_of(inputs.fetch_bytes, "gcs://bucket/a.png") == (
        "gcs://bucket/a.png: reading gcs:// URLs needs gcsfs; install it with: pip install 'svdflow[gcs]'"
    )


def test_no_extra_needed(monkeypatch):
    monkeypatch.setattr(inputs, "_importable", lambda module: True)
    assert inputs.missing_extra_for("s3://bucket/a.png") is None
    for uri in ("/abs/a.png", "rel/a.png", "file:///a.png", "http://h/a.png", "memory://a.png"):
        assert inputs.missing_extra_for(uri) is None


# ---------------------------------------------------------------------------------------------
# Decoding


def test_exif_orientation_6_is_applied():
    # Orientation 6 means "rotate 90 degrees clockwise to display": the stored image's left half
    # becomes the top half.
    stored = banded((80, 40), [(0, 0.5, RED), (0.5, 1, BLUE)], "x")
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = inputs.decode_image(encode(stored, "JPEG", exif=exif, quality=95), "rotated.jpg")
    assert decoded.size == (40, 80)
    assert close_to(decoded.getpixel((20, 10)), RED, tolerance=40)
    assert close_to(decoded.getpixel((20, 70)), BLUE, tolerance=40)


def test_rgba_is_flattened_on_white():
    arr = np.zeros((20, 20, 4), dtype=np.uint8)
    arr[:, :10] = (255, 0, 0, 255)
    arr[:, 10:] = (0, 0, 255, 0)  # fully transparent: its colour must not show
    decoded = inputs.decode_image(encode(Image.fromarray(arr, "RGBA")), "a.png")
    assert decoded.mode == "RGB"
    assert decoded.getpixel((2, 2)) == RED
    assert decoded.getpixel((15, 2)) == WHITE


def test_palette_with_and_without_transparency():
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette.paste(2, (10, 0, 20, 20))
    opaque = inputs.decode_image(encode(palette), "p.png")
    assert opaque.mode == "RGB"
    assert opaque.getpixel((2, 2)) == RED
    assert opaque.getpixel((15, 2)) == BLUE
    see_through = inputs.decode_image(encode(palette, transparency=2), "p.png")
    assert see_through.getpixel((2, 2)) == RED
    assert see_through.getpixel((15, 2)) == WHITE


def test_grayscale_is_replicated():
    decoded = inputs.decode_image(encode(Image.new("L", (20, 20), 100)), "l.png")
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (100, 100, 100)


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.tile(np.array([0, 128 * 257, 65535], dtype=np.uint16), (20, 7))
    image = Image.fromarray(arr)
    assert image.mode == "I;16"
    decoded = inputs.decode_image(encode(image), "deep.png")
    assert decoded.mode == "RGB"
    assert [decoded.getpixel((x, 0)) for x in range(3)] == [BLACK, (128, 128, 128), WHITE]


def test_cmyk_jpeg_becomes_rgb():
    decoded = inputs.decode_image(encode(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"), "c.jpg")
    assert decoded.mode == "RGB"
    assert close_to(decoded.getpixel((10, 10)), RED, tolerance=20)


def test_truncated_local_png(tmp_path):
    data = noise_png()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert error_of(inputs.load_input, str(path), 64, 64, "crop") == (
        f"{path}: image data is truncated or corrupt ({pillow_load_error(data[: len(data) // 2])}); "
        "re-export the file"
    )


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    assert error_of(inputs.load_input, str(path), 64, 64, "crop") == (
        f"{path}: not a readable image (cannot identify image file); "
        "check that the file is a PNG, JPEG or WebP image"
    )


def test_one_pixel_image_is_rejected(tmp_path):
    path = tmp_path / "dot.png"
    path.write_bytes(encode(solid((1, 1))))
    assert error_of(inputs.load_input, str(path), 64, 64, "crop") == (
        f"{path}: image is 1x1 pixels, smaller than the 16-pixel minimum side; use a larger image"
    )


def test_thin_image_is_rejected():
    assert error_of(inputs.decode_image, encode(solid((100, 15))), "thin.png") == (
        "thin.png: image is 100x15 pixels, smaller than the 16-pixel minimum side; use a larger image"
    )


def test_image_at_the_minimum_side_is_accepted():
    assert inputs.decode_image(encode(solid((16, 16))), "small.png").size == (16, 16)


def test_decompression_bomb_is_refused_before_decoding():
    assert error_of(inputs.decode_image, png_header_only(9000, 9000), "huge.png") == (
        "huge.png: image is 9000x9000 pixels, over the 64000000-pixel limit; downscale it first"
    )


def test_pixel_limit_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(inputs, "MAX_INPUT_PIXELS", 1000)
    assert error_of(inputs.decode_image, encode(solid((40, 30))), "a.png") == (
        "a.png: image is 40x30 pixels, over the 1000-pixel limit; downscale it first"
    )


def test_bomb_that_pillow_refuses_itself():
    # Past twice Pillow's own limit, Image.open raises before the size can be read.
    assert error_of(inputs.decode_image, png_header_only(20000, 20000), "huge.png") == (
        "huge.png: image is 400000000 pixels, over the 64000000-pixel limit; downscale it first"
    )


# ---------------------------------------------------------------------------------------------
# Resizing


@pytest.mark.parametrize("policy", inputs.RESIZE_POLICIES)
@pytest.mark.parametrize("source", [(333, 100), (100, 333), (64, 64)])
@pytest.mark.parametrize("target", [(1024, 576), (65, 33), (17, 90)])
def test_resize_gives_exact_size(policy, source, target):
    out = inputs.resize_image(solid(source), *target, policy)
    assert out.size == target
    assert out.mode == "RGB"


def test_crop_keeps_the_centre_of_a_wide_image():
    # 2:1 with a red left quarter and a blue right quarter: a square centre crop is all green.
    wide = banded((200, 100), [(0, 0.25, RED), (0.75, 1, BLUE)], "x")
    out = np.asarray(inputs.resize_image(wide, 50, 50, "crop"))
    assert (out[..., 1] > 230).all() and (out[..., 0] < 25).all() and (out[..., 2] < 25).all()


def test_crop_keeps_the_centre_of_a_tall_image():
    tall = banded((100, 200), [(0, 0.25, RED), (0.75, 1, BLUE)], "y")
    out = np.asarray(inputs.resize_image(tall, 64, 64, "crop"))
    assert (out[..., 1] > 230).all() and (out[..., 0] < 25).all() and (out[..., 2] < 25).all()


def test_crop_to_a_wider_aspect_cuts_top_and_bottom():
    # 1:1 to 2:1 keeps rows 25..75 of 100: the red top fifth and blue bottom fifth are cut away.
    square = banded((100, 100), [(0, 0.2, RED), (0.8, 1, BLUE)], "y")
    out = np.asarray(inputs.resize_image(square, 100, 50, "crop"))
    assert (out[..., 1] > 230).all()


def test_stretch_keeps_everything():
    halves = banded((200, 100), [(0, 0.5, RED), (0.5, 1, BLUE)], "x")
    out = inputs.resize_image(halves, 50, 100, "stretch")
    assert close_to(out.getpixel((5, 50)), RED)
    assert close_to(out.getpixel((45, 50)), BLUE)
    assert close_to(out.getpixel((5, 2)), RED) and close_to(out.getpixel((5, 97)), RED)


def test_pad_wide_image_gets_black_bars_top_and_bottom():
    out = inputs.resize_image(solid((200, 100), WHITE), 100, 100, "pad")
    assert out.getpixel((50, 5)) == BLACK
    assert out.getpixel((50, 50)) == WHITE
    assert out.getpixel((50, 94)) == BLACK
    assert out.getpixel((0, 50)) == WHITE and out.getpixel((99, 50)) == WHITE


def test_pad_tall_image_gets_black_bars_left_and_right():
    out = inputs.resize_image(solid((100, 200), WHITE), 100, 50, "pad")
    assert out.getpixel((5, 25)) == BLACK
    assert out.getpixel((50, 25)) == WHITE
    assert out.getpixel((94, 25)) == BLACK
    assert out.getpixel((50, 0)) == WHITE and out.getpixel((50, 49)) == WHITE


def test_resize_rejects_unknown_policy_and_bad_size():
    assert error_of(inputs.resize_image, solid((20, 20)), 10, 10, "zoom") == (
        "resize policy 'zoom' is not one of crop, stretch, pad; use one of those"
    )
    assert error_of(inputs.resize_image, solid((20, 20)), 0, 10, "crop") == (
        "target size 0x10 is not positive; use a width and height of at least 1"
    )
