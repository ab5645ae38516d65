"""`svdflow report` of a big campaign: the time to write the contact sheet, the weight of its first
page, and how long that page takes to load in headless Chromium.

A real 2-job builtin:tiny run (8 frames, 112x64, mp4 + gif) gives the entries and files; the
campaign of N jobs is made from them: N entries (ids, seeds and output names changed, every fourth
job failed) and, for each done job, its own mp4 and gif (hard links to the real ones, so each job
has files of its own and its own poster to make). Each N is reported twice: the first report (it
makes every poster and thumbnail) and a second one (they are all there: what rewriting the sheet
costs). Chromium loads index.html from file:// in a fresh headless process (--dump-dom: the
page's load event, then its DOM), three times; the fastest and slowest are printed.

    .venv/bin/python benchmarks/bench_report.py [--jobs 1000,10000] [--no-browser]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from conftest import write_image  # noqa: E402

from svdflow.api import run_manifest, write_report  # noqa: E402
from svdflow.outputs.entry import ErrorRecord  # noqa: E402
from svdflow.outputs.index import RunIndex  # noqa: E402
from svdflow.outputs.store import OutputStore  # noqa: E402

MANIFEST = """svdflow: 1
name: bench-report
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: out, formats: [mp4, gif], masters: false}
defaults: {num_frames: 8, num_inference_steps: 2, width: 112, height: 64}
items:
  - {id: a, image: a.png}
  - {id: b, image: b.png}
"""


def template(folder: Path):
    """The entries and the folder of a real 2-job run."""
    folder.mkdir(parents=True)
    write_image(folder / "a.png")
    write_image(folder / "b.png", seed=1)
    (folder / "m.yaml").write_text(MANIFEST)
    run_manifest(folder / "m.yaml")
    index = RunIndex.load(OutputStore(str(folder / "out")))
    return list(index.entries.values()), folder / "out"


def campaign(entries, source: Path, out: Path, jobs: int) -> None:
    """An output folder of `jobs` jobs made from the template's entries and files."""
    out.mkdir(parents=True)
    made = {}
    for number in range(jobs):
        base = entries[number % len(entries)]
        job_id = f"job{number:06d}"
        if number % 4 == 3:
            entry = base.model_copy(update={
                "id": job_id, "item_id": job_id, "seed": number, "status": "failed", "outputs": [],
                "error": ErrorRecord(type="InputError", stage="fetch",
                                     message=f"job '{job_id}': in{number}.png: file not found; check the path")})
        else:
            outputs = []
            for output in base.outputs:
                name = job_id + output.file[len(base.id):]
                os.link(source / output.file, out / name)
                outputs.append(output.model_copy(update={"file": name}))
            entry = base.model_copy(update={"id": job_id, "item_id": job_id, "seed": number, "outputs": outputs})
        made[job_id] = entry
    index = RunIndex(OutputStore(str(out)), made, name="bench-report", manifest=str(out.parent / "m.yaml"))
    index.flush(force=True)


def weight(out: Path) -> tuple[int, int]:
    """Bytes of index.html, and of the files it names that the browser loads at once (posters,
    thumbnails; videos are preload=none)."""
    import re

    page = (out / "index.html").read_text()
    loaded = set(re.findall(r'(?:poster|src)="([^"]+\.(?:jpg|gif|webp))"', page))
    from urllib.parse import unquote

    return len(page.encode()), sum((out / unquote(name)).stat().st_size for name in loaded)


def browser_load(page: Path, tries: int = 3) -> list[float]:
    """Seconds for headless Chromium to load `page` and print its DOM, per try (a fresh browser each)."""
    chromium = shutil.which("chromium")
    times = []
    for _ in range(tries):
        with tempfile.TemporaryDirectory() as profile:
            command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                       f"--user-data-dir={profile}", "--allow-file-access-from-files", "--dump-dom", page.as_uri()]
            started = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
            times.append(time.perf_counter() - started)
            if "<article" not in proc.stdout:
                raise SystemExit(f"chromium did not show the page:\n{proc.stderr[-2000:]}")
    return times


def blank_load(tries: int = 3) -> list[float]:
    """A fresh headless Chromium printing an empty page: the browser's own start, to subtract."""
    with tempfile.TemporaryDirectory() as tmp:
        blank = Path(tmp) / "blank.html"
        blank.write_text("<!doctype html><title>blank</title><article></article>")
        return browser_load(blank, tries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="1000,10000", help="comma-separated campaign sizes")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    browser = not args.no_browser and shutil.which("chromium")
    with tempfile.TemporaryDirectory() as tmp:
        entries, source = template(Path(tmp) / "template")
        if browser:
            blank = blank_load()
            print(f"chromium start + blank page: {min(blank):.2f}-{max(blank):.2f} s")
        for jobs in (int(n) for n in args.jobs.split(",")):
            out = Path(tmp) / f"c{jobs}" / "out"
            campaign(entries, source, out, jobs)
            timings = []
            for _ in range(2):
                started = time.perf_counter()
                write_report(str(out))
                timings.append(time.perf_counter() - started)
            html, media = weight(out)
            pages = sum(1 for _ in (out / "report").rglob("*.html"))
            line = (f"{jobs:>7,} jobs: report {timings[0]:.2f} s (posters made), {timings[1]:.2f} s (again); "
                    f"index.html {html / 1024:.0f} KiB + {media / 1024:.0f} KiB of images it loads; "
                    f"{pages} more pages")
            if browser:
                loads = browser_load(out / "index.html")
                line += f"; chromium load {min(loads):.2f}-{max(loads):.2f} s"
            print(line, flush=True)
            shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
