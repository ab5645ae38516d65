"""Real encodes of small synthetic clips: round trips, byte-reproducibility, crash safety."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svdflow.errors import OutputStoreError, OutputWriteError
from svdflow.outputs import atomic, codecs, writers
from svdflow.outputs.atomic import (
    atomic_local_path,
    atomic_write_bytes,
    atomic_write_json,
    publish_local_file,
    remove_stale_temps,
)
from svdflow.outputs.provenance import embedded_text, read_comment
from svdflow.outputs.writers import (
    FORMATS,
    EncodeSettings,
    WrittenOutput,
    encode_video,
    hash_output,
    output_path,
    write_outputs,
)

REPO = Path(__file__).resolve().parents[1]
TEMP_NAME = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]+")


def make_frames(t: int = 8, h: int = 64, w: int = 112, shift: int = 0) -> np.ndarray:
    """A moving gradient with some texture, smooth enough for lossy codecs to keep close."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    clip = [
        np.stack(
            [x / w * 200 + 8 * i + shift, y / h * 200 + 5 * i, 128 + 60 * np.sin((x + y) / 9 + i / 2)], -1
        )
        for i in range(t)
    ]
    return np.stack(clip).clip(0, 255).astype(np.uint8)


FRAMES = make_frames()


def decode_mp4(path: str) -> tuple[dict, np.ndarray]:
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    w, h = meta["size"]
    decoded = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    return meta, np.stack(decoded)


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hidden_leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".")]


def memory_url() -> str:
    return f"memory://svdflow-tests/{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------------------------
# paths


def test_output_path_names_each_format():
    assert output_path("renders/x", "rocket", "mp4") == os.path.join("renders/x", "rocket.mp4")
    assert output_path("renders/x", "rocket", "gif") == os.path.join("renders/x", "rocket.gif")
    assert output_path("renders/x", "rocket", "webp") == os.path.join("renders/x", "rocket.webp")
    assert output_path("renders/x", "rocket", "frames") == os.path.join("renders/x", "rocket_frames")
    assert output_path("renders/x", "rocket", "hevc") == os.path.join("renders/x", "rocket.hevc.mp4")
    assert output_path("renders/x", "rocket", "prores") == os.path.join("renders/x", "rocket.mov")
    assert output_path("renders/x", "rocket", "webm") == os.path.join("renders/x", "rocket.webm")
    assert output_path("s3://bucket/out", "city-m60", "mp4") == "s3://bucket/out/city-m60.mp4"
    assert output_path("memory://", "a", "gif") == "memory://a.gif"
    with pytest.raises(ValueError, match="unknown output format 'avi'"):
        output_path("x", "a", "avi")


# ------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("fps", [7, 7.5])
def test_mp4_round_trip(tmp_path, fps):
    comment = "svdflow key=3f9a;#\\odd\nvalue"
    (out,) = write_outputs(FRAMES, str(tmp_path), "rocket", ["mp4"], playback_fps=fps, provenance=comment)
    assert out == WrittenOutput(
        "mp4", str(tmp_path / "rocket.mp4"), sha256_of(out.path), os.path.getsize(out.path)
    )

    meta, decoded = decode_mp4(out.path)
    assert meta["codec"] == "h264"
    assert meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (112, 64)
    assert meta["fps"] == pytest.approx(fps)
    assert decoded.shape == FRAMES.shape
    # Measured 2.1 at crf 18 on this clip; chroma subsampling of the sine texture dominates.
    assert np.abs(decoded.astype(int) - FRAMES).mean() < 4

    assert read_comment(out.path) == comment
    dumped = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", out.path, "-f", "ffmetadata", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "comment=svdflow key\\=3f9a\\;\\#\\\\odd\\\nvalue" in dumped
    # Without the bitexact flags the library versions would be stamped into the file.
    assert b"Lavf" not in Path(out.path).read_bytes()
    assert b"Lavc6" not in Path(out.path).read_bytes()


def test_mp4_size_multiple_of_8_not_16_is_not_resized(tmp_path):
    frames = make_frames(t=5, h=72, w=120)
    (out,) = write_outputs(frames, str(tmp_path), "a", ["mp4"], playback_fps=7)
    meta, decoded = decode_mp4(out.path)
    assert meta["size"] == (120, 72)
    assert decoded.shape == frames.shape


def test_mp4_without_comment_has_none(tmp_path):
    (out,) = write_outputs(FRAMES, str(tmp_path), "a", ["mp4"], playback_fps=7)
    assert read_comment(out.path) is None


# Mean abs errors measured on this clip: gif 6.5 (one 256-colour palette for all frames),
# webp 1.7 (quality 90).
@pytest.mark.parametrize(("fmt", "fps", "max_error"), [("gif", 7, 10), ("webp", 7.5, 4)])
def test_gif_and_webp_round_trip(tmp_path, fmt, fps, max_error):
    (out,) = write_outputs(FRAMES, str(tmp_path), "rocket", [fmt], playback_fps=fps)
    assert out.path == str(tmp_path / f"rocket.{fmt}")
    assert out.sha256 == sha256_of(out.path)
    assert out.bytes == os.path.getsize(out.path)
    with Image.open(out.path) as im:
        assert im.format == fmt.upper()
        assert im.n_frames == len(FRAMES)
        assert im.size == (112, 64)
        assert im.info["loop"] == 0
        for i in range(im.n_frames):
            im.seek(i)
            pixels = np.asarray(im.convert("RGB")).astype(int)
            assert np.abs(pixels - FRAMES[i]).mean() < max_error


def delays(path) -> list[int]:
    """Each frame's delay in ms as Pillow reads it back (WebP reports it once the frame is decoded)."""
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            im.convert("RGB")
            out.append(im.info["duration"])
        return out


def gif_colour_tables(data: bytes) -> tuple[bool, int]:
    """(has a global colour table, how many frames carry a local one), read from the GIF's blocks."""
    def skip_sub_blocks(at: int) -> int:
        while data[at]:
            at += data[at] + 1
        return at + 1

    has_global, at = bool(data[10] & 0x80), 13
    at += 3 * 2 ** ((data[10] & 7) + 1) if has_global else 0
    local = 0
    while data[at] != 0x3B:  # the trailer
        if data[at] == 0x21:  # an extension: its label, then sub-blocks
            at = skip_sub_blocks(at + 2)
        else:  # an image descriptor (0x2C): 9 bytes, maybe a local table, LZW code size, sub-blocks
            flags = data[at + 9]
            local += bool(flags & 0x80)
            at += 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
            at = skip_sub_blocks(at + 1)
    return has_global, local


# 25 distinct frames: asked 25/fps s; written, the delays Pillow reads back.
@pytest.mark.parametrize("fps", [7, 14, 24, 28, 30, 29.97])
def test_gif_and_webp_last_exactly_as_long_as_asked(tmp_path, fps):
    frames = make_frames(t=25)
    gif, webp = write_outputs(frames, str(tmp_path), "t", ["gif", "webp"], playback_fps=fps)
    asked_ms = 25 * 1000 / fps
    for out, unit in ((gif, 10), (webp, 1)):
        written = delays(out.path)
        assert len(written) == 25 and all(d % unit == 0 for d in written), (out.format, written)
        # Frame k ends at k/fps rounded to the unit: no frame is off by a unit, nor the clip by half of one.
        ends = np.cumsum(written)
        assert np.abs(ends - np.arange(1, 26) * 1000 / fps).max() <= unit / 2, (out.format, written)
        assert abs(sum(written) - asked_ms) <= unit / 2
    # One colour table, the global one: no frame repeats it.
    assert gif_colour_tables(Path(gif.path).read_bytes()) == (True, 0)


def test_frame_delays_are_exact_rational_roundings():
    assert writers.frame_delays(7, 7, 10) == [140, 150, 140, 140, 140, 150, 140]
    assert sum(writers.frame_delays(28, 28, 10)) == 1000
    assert writers.frame_delays(4, 30000 / 1001, 1) == [33, 34, 33, 33]


def test_png_frames_are_exact(tmp_path):
    (out,) = write_outputs(FRAMES, str(tmp_path), "rocket", ["frames"], playback_fps=7)
    folder = tmp_path / "rocket_frames"
    assert out.path == str(folder)
    names = sorted(os.listdir(folder))
    assert names == [f"{i:05d}.png" for i in range(len(FRAMES))]
    for i, name in enumerate(names):
        with Image.open(folder / name) as im:
            assert im.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(im), FRAMES[i])

    expected = hashlib.sha256()
    for name in names:
        data = (folder / name).read_bytes()
        expected.update(f"{name}\n{len(data)}\n".encode())
        expected.update(data)
    assert out.sha256 == expected.hexdigest()
    assert out.bytes == sum((folder / n).stat().st_size for n in names)
    assert hash_output(out.path, "frames") == (out.sha256, out.bytes)


def ffmpeg_description(path) -> str:
    """ffmpeg's one-line description of a file's video stream (codec, profile, fourcc, pixel format)."""
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True)
    return next(line for line in proc.stderr.splitlines() if "Video:" in line).strip()


# Mean abs errors measured on this clip at crf 18: hevc 2.1, webm 2.2; prores hq and lt 2.0 (4:2:2), 4444 0.03
# (BT.709 both ways; with BT.601, before 0.2, prores 422 measured 1.6).
@pytest.mark.parametrize(("fmt", "settings", "described", "max_error"), [
    ("hevc", {}, "Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv, bt709, progressive), 112x64", 4),
    ("prores", {}, "Video: prores (HQ) (apch / 0x68637061), yuv422p10le(tv, bt709, progressive), 112x64", 2.5),
    ("prores", {"prores_profile": "lt"}, "Video: prores (LT) (apcs / 0x73637061), yuv422p10le(tv, bt709, progressive), "
                                         "112x64", 2.5),
    # Encoded from yuv444p10le; ffmpeg's decoder reports 4444 as 12-bit.
    ("prores", {"prores_profile": "4444"}, "Video: prores (4444) (ap4h / 0x68347061), yuv444p12le(tv, bt709, progressive), "
                                           "112x64", 2),
    ("webm", {}, "Video: vp9 (Profile 0), yuv420p(tv, bt709, progressive), 112x64", 4),
])
def test_hevc_prores_and_webm_decode_to_every_frame(tmp_path, fmt, settings, described, max_error):
    (out,) = write_outputs(FRAMES, str(tmp_path), "rocket", [fmt], playback_fps=7, provenance="k", **settings)
    assert ffmpeg_description(out.path).startswith("Stream #0:0") and described in ffmpeg_description(out.path)
    meta, decoded = decode_mp4(out.path)
    assert meta["fps"] == pytest.approx(7)
    assert decoded.shape == FRAMES.shape
    assert np.abs(decoded.astype(int) - FRAMES).mean() < max_error
    assert read_comment(out.path) == "k"


@pytest.mark.parametrize("fmt", ["mp4", "hevc", "prores", "webm"])
def test_the_provenance_survives_a_stream_copy_remux(tmp_path, fmt):
    provenance = json.dumps({"id": "rocket", "note": "ü; = # \\ \n" + "x" * 3000})
    (out,) = write_outputs(FRAMES, str(tmp_path), "rocket", [fmt], playback_fps=7, provenance=provenance)
    copy = str(tmp_path / f"copy{os.path.splitext(out.path)[1]}")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", out.path, "-c", "copy", copy], check=True)
    assert read_comment(copy) == provenance
    assert decode_mp4(copy)[1].shape == FRAMES.shape


def test_gif_webp_and_png_frames_carry_the_provenance(tmp_path):
    provenance = json.dumps({"id": "rocket", "note": "ü <svdflow:provenance> & </x>"})
    written = write_outputs(FRAMES, str(tmp_path), "rocket", ["gif", "webp", "frames"], playback_fps=7,
                            provenance=provenance)
    for out in written:
        assert embedded_text(out.path) == provenance, out.format
    for name in sorted(os.listdir(tmp_path / "rocket_frames")):
        assert embedded_text(str(tmp_path / "rocket_frames" / name)) == provenance
    with Image.open(tmp_path / "rocket.gif") as im:  # the comment changes nothing else
        assert im.n_frames == len(FRAMES) and im.info["loop"] == 0


def test_every_format_is_byte_reproducible(tmp_path):
    first = write_outputs(FRAMES, str(tmp_path / "one"), "a", FORMATS, playback_fps=7, provenance="k")
    second = write_outputs(FRAMES, str(tmp_path / "two"), "a", FORMATS, playback_fps=7, provenance="k")
    assert [w.format for w in first] == list(FORMATS)
    for a, b in zip(first, second, strict=True):
        assert (a.format, a.sha256, a.bytes) == (b.format, b.sha256, b.bytes)
        assert hash_output(a.path, a.format) == (a.sha256, a.bytes)
        if a.format != "frames":
            assert a.sha256 == sha256_of(a.path)
            assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    # Different frames must not collide, or the recorded hashes would prove nothing.
    other = write_outputs(
        make_frames(shift=3), str(tmp_path / "three"), "a", FORMATS, playback_fps=7, provenance="k"
    )
    assert all(a.sha256 != c.sha256 for a, c in zip(first, other, strict=True))


_ENCODE_ON_ONE_CPU = """
import json, os, sys
sys.path.insert(0, sys.argv[2])
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # ffmpeg inherits it: a one-core machine
from test_writers import make_frames
from svdflow.outputs.writers import write_outputs
written = write_outputs(make_frames(t=16, h=256, w=256), sys.argv[1], "a", ["mp4", "hevc", "prores", "webm"],
                        playback_fps=7, provenance="k")
print(json.dumps([w.sha256 for w in written]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_video_bytes_do_not_depend_on_the_machines_core_count(tmp_path):
    """x264, x265 and libvpx pick their thread count from the cores they see, and the bytes follow it
    (on this clip, 1 thread and 4 give other bytes in all three); svdflow pins it. Encoded with every
    core here, and in a process limited to one core."""
    here = write_outputs(make_frames(t=16, h=256, w=256), str(tmp_path / "many"), "a", ["mp4", "hevc", "prores", "webm"],
                         playback_fps=7, provenance="k")
    proc = subprocess.run([sys.executable, "-c", _ENCODE_ON_ONE_CPU, str(tmp_path / "one"), str(REPO / "tests")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert json.loads(proc.stdout) == [w.sha256 for w in here]


def test_rewrite_replaces_outputs_and_leaves_no_temporaries(tmp_path):
    write_outputs(FRAMES, str(tmp_path), "a", FORMATS, playback_fps=7)
    shorter = make_frames(t=3, shift=5)
    written = write_outputs(shorter, str(tmp_path), "a", FORMATS, playback_fps=7)
    assert sorted(os.listdir(tmp_path)) == ["a.gif", "a.hevc.mp4", "a.mov", "a.mp4", "a.webm", "a.webp", "a_frames"]
    assert sorted(os.listdir(tmp_path / "a_frames")) == ["00000.png", "00001.png", "00002.png"]
    assert decode_mp4(str(tmp_path / "a.mp4"))[1].shape[0] == 3
    assert all(hash_output(w.path, w.format) == (w.sha256, w.bytes) for w in written)


def test_memory_out_dir(tmp_path):
    url = memory_url() + "/renders/x"
    write_outputs(make_frames(t=4), url, "rocket", FORMATS, playback_fps=7, provenance="k")
    written = write_outputs(FRAMES, url, "rocket", FORMATS, playback_fps=7, provenance="k")
    local = write_outputs(FRAMES, str(tmp_path), "rocket", FORMATS, playback_fps=7, provenance="k")
    fs = fsspec.filesystem("memory")
    root = url[len("memory://") :]
    for remote, here in zip(written, local, strict=True):
        assert remote.path == f"{url}/{Path(here.path).name}"
        assert (remote.sha256, remote.bytes) == (here.sha256, here.bytes)
        assert hash_output(remote.path, remote.format) == (remote.sha256, remote.bytes)
    assert fs.cat_file(f"{root}/rocket.mp4") == Path(tmp_path / "rocket.mp4").read_bytes()
    listed = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    assert listed == ["rocket.gif", "rocket.hevc.mp4", "rocket.mov", "rocket.mp4", "rocket.webm", "rocket.webp",
                      "rocket_frames"]
    frames = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/rocket_frames", detail=False))
    assert frames == [f"{i:05d}.png" for i in range(len(FRAMES))]


# ------------------------------------------------------------------------------------------------
# failures


def test_bad_frames_and_arguments_are_programming_errors(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_outputs(FRAMES.astype(np.float32), str(tmp_path), "a", ["mp4"], playback_fps=7)
    with pytest.raises(ValueError, match=r"shape \(T, H, W, 3\)"):
        write_outputs(FRAMES[..., :2], str(tmp_path), "a", ["mp4"], playback_fps=7)
    with pytest.raises(ValueError, match=r"shape \(T, H, W, 3\)"):
        write_outputs(FRAMES[0], str(tmp_path), "a", ["mp4"], playback_fps=7)
    with pytest.raises(ValueError, match="unknown output format"):
        write_outputs(FRAMES, str(tmp_path), "a", ["avi"], playback_fps=7)
    with pytest.raises(ValueError, match="must not repeat"):
        write_outputs(FRAMES, str(tmp_path), "a", ["gif", "gif"], playback_fps=7)
    with pytest.raises(ValueError, match="fps must be a positive number"):
        write_outputs(FRAMES, str(tmp_path), "a", ["gif"], playback_fps=0)
    with pytest.raises(ValueError, match="crf"):
        write_outputs(FRAMES, str(tmp_path), "a", ["mp4"], playback_fps=7, crf=60)
    assert os.listdir(tmp_path) == []


def test_out_dir_under_a_regular_file_names_the_fix(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    out_dir = str(tmp_path / "afile" / "renders")
    with pytest.raises(OutputStoreError) as info:
        write_outputs(FRAMES, out_dir, "rocket", ["mp4"], playback_fps=7)
    assert str(info.value) == (
        f"output folder {out_dir}: a file is in the way (a parent of it is a file, not a folder) (Not a "
        "directory, creating it); move that file or choose another output.dir, then run again"
    )


def test_folder_in_the_way_of_the_output_names_the_fix(tmp_path):
    (tmp_path / "rocket.gif").mkdir()
    (tmp_path / "rocket.gif" / "keep").write_text("x")
    with pytest.raises(OutputWriteError) as info:
        write_outputs(FRAMES, str(tmp_path), "rocket", ["gif"], playback_fps=7)
    assert str(info.value) == (
        f"{tmp_path / 'rocket.gif'}: could not write (Is a directory); "
        "a folder is in the way of this file: remove it or choose another output.dir"
    )
    assert sorted(os.listdir(tmp_path)) == ["rocket.gif"]


def test_odd_size_mp4_is_refused_with_the_fix(tmp_path):
    with pytest.raises(OutputWriteError) as info:
        write_outputs(make_frames(t=2, h=63, w=112), str(tmp_path), "a", ["mp4"], playback_fps=7)
    assert str(info.value) == (
        f"{tmp_path / 'a.mp4'}: could not encode mp4 (width 112 and height 63 must both be even for "
        "H.264 with yuv420p); use an even width and height, or another format"
    )
    assert os.listdir(tmp_path) == []


def test_ffmpeg_failure_reports_its_message(tmp_path, monkeypatch):
    path = str(tmp_path / "a.mp4")
    monkeypatch.setattr(codecs, "MP4_PRESET", "no-such-preset")
    with pytest.raises(OutputWriteError, match=r"a\.mp4: could not encode mp4 \(ffmpeg exited with status"):
        encode_video(FRAMES, path, "mp4", EncodeSettings(playback_fps=7))


def _fail_midway(frames, path, **kwargs):
    with open(path, "wb") as f:
        f.write(b"\0" * 1000)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_crash_while_encoding_keeps_the_previous_output(tmp_path, monkeypatch):
    (previous,) = write_outputs(FRAMES, str(tmp_path), "rocket", ["mp4"], playback_fps=7)
    before = Path(previous.path).read_bytes()
    monkeypatch.setattr(writers, "_encode_video", _fail_midway)
    with pytest.raises(OutputStoreError) as info:  # a full disk: the store's failure, not the job's
        write_outputs(make_frames(shift=9), str(tmp_path), "rocket", ["mp4"], playback_fps=7)
    assert str(info.value) == (
        f"output folder {tmp_path}: its disk is full (No space left on device, writing rocket.mp4); "
        "free some space on it or choose another output.dir, then run again"
    )
    assert Path(previous.path).read_bytes() == before
    assert os.listdir(tmp_path) == ["rocket.mp4"]


def test_crash_while_encoding_leaves_nothing(tmp_path, monkeypatch):
    def explode(frames, path, **kwargs):
        Path(path).write_bytes(b"GIF89a partial")
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(writers, "_encode_gif", explode)
    with pytest.raises(RuntimeError, match="encoder bug"):
        write_outputs(FRAMES, str(tmp_path), "rocket", ["gif"], playback_fps=7)
    assert os.listdir(tmp_path) == []


def test_crash_while_writing_frames_keeps_the_previous_folder(tmp_path, monkeypatch):
    write_outputs(FRAMES, str(tmp_path), "rocket", ["frames"], playback_fps=7)
    before = {
        n: (tmp_path / "rocket_frames" / n).read_bytes() for n in os.listdir(tmp_path / "rocket_frames")
    }

    def two_then_crash(frames, folder, provenance=""):
        for i in range(2):
            Image.fromarray(frames[i]).save(os.path.join(folder, f"{i:05d}.png"))
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(writers, "_write_pngs", two_then_crash)
    with pytest.raises(OutputStoreError, match=r"its disk failed to read or write \(Input/output error, "
                                               r"writing rocket_frames\)"):
        write_outputs(make_frames(shift=4), str(tmp_path), "rocket", ["frames"], playback_fps=7)
    assert os.listdir(tmp_path) == ["rocket_frames"]
    after = {n: (tmp_path / "rocket_frames" / n).read_bytes() for n in os.listdir(tmp_path / "rocket_frames")}
    assert after == before


def test_crash_during_remote_encode_uploads_nothing(monkeypatch):
    url = memory_url()
    monkeypatch.setattr(writers, "_encode_video", _fail_midway)
    with pytest.raises(OutputStoreError, match=r"^temporary folder .*: its disk is full \(No space left on device, "
                                               r"encoding rocket.mp4\); free some space there or point TMPDIR at"):
        write_outputs(FRAMES, url, "rocket", ["mp4"], playback_fps=7)
    assert fsspec.filesystem("memory").ls(url[len("memory://") :], detail=False) == []


# ------------------------------------------------------------------------------------------------
# atomic primitives


def test_atomic_local_path_uses_a_hidden_temporary_beside_the_final_name(tmp_path):
    final = tmp_path / "a.mp4"
    with atomic_local_path(str(final), suffix=".mp4") as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        assert TEMP_NAME.match(os.path.basename(tmp))
        assert os.path.basename(tmp).startswith(".a.mp4.tmp-") and tmp.endswith(".mp4")
        assert not final.exists()
        Path(tmp).write_bytes(b"new")
    assert final.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["a.mp4"]

    with pytest.raises(KeyError), atomic_local_path(str(final)) as tmp:
        Path(tmp).write_bytes(b"half")
        raise KeyError("boom")
    assert final.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["a.mp4"]


def test_atomic_write_bytes_accepts_file_urls_and_replaces(tmp_path):
    final = tmp_path / "a.bin"
    final.write_bytes(b"old")
    atomic_write_bytes(f"file://{final}", b"new")
    assert final.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_atomic_write_json_local_and_remote(tmp_path):
    doc = {"b": 1, "a": ["ü", None]}
    atomic_write_json(str(tmp_path / "index.json"), doc)
    expected = (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8")
    assert (tmp_path / "index.json").read_bytes() == expected

    url = memory_url()
    atomic_write_json(f"{url}/index.json", doc)
    atomic_write_json(f"{url}/index.json", doc)
    fs = fsspec.filesystem("memory")
    root = url[len("memory://") :]
    assert fs.cat_file(f"{root}/index.json") == expected
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)] == ["index.json"]


def test_publish_local_file_across_file_systems(tmp_path, monkeypatch):
    src = tmp_path / "scratch.bin"
    src.write_bytes(b"payload")
    final = tmp_path / "out" / "a.bin"
    final.parent.mkdir()
    real_replace = os.replace

    def no_cross_device(a, b):
        if a == str(src):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return real_replace(a, b)

    monkeypatch.setattr(atomic.os, "replace", no_cross_device)
    publish_local_file(str(src), str(final))
    assert final.read_bytes() == b"payload"
    assert not src.exists()
    assert os.listdir(final.parent) == ["a.bin"]


def test_remove_stale_temps_removes_only_dead_writers_leftovers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = os.getpid()
    (tmp_path / f".a.mp4.tmp-{dead.pid}-0a1b2c3d.mp4").write_bytes(b"partial")
    (tmp_path / f".a_frames.tmp-{dead.pid}-00ff").mkdir()
    (tmp_path / f".a_frames.tmp-{dead.pid}-00ff" / "00000.png").write_bytes(b"x")
    (tmp_path / f".a_frames.tmp-{dead.pid}-11ee.old").mkdir()
    (tmp_path / f".b.gif.tmp-{me}-deadbeef.gif").write_bytes(b"in progress")
    (tmp_path / "a.mp4").write_bytes(b"final")
    (tmp_path / ".hidden").write_bytes(b"user")
    (tmp_path / f"notes.tmp-{dead.pid}-ab").write_bytes(b"user")
    removed = remove_stale_temps(str(tmp_path))
    assert removed == sorted(
        [
            f".a.mp4.tmp-{dead.pid}-0a1b2c3d.mp4",
            f".a_frames.tmp-{dead.pid}-00ff",
            f".a_frames.tmp-{dead.pid}-11ee.old",
        ]
    )
    assert sorted(os.listdir(tmp_path)) == sorted(
        [".hidden", f".b.gif.tmp-{me}-deadbeef.gif", "a.mp4", f"notes.tmp-{dead.pid}-ab"]
    )
    assert remove_stale_temps(str(tmp_path / "missing")) == []


_WRITER_LOOP = """
import random, sys
from svdflow.outputs.atomic import atomic_write_bytes
path, size = sys.argv[1], int(sys.argv[2])
payloads = [random.Random(i).randbytes(size) for i in range(3)]
print("ready", flush=True)
i = 0
while True:
    atomic_write_bytes(path, payloads[i % 3])
    i += 1
"""


@pytest.mark.slow  # real writer processes killed with SIGKILL
def test_kill_9_never_leaves_a_partial_file(tmp_path):
    size = 4 << 20
    valid = {hashlib.sha256(random.Random(i).randbytes(size)).hexdigest() for i in range(3)}
    final = tmp_path / "payload.bin"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(1234)
    left_behind = set()
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER_LOOP, str(final), str(size)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        if final.exists():
            data = final.read_bytes()
            assert len(data) == size
            assert hashlib.sha256(data).hexdigest() in valid
        left_behind |= set(hidden_leftovers(tmp_path))
    assert final.exists()
    assert all(TEMP_NAME.match(name) for name in left_behind)
    present = sorted(hidden_leftovers(tmp_path))
    assert remove_stale_temps(str(tmp_path)) == present
    assert os.listdir(tmp_path) == ["payload.bin"]
