"""Bytes per frame of every output format and of the lossless master: the table `plan` estimates a
campaign's storage from (svdflow/outputs/storage.py holds the figures this script printed).

The frames are 1024x576 (SVD-XT's size), made by panning and slowly zooming across photographs:
scikit-image's sample photos (astronaut, coffee, chelsea, rocket; 300 to 640 pixels wide, upscaled
about 2.5x) when scikit-image is installed (`pip install scikit-image`; only this script uses it),
else the repo's flat-coloured sample drawings (manifests/images/*.png), which compress far better
than footage and so give much smaller figures. Upscaled photos moving smoothly are natural-ish
pictures about as soft as SVD's own clips; sharp, busy footage makes bigger files. Each setting is encoded at 25 and at 13 frames, through svdflow's own writers
(same encoders, same pinned options, no provenance), so a file's size is fitted as
`fixed + per_frame x frames`; the per-frame figure is averaged over the images. Noise frames (what
builtin:tiny renders) are measured too, at the defaults, as the pessimistic bound they are: encoders
cannot compress noise, so those figures are the worst a campaign could write, not what it will.

    .venv/bin/python benchmarks/bench_storage.py [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svdflow.outputs.writers import EncodeSettings, write_file, write_outputs  # noqa: E402

WIDTH, HEIGHT, FPS = 1024, 576, 7
LONG, SHORT = 25, 13
CRFS = (12, 18, 23, 28, 35)
PRORES = ("proxy", "lt", "standard", "hq", "4444", "4444xq")


def photos() -> tuple[str, dict[str, Image.Image]]:
    """The pictures to pan over, and what they are."""
    try:
        import skimage.data
    except ImportError:
        images = sorted((REPO / "manifests" / "images").glob("*.png"))
        return ("the repo's sample drawings (flat colours: optimistic)",
                {image.stem: Image.open(image).convert("RGB") for image in images})
    names = ("astronaut", "coffee", "chelsea", "rocket")
    return ("scikit-image's sample photos " + ", ".join(names),
            {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in names})


def panned(source: Image.Image, frames: int) -> np.ndarray:
    """`frames` frames of a camera drifting right and zooming in 8% over 25 frames."""
    scale = WIDTH * 1.25 / source.width
    out = []
    for t in range(frames):
        zoom = 1 + 0.08 * t / (LONG - 1)
        step = scale * zoom
        x0, y0 = 0.02 * source.width + 0.004 * source.width * t, 0.05 * source.height
        # The affine maps output pixels back into the source: a subpixel pan, as a moving camera gives.
        data = (1 / step, 0, x0, 0, 1 / step, y0)
        out.append(np.asarray(source.transform((WIDTH, HEIGHT), Image.AFFINE, data, Image.BICUBIC)))
    return np.stack(out)


def noise(frames: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (frames, HEIGHT, WIDTH, 3), dtype=np.uint8)


def size_of(frames: np.ndarray, fmt: str, folder: str, crf: int = 18, prores_profile: str = "hq") -> int:
    if fmt == "master":
        return write_file(frames, folder, "m.mkv", "master", EncodeSettings(playback_fps=FPS)).bytes
    (written,) = write_outputs(frames, folder, f"x{time.monotonic_ns()}", [fmt], playback_fps=FPS, crf=crf,
                               prores_profile=prores_profile)
    return written.bytes


def settings(quick: bool) -> list[tuple[str, dict]]:
    crfs = (18,) if quick else CRFS
    profiles = ("hq",) if quick else PRORES
    out: list[tuple[str, dict]] = [("master", {})]
    out += [(fmt, {"crf": crf}) for fmt in ("mp4", "hevc", "webm") for crf in crfs]
    out += [("prores", {"prores_profile": p}) for p in profiles]
    out += [("gif", {}), ("webp", {}), ("frames", {})]
    return out


def label(fmt: str, options: dict) -> str:
    return fmt + "".join(f" {k}={v}" for k, v in options.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--quick", action="store_true", help="Defaults only (crf 18, ProRes hq).")
    args = parser.parse_args()
    content, pictures = photos()
    print(f"{WIDTH}x{HEIGHT}, {SHORT} and {LONG} frames panned across {content}; noise: uniform random frames")
    clips = {name: (panned(picture, LONG), panned(picture, SHORT)) for name, picture in pictures.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, options in settings(args.quick):
            per_frame, fixed = [], []
            for stem, (long, short) in clips.items():
                folder = os.path.join(tmp, stem)
                a, b = size_of(long, fmt, folder, **options), size_of(short, fmt, folder, **options)
                slope = (a - b) / (LONG - SHORT)
                per_frame.append(slope)
                fixed.append(a - slope * LONG)
            folder = os.path.join(tmp, "noise")
            noisy = size_of(noise(LONG), fmt, folder, **options) if not options or options in (
                {"crf": 18}, {"prores_profile": "hq"}) else None
            row = {"format": fmt, **options, "bytes_per_frame": round(sum(per_frame) / len(per_frame)),
                   "fixed_bytes": max(0, round(sum(fixed) / len(fixed))),
                   "per_image": {s: round(v) for s, v in zip(clips, per_frame)},
                   "noise_bytes_per_frame": None if noisy is None else round(noisy / LONG)}
            rows.append(row)
            print(f"{label(fmt, options):24} {row['bytes_per_frame']:>10,} B/frame  fixed {row['fixed_bytes']:>7,} B"
                  f"  25 frames {(row['fixed_bytes'] + LONG * row['bytes_per_frame']) / 2**20:7.2f} MiB"
                  + (f"  noise {row['noise_bytes_per_frame']:,} B/frame" if noisy is not None else ""), flush=True)
    result = {"size": f"{WIDTH}x{HEIGHT}", "frames": [SHORT, LONG], "fps": FPS,
              "content": f"panned and zoomed across {content}; noise: uniform random frames, the pessimistic bound",
              "rows": rows}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
