"""`svdflow report` of a big campaign: the time to write the contact sheet, the weight of its first
page, and how long that page takes to load in headless Chromium.

A real 2-job builtin:tiny run (8 frames, 112x64, mp4 + gif) gives the entries and files; the
campaign of N jobs is made from them: N entries (ids, seeds and output names changed, every fourth
job failed; every fifth item a sweep of 3; done jobs given seeded quality scores judged against a
min_motion, so that the qc views are written, unless --unscored) and, for each done job, its own mp4
and gif (hard links to the real ones, so each job has files of its own and its own poster to make).
Each N is reported three times: the first report (it makes every poster and thumbnail, renders every
card and caches it), a second one (every card from the cache: what `svdflow report` after a run that
changed nothing costs) and a third with the card cache removed (posters there, every card rendered
again). Headless Chromium loads index.html from file:// three times, each in a fresh browser (a cold
cache); the page's own Navigation Timing says when its load event ended and when it first painted,
counted from the navigation's start (the browser's own start is not in them): the fastest and
slowest are printed, with how many of the page's images had loaded by then (they load lazily, those
near the screen shown first; none may be broken).

With --keep DIR the template and each campaign are made in DIR once and kept: a later run with the
same DIR reports the folders it finds there (their caches and posters as the last run left them, so
its "first" report is not a first one), which makes profiling one size cheap.

    .venv/bin/python benchmarks/bench_report.py [--jobs 1000,10000] [--no-browser] [--unscored] [--keep DIR]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
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


def quality(number: int):
    """Seeded scores of a clip (the distributions are made up: only their spread matters here), judged
    against min_motion 2 (about one job in five does not pass)."""
    import random

    from svdflow.quality.record import QualityRecord
    from svdflow.quality.scores import (
        ExposureScores,
        FidelityScores,
        FlickerScores,
        MotionScores,
        QualityScores,
    )
    from svdflow.quality.thresholds import QcThresholds
    from svdflow.quality.verdict import judge

    rng = random.Random(number)
    motion = round(rng.uniform(0.5, 8.0), 4)
    scores = QualityScores(
        frames=8, analysis_size=(112, 64),
        motion=MotionScores(mean=motion, peak=round(motion * 2.5, 4), dynamic=motion > 5, dynamic_pairs=3,
                            dynamic_pairs_needed=2, dynamic_threshold=15.4),
        flicker=FlickerScores(vbench=0.95, residual=round(rng.uniform(1, 12), 4), brightness_jump=1.0),
        fidelity=FidelityScores(first_ssim=round(rng.uniform(0.7, 1), 4), last_ssim=round(rng.uniform(0.2, 0.9), 4),
                                first_psnr=30.0, last_psnr=20.0),
        exposure=ExposureScores(dark_frames=0, blown_frames=0, min_sharpness=round(rng.uniform(50, 200), 4),
                                input_sharpness=150.0))
    thresholds = QcThresholds(min_motion=2.0)
    verdict = judge(scores, thresholds)
    return QualityRecord(scores=scores, thresholds=thresholds, passed=verdict.passed, failures=verdict.failures,
                         kept=0)


def campaign(entries, source: Path, out: Path, jobs: int, scored: bool = True) -> None:
    """An output folder of `jobs` jobs made from the template's entries and files."""
    out.mkdir(parents=True)
    made = {}
    for number in range(jobs):
        base = entries[number % len(entries)]
        job_id = f"job{number:06d}"
        item = f"job{number - number % 3:06d}" if (number // 3) % 5 == 0 else job_id  # every fifth: a sweep of 3
        sweep = {"motion_bucket_id": 60 + 60 * (number % 3)} if item != job_id else {}
        if number % 4 == 3:
            entry = base.model_copy(update={
                "id": job_id, "item_id": item, "sweep": sweep, "seed": number, "status": "failed", "outputs": [],
                "error": ErrorRecord(type="InputError", stage="fetch",
                                     message=f"job '{job_id}': in{number}.png: file not found; check the path")})
        else:
            outputs = []
            for output in base.outputs:
                name = job_id + output.file[len(base.id):]
                os.link(source / output.file, out / name)
                outputs.append(output.model_copy(update={"file": name}))
            entry = base.model_copy(update={"id": job_id, "item_id": item, "sweep": sweep, "seed": number,
                                            "outputs": outputs, "quality": quality(number) if scored else None})
        made[job_id] = entry
    index = RunIndex(OutputStore(str(out)))
    for entry in made.values():  # as a run records them: sidecars, sealed parts, then index.jsonl
        index.record(entry)
        index.flush_if_due()
    index.finish(list(made))


def weight(out: Path) -> tuple[int, int]:
    """Bytes of index.html, and of the images it names (posters, thumbnails, animated fallbacks: loaded
    lazily, as the page is scrolled; videos only when a card is hovered)."""
    import re

    page = (out / "index.html").read_text()
    loaded = set(re.findall(r'(?:poster|src)="([^"]+\.(?:jpg|gif|webp))"', page))
    from urllib.parse import unquote

    return len(page.encode()), sum((out / unquote(name)).stat().st_size for name in loaded)


class Browser:
    """One headless Chromium, driven over the DevTools protocol (websocket-client)."""

    def __init__(self, profile: str):
        import websocket

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
        self.process = subprocess.Popen([shutil.which("chromium"), *flags, f"--user-data-dir={profile}",
                                         "--remote-debugging-port=0", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) == 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("chromium did not start")
            time.sleep(0.05)
        port, path = port_file.read_text().split()
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=120)
        self.last = 0

    def call(self, method: str, session: str | None = None, **params):
        self.last += 1
        self.ws.send(json.dumps({"id": self.last, "method": method, "params": params,
                                 **({"sessionId": session} if session else {})}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.last:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, session: str, expression: str):
        return self.call("Runtime.evaluate", session, expression=expression, returnByValue=True,
                         awaitPromise=True)["result"].get("value")

    def load(self, url: str) -> dict:
        """Open `url` in a new tab; the page's own timings (ms from navigation start) once it has loaded."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session)
        self.call("Page.navigate", session, url=url)
        deadline = time.monotonic() + 120
        while self.evaluate(session, "location.href === 'about:blank' || document.readyState") != "complete" \
                or not self.evaluate(session, "performance.getEntriesByType('navigation')[0].loadEventEnd > 0"):
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not load")
            time.sleep(0.05)
        timings = self.evaluate(session, """(() => {
          const n = performance.getEntriesByType('navigation')[0];
          const paint = performance.getEntriesByName('first-contentful-paint')[0];
          const images = [...document.images];
          return {dom: n.domContentLoadedEventEnd, load: n.loadEventEnd, paint: paint ? paint.startTime : null,
                  cards: document.querySelectorAll('.card').length, images: images.length,
                  loaded: images.filter(i => i.complete && i.naturalWidth).length,
                  broken: images.filter(i => i.complete && !i.naturalWidth).length};
        })()""")
        self.call("Target.closeTarget", targetId=target)
        return timings

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        self.ws.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def browser_load(page: Path, tries: int = 3) -> list[dict]:
    """The page's load in headless Chromium, `tries` times, each in a fresh browser (a cold cache)."""
    loads = []
    for _ in range(tries):
        with tempfile.TemporaryDirectory() as profile:
            browser = Browser(profile)
            try:
                loads.append(browser.load(page.as_uri()))
            finally:
                browser.close()
        if loads[-1]["broken"]:
            raise SystemExit(f"{loads[-1]['broken']} images of {page} did not load")
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="1000,10000", help="comma-separated campaign sizes")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--unscored", action="store_true", help="entries without quality (no qc views)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="make the campaigns in this folder and keep them (reused when already there)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    browser = not args.no_browser and shutil.which("chromium")
    results = []
    with contextlib.ExitStack() as stack:
        tmp = Path(args.keep) if args.keep else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if (tmp / "template" / "out").is_dir():
            source = tmp / "template" / "out"
            entries = list(RunIndex.load(OutputStore(str(source))).entries.values())
        else:
            entries, source = template(tmp / "template")
        for jobs in (int(n) for n in args.jobs.split(",")):
            out = tmp / f"c{jobs}{'u' if args.unscored else ''}" / "out"
            if not (args.keep and (out / "index.jsonl").is_file()):
                shutil.rmtree(out.parent, ignore_errors=True)
                campaign(entries, source, out, jobs, scored=not args.unscored)
            timings = []
            for run in range(3):
                if run == 2:
                    (out / "report" / "cards.cache").unlink(missing_ok=True)  # (svdflow before 0.3 kept none)
                started = time.perf_counter()
                write_report(str(out))
                timings.append(time.perf_counter() - started)
            html, media = weight(out)
            pages = sorted((out / "report" / "pages").glob("*.html"))
            page_bytes = sum(p.stat().st_size for p in pages)
            line = (f"{jobs:>7,} jobs: report {timings[0]:.2f} s (posters made), {timings[1]:.2f} s (again, cards "
                    f"cached), {timings[2]:.2f} s (cards rendered again); index.html {html / 1024:.0f} KiB + "
                    f"{media / 1024:.0f} KiB of images it shows; {len(pages)} more pages "
                    f"({page_bytes / 2**20:.0f} MiB)")
            result = {"jobs": jobs, "scored": not args.unscored, "report_first_s": round(timings[0], 3),
                      "report_cached_s": round(timings[1], 3), "report_uncached_s": round(timings[2], 3),
                      "index_html_bytes": html, "first_page_image_bytes": media, "pages": len(pages) + 1,
                      "pages_bytes": page_bytes + html}
            if browser:
                loads = browser_load(out / "index.html")
                load = sorted(t["load"] / 1000 for t in loads)
                paint = sorted(t["paint"] / 1000 for t in loads if t["paint"] is not None)
                line += (f"; in chromium ({loads[0]['cards']} cards, {loads[0]['images']} images, "
                         f"{min(t['loaded'] for t in loads)}-{max(t['loaded'] for t in loads)} loaded by the load "
                         "event, the rest lazily): load event "
                         f"{load[0]:.2f}-{load[-1]:.2f} s"
                         + (f", first paint {paint[0]:.2f}-{paint[-1]:.2f} s" if paint else "")
                         + f" ({len(loads)} cold loads)")
                result.update(chromium_images_loaded=sorted(t["loaded"] for t in loads),
                              chromium_load_s=[round(v, 3) for v in load],
                              chromium_first_paint_s=[round(v, 3) for v in paint])
            print(line, flush=True)
            results.append(result)
            if not args.keep:
                shutil.rmtree(out.parent)
    if args.json:
        import platform

        args.json.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                                         "load_average": os.getloadavg(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
