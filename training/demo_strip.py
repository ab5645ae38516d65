"""The README's strip of demo frames: every other frame of a few `make demo` clips, half size.

    .venv/bin/python training/demo_strip.py   # after `make demo`; writes docs/toy-demo.png
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageSequence

ROOT = Path(__file__).resolve().parents[1]
RENDERS = ROOT / "manifests" / "renders" / "demo"
CLIPS = ("sunset", "rocket", "city")


def main() -> None:
    rows = []
    for name in CLIPS:
        frames = [f.convert("RGB") for f in ImageSequence.Iterator(Image.open(RENDERS / f"{name}.gif"))][::2]
        w, h = frames[0].width // 2, frames[0].height // 2
        row = Image.new("RGB", (w * len(frames), h))
        for i, frame in enumerate(frames):
            row.paste(frame.resize((w, h), Image.Resampling.LANCZOS), (i * w, 0))
        rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    out = ROOT / "docs" / "toy-demo.png"
    out.parent.mkdir(exist_ok=True)
    sheet.save(out, optimize=True)
    print(out, sheet.size, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
