"""One colour pipeline: every YUV file is BT.709, limited range, and says so; the RGB files stay sRGB.

Checked with the bundled ffmpeg (imageio-ffmpeg ships no ffprobe): the stream's colour description
as ffmpeg reports it from the container and bitstream, each decoded frame's four colour fields
(showinfo), and the decoded luma plane against the frames' BT.709 luma.
"""

from __future__ import annotations

import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svdflow.outputs.writers import write_outputs

# Saturated colours, where the BT.601 and BT.709 matrices differ most, on smooth gradients a lossy
# codec keeps close.
H, W, T = 64, 96, 4
_y, _x = np.mgrid[0:H, 0:W].astype(np.float32)
FRAMES = np.stack([np.stack([(_x / W * 255 + 20 * t) % 256, _y / H * 255, 255 - _x / W * 200], -1)
                   for t in range(T)]).astype(np.uint8)
FIELDS = {"color_range": "tv", "color_space": "bt709", "color_primaries": "bt709", "color_trc": "bt709"}


def luma(frames: np.ndarray, kr: float, kb: float) -> np.ndarray:
    """Limited-range Y' (8-bit codes, unrounded) of sRGB frames by the matrix with these coefficients."""
    rgb = frames.astype(np.float64)
    return 16 + 219 * (kr * rgb[..., 0] + (1 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]) / 255


def ffmpeg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", *args], capture_output=True, check=False)


def stream_line(path: str) -> str:
    """The stream's description, as `ffprobe` would print it (codec parameters from container and bitstream)."""
    err = ffmpeg("-i", path).stderr.decode()
    return next(line for line in err.splitlines() if "Video:" in line).strip()


def frame_fields(path: str) -> list[dict[str, str]]:
    """Each decoded frame's colour fields (showinfo prints range, matrix, primaries and transfer)."""
    err = ffmpeg("-i", path, "-vf", "showinfo", "-f", "null", "-").stderr.decode()
    return [dict(re.findall(r"(color_\w+):(\w+)", line)) for line in err.splitlines() if "color_range:" in line]


def decoded_luma(path: str, pix_fmt: str) -> np.ndarray:
    """The decoded Y plane in 8-bit codes, read as the stream stores it (no conversion)."""
    raw = ffmpeg("-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", pix_fmt, "-").stdout
    ten_bit = pix_fmt.endswith("10le")
    planes = np.frombuffer(raw, "<u2" if ten_bit else np.uint8).reshape(T, -1)
    y = planes[:, :H * W].reshape(T, H, W).astype(np.float64)
    return y / 4 if ten_bit else y


# The container's own colour description: mp4's colr box (nclx: primaries, transfer, matrix 1 = BT.709,
# then 0: not full range), mov's (nclc, no range), Matroska's Colour element (each field 1: BT.709;
# Range 1: broadcast).
MP4_COLR = b"colrnclx\x00\x01\x00\x01\x00\x01\x00"
MOV_COLR = b"colrnclc\x00\x01\x00\x01\x00\x01"
WEBM_COLOUR = [bytes.fromhex(f"{element}8101") for element in ("55B1", "55B9", "55BA", "55BB")]


@pytest.mark.parametrize(("fmt", "pix_fmt", "described", "container"), [
    ("mp4", "yuv420p", "h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive)", [MP4_COLR]),
    ("hevc", "yuv420p", "hevc (Main) (hvc1 / 0x31637668), yuv420p(tv, bt709, progressive)", [MP4_COLR]),
    ("prores", "yuv422p10le", "prores (HQ) (apch / 0x68637061), yuv422p10le(tv, bt709, progressive)", [MOV_COLR]),
    ("webm", "yuv420p", "vp9 (Profile 0), yuv420p(tv, bt709, progressive)", WEBM_COLOUR),
])
def test_every_video_format_is_bt709_limited_range_and_tagged_so(tmp_path, fmt, pix_fmt, described, container):
    (out,) = write_outputs(FRAMES, str(tmp_path), "c", [fmt], playback_fps=7)
    # ffmpeg prints one name where matrix, primaries and transfer agree ("bt709/unknown/unknown" otherwise).
    assert described in stream_line(out.path)
    data = open(out.path, "rb").read()
    assert all(tag in data for tag in container)
    assert frame_fields(out.path) == [FIELDS] * T
    y = decoded_luma(out.path, pix_fmt)
    # Within a code of BT.709's luma; BT.601's is several codes off on these colours, so the matrix is
    # what this tells apart.
    assert np.abs(y - luma(FRAMES, 0.2126, 0.0722)).mean() < 1
    assert np.abs(y - luma(FRAMES, 0.299, 0.114)).mean() > 4


def test_the_master_stays_rgb_and_the_pictures_stay_srgb(tmp_path):
    """FFV1 masters keep the RGB frames (no matrix to apply); PNG, GIF and WebP carry RGB, no colour chunk
    that would move them off sRGB (no gAMA, cHRM or ICC profile)."""
    from svdflow.outputs.writers import EncodeSettings, write_file

    master = write_file(FRAMES, str(tmp_path), "c.mkv", "master", EncodeSettings(playback_fps=7))
    assert "ffv1, bgr0(pc, gbr/" in stream_line(master.path)  # planar RGB as stored, full range
    raw = ffmpeg("-loglevel", "error", "-i", master.path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-").stdout
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(FRAMES.shape), FRAMES)
    outs = write_outputs(FRAMES, str(tmp_path), "c", ["gif", "webp", "frames"], playback_fps=7)
    for path in (outs[0].path, outs[1].path, f"{outs[2].path}/00000.png"):
        with Image.open(path) as im:
            assert not {"icc_profile", "gamma", "chromaticity"} & set(im.info), path
