"""The ffmpeg settings of each video format svdflow writes, and of the lossless masters.

Output hashes are recorded in the index and compared on later runs, so every encoder is pinned to
settings that give the same bytes for the same frames and the same ffmpeg build, on any machine.
What that took, per encoder (measured with imageio-ffmpeg's ffmpeg 9.0.2, 14 frames at 1024x576,
threads 1, 2 and 4):
- x264 (mp4): the bitstream changes with the thread count (frame threads limit motion search, and
  the options SEI records threads=N): fixed at 4.
- x265 (hevc): one frame thread gives other bytes than several: `pools` and `frame-threads` fixed
  at 4; `info=0` drops the SEI that names the x265 build and its options.
- libvpx-vp9 (webm): one thread gives other bytes than several: threads fixed at 4, row-mt on.
- prores_ks (prores) and FFV1 (masters, with fixed slices): the same bytes whatever the threads.
`-fflags +bitexact -flags:v +bitexact` keep libavformat/libavcodec version strings out of every
container (so an imageio-ffmpeg upgrade alone does not change every hash) and make the Matroska
muxers (webm, masters) write fixed segment ids instead of random ones. Different ffmpeg, x264,
x265 or libvpx builds may still give different bytes for the same frames; decoded pixels are then
equally good but the recorded sha256 will differ.

Colour. The frames are sRGB; every YUV format (mp4, hevc, prores, webm) is converted with the BT.709
matrix to limited ("tv") range by an explicit swscale filter, and tagged so: primaries, transfer,
matrix bt709, range tv, in the bitstream (H.264/H.265 VUI, VP9's header) and the container (mov's
colr atom, Matroska's Colour). Players and editors assume BT.709 for untagged HD video, and swscale's
default matrix is BT.601: left implicit, the colours shifted (BT.601's luma of builtin:tiny's frames is
3.7-4.1 codes from BT.709's on average, 8 on saturated gradients). The conversion is set on the filter, not only as the encoder's tags, because the
tags alone change no pixel; `setparams` gives the frames the tags, which ffmpeg 7+ passes to the
encoder over the -color_* options. swscale's `bitexact` flag keeps its SIMD paths from changing bytes
between CPUs; its output is the same with 1 to 16 filter or scale threads (measured, 1024x576). The
lossless masters stay planar RGB (gbrp): nothing to convert. GIF, WebP and PNG are RGB and stay sRGB.
"""

from __future__ import annotations

from fractions import Fraction

# Everything an encoder may split work over: fixed, because x264, x265 and libvpx make other
# (equally good) bytes with another count. 4 uses a laptop's cores and costs a big node little.
THREADS = 4
MP4_PRESET = "medium"
HEVC_PRESET = "medium"
# libvpx's speed/quality trade-off for VP9: 2 of 0 (slowest, best) to 5 in `good` mode.
WEBM_CPU_USED = 2
PRORES_PROFILES = {"proxy": 0, "lt": 1, "standard": 2, "hq": 3, "4444": 4, "4444xq": 5}
# The masters' FFV1: version 3 with CRCs per slice (a damaged master fails to decode rather than
# decoding to wrong pixels), every frame a keyframe, and a fixed slice count (the bytes follow it).
MASTER_SLICES = 4

VIDEO_FORMATS = ("mp4", "hevc", "prores", "webm")
CONTAINERS = {"mp4": "mp4", "hevc": "mp4", "prores": "mov", "webm": "webm", "master": "matroska"}
CODEC_NAMES = {"mp4": "H.264", "hevc": "H.265", "prores": "ProRes", "webm": "VP9", "master": "FFV1"}
# The colour description of every YUV file: (ffmpeg's name of the field, its value).
COLOUR_TAGS = (("color_primaries", "bt709"), ("color_trc", "bt709"), ("colorspace", "bt709"), ("color_range", "tv"))


def frame_rate(fps) -> str:
    """fps as ffmpeg's exact rational (7.5 -> 15/2; 29.97 -> 2997/100)."""
    return str(fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001 * 1000))


def pix_fmt(fmt: str, prores_profile: str = "hq") -> str:
    """The pixel format a format is encoded in."""
    if fmt == "prores":
        return "yuv444p10le" if prores_profile.startswith("4444") else "yuv422p10le"
    return "gbrp" if fmt == "master" else "yuv420p"


def needs_even_size(fmt: str, prores_profile: str = "hq") -> bool:
    """Chroma subsampled across columns (4:2:2) or both ways (4:2:0): the sides must be even."""
    return pix_fmt(fmt, prores_profile) in ("yuv420p", "yuv422p10le")


def colour_args(fmt: str, prores_profile: str = "hq") -> list[str]:
    """The RGB->YUV conversion and colour tags of a YUV format (see the module docstring); [] for RGB."""
    target = pix_fmt(fmt, prores_profile)
    if target == "gbrp":
        return []
    tags = dict(COLOUR_TAGS)
    convert = (f"scale=out_color_matrix={tags['colorspace']}:out_range={tags['color_range']}"
               ":flags=accurate_rnd+full_chroma_int+bitexact"
               f",format={target}"
               f",setparams=color_primaries={tags['color_primaries']}:color_trc={tags['color_trc']}"
               f":colorspace={tags['colorspace']}:range={tags['color_range']}")
    return ["-vf", convert, *(arg for name, value in COLOUR_TAGS for arg in (f"-{name}", value))]


def codec_args(fmt: str, *, crf: int, prores_profile: str) -> list[str]:
    """The encoder arguments of one format (`master`: the lossless master)."""
    pixels = [*colour_args(fmt, prores_profile), "-pix_fmt", pix_fmt(fmt, prores_profile)]
    if fmt == "mp4":
        return ["-c:v", "libx264", "-preset", MP4_PRESET, "-crf", str(crf), *pixels, "-threads", str(THREADS)]
    if fmt == "hevc":
        return ["-c:v", "libx265", "-preset", HEVC_PRESET, "-crf", str(crf), *pixels,
                # hvc1 (parameter sets in the sample description), not ffmpeg's default hev1: what
                # QuickTime, Safari and iOS require to play H.265 at all.
                "-tag:v", "hvc1",
                "-x265-params", f"pools={THREADS}:frame-threads={THREADS}:info=0:log-level=error"]
    if fmt == "prores":
        return ["-c:v", "prores_ks", "-profile:v", str(PRORES_PROFILES[prores_profile]),
                # Apple's vendor id: some editors and QuickTime builds trust only ProRes that claims it.
                "-vendor", "apl0", *pixels, "-threads", str(THREADS)]
    if fmt == "webm":
        # -b:v 0 makes -crf a constant quality; without it libvpx treats crf as a cap under a bitrate.
        return ["-c:v", "libvpx-vp9", "-crf", str(crf), "-b:v", "0", "-deadline", "good",
                "-cpu-used", str(WEBM_CPU_USED), "-row-mt", "1", "-threads", str(THREADS), *pixels]
    if fmt == "master":
        return ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", str(MASTER_SLICES), "-slicecrc", "1",
                *pixels, "-threads", str(THREADS)]
    raise ValueError(f"not an ffmpeg format: {fmt!r}")


def ffmpeg_exe() -> str:
    # Imported here: a run that writes only frames, GIF or WebP needs no ffmpeg binary.
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def encode_command(fmt: str, path: str, width: int, height: int, *, fps, crf: int, prores_profile: str,
                   metadata: str | None) -> list[str]:
    """ffmpeg reading raw RGB frames on stdin and writing `path` in `fmt`, with the global metadata
    of the ffmetadata file `metadata` (None: none).

    The metadata (the job's provenance, which holds its input's URI) is read from a file, not given
    on the command line: a long URI would pass the kernel's limit on one argument (128 KiB), and
    ffmpeg would not start. Same bytes as `-metadata comment=...`.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", frame_rate(fps), "-i", "pipe:0"]
    if metadata:
        cmd += ["-f", "ffmetadata", "-i", metadata, "-map", "0:v", "-map_metadata", "1"]
    else:
        cmd += ["-map_metadata", "-1"]
    cmd += ["-an", *codec_args(fmt, crf=crf, prores_profile=prores_profile),
            "-fflags", "+bitexact", "-flags:v", "+bitexact"]
    if CONTAINERS[fmt] in ("mp4", "mov"):
        cmd += ["-movflags", "+faststart"]  # the index first: players start before the whole file is in
    return [*cmd, "-f", CONTAINERS[fmt], path]
